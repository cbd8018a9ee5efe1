"""Several devices: a MirroredStrategy step over two logical CPU devices
against the same step on one device.

Logical devices can only be set up before TensorFlow starts its runtime, so
the comparison runs in a fresh interpreter (this file as a script) and
reports back as JSON.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ("encoder", "rssm", "decoder", "reward", "value", "actor")


def test_mirrored_step_matches_one_device(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, __file__, str(tmp_path)], check=False,
                         capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["devices"] == ["CPU:0", "CPU:1"]
    for key, (single, mirrored) in result["losses"].items():
        np.testing.assert_allclose(mirrored, single, rtol=1e-4, atol=1e-5, err_msg=key)
    # Adam's moments hold the gradients themselves (the step is scale-free).
    assert result["adam_diff"] < 1e-4
    # Adam's first step is about lr * sign(gradient): components far below
    # its epsilon may differ in float32 round-off, nothing else.
    assert result["moved"] > 1e-4
    assert result["weight_diff"] < 0.01 * result["moved"]
    # A mirrored agent acts batch-1 and its checkpoint loads on one device.
    assert result["policy_shape"] == [1, 3]
    assert result["restored_diff"] == 0.0


def compare(tmp: pathlib.Path) -> dict:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dreamer import OBS_SPACE, batch, parse

    import dreamer
    import tools

    # Without sampling noise both runs compute the same function of the batch:
    # the RSSM's latent noise comes from tf.random.normal, the actor's samples
    # from its distribution.
    @tf.autograph.experimental.do_not_convert
    def mean_action(self, *args, **kwargs):
        return self._dist.bijector.forward(self._dist.distribution.mean())

    tf.random.normal = lambda shape, *args, **kwargs: tf.zeros(shape)
    tools.SampleDist.sample = mean_action

    config = parse("--configs", "debug", "--devices", "2")
    strategy = dreamer.make_strategy(config)
    act_space = {"shape": (3,), "discrete": False}
    single = dreamer.Dreamer(config, OBS_SPACE, act_space)
    mirrored = dreamer.Dreamer(config, OBS_SPACE, act_space, strategy)
    for name in MODULES:
        getattr(mirrored, name).set_weights(getattr(single, name).get_weights())
    before = [w.copy() for name in MODULES for w in getattr(single, name).get_weights()]

    data = batch(batch_size=4, length=10)
    one = single.train(data)
    split = mirrored.distribute({k: v.numpy() for k, v in data.items()})
    two = mirrored.train(split)
    keys = ("model_loss", "div", "actor_loss", "value_loss", "image_loss", "reward_loss",
            "model_grad_norm", "actor_grad_norm", "value_grad_norm")
    after = [w for name in MODULES for w in getattr(single, name).get_weights()]
    after_mirrored = [w for name in MODULES for w in getattr(mirrored, name).get_weights()]

    def adam(agent):
        return [v.numpy() for opt in (agent.model_opt, agent.actor_opt, agent.value_opt)
                for v in opt.adam.variables]

    adam_diff = max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
                    for a, b in zip(adam(single), adam(mirrored)))

    obs = {"image": np.zeros((1, 64, 64, 3), np.uint8)}
    action, _ = mirrored.policy(obs, None, np.ones(1, np.float32), training=True, step=0)
    dreamer.save_checkpoint(mirrored, tmp, step=1)
    fresh = dreamer.Dreamer(config, OBS_SPACE, act_space)
    assert dreamer.restore_checkpoint(fresh, tmp)
    restored = [w for name in MODULES for w in getattr(fresh, name).get_weights()]
    return dict(
        replicas=strategy.num_replicas_in_sync,
        devices=[d.split("device:")[-1] for d in strategy.extended.worker_devices],
        losses={k: [float(one[k]), float(two[k])] for k in keys},
        moved=max(float(np.abs(a - b).max()) for a, b in zip(after, before)),
        adam_diff=adam_diff,
        weight_diff=max(float(np.abs(a - b).max()) for a, b in zip(after, after_mirrored)),
        policy_shape=list(action.shape),
        restored_diff=max(float(np.abs(a - b).max())
                          for a, b in zip(restored, after_mirrored)))


TWO = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize("tf_config, flags, message", [
    ("{cluster", [], "TF_CONFIG must be JSON"),
    (json.dumps({"cluster": TWO}), [], "TF_CONFIG must be JSON"),
    (json.dumps({"cluster": {**TWO, "chief": ["127.0.0.1:3"]},
                 "task": {"type": "chief", "index": 0}}), [], "cluster.worker only"),
    (json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 2}}), [], "task index 2"),
    (json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 0}}), ["--devices", "1"],
     "CUDA_VISIBLE_DEVICES"),
])
def test_bad_tf_config_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, tf_config,
                                                      flags, message):
    import dreamer

    monkeypatch.setenv("TF_CONFIG", tf_config)
    logdir = tmp_path / "run"
    with pytest.raises(SystemExit) as error:
        dreamer.main(["--logdir", str(logdir), *flags])
    assert error.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not logdir.exists()


if __name__ == "__main__":
    print(json.dumps(compare(pathlib.Path(sys.argv[1]))))
