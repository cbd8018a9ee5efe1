"""--jit True: the train step under XLA, its scans as loops, against the plain
graph with unrolled scans."""

import numpy as np
import tensorflow as tf

import dreamer
import tools

OBS_SPACE = {"state": ((5,), np.float32)}
ACT_SPACE = {"shape": (2,), "discrete": False}
KEYS = ("model_loss", "div", "state_loss", "reward_loss", "actor_loss", "value_loss",
        "imag_return", "model_grad_norm", "actor_grad_norm", "value_grad_norm")
MODEL_KEYS = ("model_loss", "div", "state_loss", "reward_loss", "model_grad_norm")
# Those that read the value model; not value_loss, whose Gaussian constant
# dwarfs the change below, nor value_grad_norm, which it moves by about 1e-5.
VALUE_KEYS = ("actor_loss", "imag_return", "actor_grad_norm")


def state_batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(state=tf.constant(rng.normal(size=(4, 10, 5)), tf.float32),
                action=tf.constant(rng.uniform(-1, 1, (4, 10, 2)), tf.float32),
                reward=tf.constant(rng.normal(size=(4, 10)), tf.float32),
                discount=tf.ones((4, 10)))


def close(a: dict, b: dict, key: str) -> bool:
    return np.isclose(float(a[key]), float(b[key]), rtol=1e-5, atol=1e-6)


def test_xla_step_computes_the_plain_step(monkeypatch):
    """The same losses and gradient norms from the same weights and batch,
    without sampling noise; then a layer of one agent shifted by 0.5
    must show in the losses that depend on it. State observations keep XLA's
    compile short; scans, heads, actor and optimizers are those of pixels."""
    flags = ["--logdir", "/tmp/unused", "--configs", "debug", "--obs", "state"]
    plain = dreamer.Dreamer(dreamer.parse_config(flags), OBS_SPACE, ACT_SPACE)
    xla = dreamer.Dreamer(dreamer.parse_config([*flags, "--jit", "True"]), OBS_SPACE, ACT_SPACE)
    assert plain.rssm.unroll and not xla.rssm.unroll
    for name in ("encoder", "rssm", "decoder", "reward", "value", "actor"):
        getattr(xla, name).set_weights(getattr(plain, name).get_weights())

    # Both compute the same function of the batch without noise: the RSSM's
    # latent noise comes from tf.random.normal, the actor's from its samples.
    def mean_action(self, *args, **kwargs):
        return self._dist.bijector.forward(self._dist.distribution.mean())

    monkeypatch.setattr(tf.random, "normal", lambda shape, *args, **kwargs: tf.zeros(shape))
    monkeypatch.setattr(tools.SampleDist, "sample", mean_action, raising=False)

    data = state_batch(0)
    one, two = plain.train(data), xla.train(data)
    for key in KEYS:
        assert close(one, two, key), (key, float(one[key]), float(two[key]))

    # The world model's losses still agree after both updates; those that
    # read the shifted value model do not.
    kernel = xla.value.hidden[0].kernel
    kernel.assign(kernel + 0.5)
    data = state_batch(1)
    one, two = plain.train(data), xla.train(data)
    for key in MODEL_KEYS:
        assert close(one, two, key), (key, float(one[key]), float(two[key]))
    for key in VALUE_KEYS:
        assert not close(one, two, key), (key, float(one[key]), float(two[key]))
