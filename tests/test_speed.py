"""Tests for benchmarks/speed.py's profile of a step: which op types it finds
and how it sums their time."""

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
    assert 0 < profile["op_seconds"] < 10
