"""Tests for benchmarks/speed.py's profile of a step: which op types it finds
and how it sums their time; the env rows' constructor."""

import pathlib
import sys

import pytest
import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import speed


@pytest.mark.parametrize("op_type, kind", [
    ("_MklNativeFusedMatMul", "matmul"), ("MatMul", "matmul"),
    ("_MklNativeConv2DBackpropFilterWithBias", "conv"), ("Conv2DBackpropInput", "conv"),
    ("EluGrad", "activation"), ("Sigmoid", "activation"), ("BiasAddGrad", "bias"),
    ("Cast", "cast"), ("AddN", "other"), ("StridedSliceGrad", "other")])
def test_op_kind(op_type, kind):
    assert speed.op_kind(op_type) == kind


@pytest.mark.parametrize("op_name, part, backward", [
    ("actor_11/dense_10_1/BiasAdd/Cast", "actor", False),
    ("gradient_tape/actor_19/dense_10_1/EluGrad", "actor", True),
    ("tanh_1IndependentNormal_CONSTRUCTED_AT_actor_5/sample/Normal/sample/add", "actor", False),
    ("gradient_tape/IndependentNormal_CONSTRUCTED_AT_conv_decoder/log_prob/sub",
     "decoder", True),
    ("conv_decoder_1/conv2d_transpose_1_2/conv2d_transpose", "decoder", False),
    ("gradient_tape/conv_encoder_1/conv2d_3_1/Conv2D", "encoder", True),
    ("gru_15/add", "rssm", False), ("gradient_tape/obs_dist_13/MatMul/MatMul", "rssm", True),
    ("value_2/dense_5_1/MatMul", "value", False), ("reward_1/Reshape", "reward", False),
    ("cond_2/then/_204/cond_2/value/Add_12", "optimizer", False),
    ("clip_by_global_norm_2/mul_4", "optimizer", False),
    ("AddN_115", "other", False), ("gradient_tape/mul_18", "other", True)])
def test_op_part(op_name, part, backward):
    assert speed.op_part(op_name) == (part, backward)


def test_op_profile_finds_the_ops_of_a_function():
    a = tf.random.normal((512, 512))

    @tf.function
    def step(a):
        # A matmul far costlier than the rest, and an op of each other kind.
        x = tf.matmul(tf.matmul(a, a), a)
        return tf.reduce_sum(tf.cast(tf.tanh(x), tf.bfloat16))

    step(a)
    profile = speed.op_profile(lambda: step(a).numpy(), top=3)
    shares = profile["kind_share"]
    assert set(shares) >= {"matmul", "activation", "cast", "other"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert max(shares, key=shares.get) == "matmul"
    assert len(profile["top_types"]) == 3
    assert "MatMul" in profile["top_types"][0]["type"]
    # Named by no layer, every op is the "other" part, all in the forward pass.
    assert profile["part_share"] == {"other": dict(share=pytest.approx(1.0), backward_share=0)}
    assert 0 < profile["op_seconds"] < 10


def test_op_profile_of_a_train_step_names_every_model_part():
    agent = speed.build_agent(["--configs", "debug", "--pcont", "True"], 32, batch=4, length=10)
    data = speed.synthetic_batch(4, 10, "image")
    agent.train(data)
    parts = speed.op_profile(lambda: agent.train(data)["model_loss"].numpy())["part_share"]
    every = {"encoder", "decoder", "rssm", "reward", "pcont", "value", "actor", "optimizer"}
    assert every <= set(parts)
    assert all(parts[part]["backward_share"] > 0 for part in every - {"optimizer"})
    assert sum(v["share"] for v in parts.values()) == pytest.approx(1.0)
    assert parts["other"]["share"] < 0.5
    # Every matmul and conv belongs to a part, every filter gradient (custom
    # gradients included) to a backward pass.
    graph = agent.train.get_concrete_function(data).graph
    for op in graph.get_operations():
        if op.type in ("MatMul", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"):
            part, backward = speed.op_part(op.name)
            assert part != "other", op.name
            assert backward or op.type != "Conv2DBackpropFilter", op.name


def test_env_rows_build_the_runs_env_with_render_fast_as_given():
    config = speed.dreamer.parse_config(["--logdir", "/tmp/unused", "--shadow_size", "512"])
    ctor = speed.env_ctor(config, True, seed=3)
    assert ctor.func is speed.wrappers.make_env
    assert ctor.args == (config.task, config.action_repeat, config.time_limit)
    assert ctor.keywords["render_fast"] and ctor.keywords["shadow_size"] == 512
    assert ctor.keywords["seed"] == 3 and not config.render_fast  # The config is kept.
