"""Tests for benchmarks/speed.py: the env rows' constructor, the FLOP count."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import speed


def test_env_rows_build_the_runs_env_with_render_fast_as_given():
    config = speed.dreamer.parse_config(["--logdir", "/tmp/unused", "--shadow_size", "512"])
    ctor = speed.env_ctor(config, True, seed=3)
    assert ctor.func is speed.wrappers.make_env
    assert ctor.args == (config.task, config.action_repeat, config.time_limit)
    assert ctor.keywords["render_fast"] and ctor.keywords["shadow_size"] == 512
    assert ctor.keywords["seed"] == 3 and not config.render_fast  # The config is kept.


def test_flops_of_a_matmul_and_a_conv_by_hand():
    import tensorflow as tf

    @tf.function
    def f(a, b, x, k):
        return tf.matmul(a, b), tf.nn.conv2d(x, k, 2, "VALID")

    graph = f.get_concrete_function(tf.zeros((3, 5)), tf.zeros((5, 7)), tf.zeros((2, 9, 9, 4)),
                                    tf.zeros((3, 3, 4, 6))).graph
    flops = {op.type: speed.op_flops(op) for op in graph.get_operations() if speed.op_flops(op)}
    # 2 x multiply-adds: 3 x 7 outputs of 5 terms; 2 x 4 x 4 x 6 outputs of 3 x 3 x 4 terms.
    assert flops == {"MatMul": 2 * 3 * 7 * 5, "Conv2D": 2 * (2 * 4 * 4 * 6) * (3 * 3 * 4)}
