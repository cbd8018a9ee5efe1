"""Several devices: a MirroredStrategy step over two logical CPU devices
against the same step on one device; two workers on 127.0.0.1 that train as
one MultiWorkerMirroredStrategy run.

Logical devices and collectives can only be set up before TensorFlow starts
its runtime, so both run in fresh interpreters (this file as a script).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ("encoder", "rssm", "decoder", "reward", "value", "actor")
# Short episodes from an in-process env: the workers' time goes to
# TensorFlow, not to rendering.
WORKER_FLAGS = [
    "--task", "dmc_cartpole_balance", "--obs", "state", "--configs", "debug",
    "--action_repeat", "1", "--prefill", "40", "--train_every", "20", "--train_steps", "2",
    "--steps", "80", "--eval_every", "1000", "--log_every", "20", "--log_videos", "False",
    "--jit_policy", "False"]


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


class Toy:
    """Three noisy state numbers, reward = the action, 20 steps an episode; the
    interface of wrappers.Parallel, in process."""

    def __init__(self, seed: int):
        self.obs_space = {"state": ((3,), np.float32), "reward": ((), np.float32)}
        self.act_space = {"shape": (1,), "discrete": False, "low": -np.ones(1, np.float32),
                          "high": np.ones(1, np.float32)}
        self._rng, self._t = np.random.default_rng(seed), 0

    def _obs(self, reward: float) -> dict:
        return {"state": self._rng.normal(size=3).astype(np.float32),
                "reward": np.float32(reward)}

    def reset_async(self):
        self._t, obs = 0, self._obs(0.0)
        return lambda: obs

    def step_async(self, action):
        self._t += 1
        step = self._obs(float(action[0])), float(action[0]), self._t >= 20, {
            "discount": np.float32(1.0)}
        return lambda: step

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_alike_and_only_the_chief_checkpoints(tmp_path):
    """The chief resumes from a checkpoint at step 60 while worker 1 starts on
    an empty logdir and prefills to step 40: both must still take the same
    train steps from the chief's weights, and only the chief writes."""
    import tensorflow as tf

    import dreamer
    import tools

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    logdirs = [tmp_path / "w0", tmp_path / "w1"]
    procs = []

    def start(index: int):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONUNBUFFERED": "1"}
        with (tmp_path / f"w{index}.out").open("w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "worker", str(tmp_path / f"dump{index}" / "ckpt"),
                 "--logdir", str(logdirs[index]), "--seed", str(index), *WORKER_FLAGS],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT))

    try:
        start(1)  # Prefills while the chief's logdir is made.
        config = dreamer.parse_config(["--logdir", str(logdirs[0]), *WORKER_FLAGS])
        env = Toy(seed=100)
        for folder in ("checkpoint", "episodes"):
            (logdirs[0] / folder).mkdir(parents=True)
        dreamer.save_checkpoint(dreamer.Dreamer(config, env.obs_space, env.act_space),
                                logdirs[0] / "checkpoint", step=60)
        dreamer.Driver([env], lambda e: tools.save_episode(logdirs[0] / "episodes", e))(
            lambda obs, state, reset: (np.zeros((1, 1), np.float32), None), episodes=3)
        start(0)
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    outputs = [(tmp_path / f"w{index}.out").read_text() for index in range(2)]
    assert codes == [0, 0], "\n".join(out[-3000:] for out in outputs)

    for out in outputs:
        assert "Resumed from checkpoint at step 60." in out and "Pretrain" not in out
    assert "Prefill" not in outputs[0] and "Prefill" in outputs[1]
    for logdir in logdirs:
        assert tools.read_metrics(logdir)[-1]["step"] == 80
    # The chief alone writes checkpoints; worker 1's logdir has none at all.
    chief = [p.name for p in sorted((logdirs[0] / "checkpoint").iterdir())]
    assert chief == ["000000000060", "000000000080"]
    assert not (logdirs[1] / "checkpoint").exists()

    # Both workers end with the very weights and Adam state the chief saved
    # (the step counter is set as a checkpoint is written, by the chief alone).
    def tensors(path):
        reader = tf.train.load_checkpoint(str(path))
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                if not k.startswith("step/")}

    saved = tensors(logdirs[0] / "checkpoint" / "000000000080" / "ckpt")
    seeded = tensors(logdirs[0] / "checkpoint" / "000000000060" / "ckpt")
    for index in range(2):
        held = tensors(tmp_path / f"dump{index}" / "ckpt")
        assert held.keys() == saved.keys()
        for key, value in saved.items():
            np.testing.assert_array_equal(held[key], value, err_msg=f"worker {index}: {key}")
    # Exactly the run's train steps on top of the chief's first checkpoint,
    # and the weights moved.
    iterations = [k for k in saved if k.startswith("model_opt/_iterations")]
    assert [seeded[k] for k in iterations] == [0] and [saved[k] for k in iterations] == [2]
    weights = [k for k in saved if k.startswith("model_opt/_trainable_variables/")]
    assert any(not np.array_equal(saved[k], seeded[k]) for k in weights)


def worker(dump: str, flags: list[str]) -> None:
    """dreamer.main with in-process Toy envs; then writes the weights this
    worker holds to `dump`."""
    sys.path.insert(0, str(ROOT))
    import dreamer

    agents = []

    class Recorded(dreamer.Dreamer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            agents.append(self)

    dreamer.Dreamer = Recorded
    dreamer.make_envs = lambda config, count, seed, train: [Toy(seed + i) for i in range(count)]
    dreamer.main(flags)
    agents[0].checkpoint.write(dump)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3:])
    else:
        print(json.dumps(compare(pathlib.Path(sys.argv[1]))))
