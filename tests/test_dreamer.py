import json
import os
import pathlib
import subprocess
import sys
import time

import imageio.v3 as iio
import keras
import numpy as np
import pytest
import tensorflow as tf

import dreamer
import tools

ROOT = pathlib.Path(__file__).resolve().parents[1]
OBS_SPACE = {"image": ((64, 64, 3), np.uint8), "reward": ((), np.float32)}


def parse(*flags):
    return dreamer.parse_config(["--logdir", "/tmp/unused", *flags])


def test_defaults_are_the_paper():
    c = parse()
    assert (c.batch_size, c.batch_length, c.horizon, c.steps) == (50, 50, 15, 5_000_000)
    assert (c.deter_size, c.stoch_size, c.num_units, c.cnn_depth) == (200, 30, 400, 32)
    assert (c.discount, c.disclam, c.free_nats, c.kl_scale) == (0.99, 0.95, 3.0, 1.0)
    assert (c.model_lr, c.value_lr, c.actor_lr, c.grad_clip) == (6e-4, 8e-5, 8e-5, 100.0)
    assert (c.action_repeat, c.prefill, c.train_every, c.train_steps) == (2, 5000, 1000, 100)
    assert c.action_dist == "tanh_normal" and c.expl_amount == 0.3 and not c.pcont
    assert (c.reward_layers, c.value_layers, c.actor_layers) == (2, 3, 4)
    assert (c.action_init_std, c.action_mean_scale, c.action_min_std) == (5.0, 5.0, 1e-4)
    assert (c.dense_act, c.cnn_act, c.adam_eps) == ("elu", "relu", 1e-7)


def test_presets_then_explicit_flags():
    c = parse("--configs", "debug", "--batch_size", "7", "--steps", "3e3")
    assert c.batch_size == 7 and c.steps == 3000 and c.deter_size == 32
    state = parse("--configs", "cpu_state", "--obs", "state", "--num_units", "64")
    assert (state.batch_size, state.deter_size, state.num_units) == (16, 100, 64)
    atari = parse("--task", "atari_pong", "--horizon", "12")
    assert atari.action_dist == "onehot" and atari.pcont and atari.expl == "epsilon_greedy"
    assert atari.horizon == 12 and atari.kl_scale == 0.1 and atari.action_repeat == 4


def test_env_workers_get_the_render_flags(monkeypatch):
    built = []
    monkeypatch.setattr(dreamer.wrappers, "Parallel", built.append)  # Starts no worker.
    assert parse().shadow_size == 0  # The suite's own map.
    dreamer.make_envs(parse("--shadow_size", "512", "--render_fast", "True"), 2, seed=5, train=True)
    assert [ctor.keywords["seed"] for ctor in built] == [5, 6]
    for ctor in built:
        assert ctor.keywords["shadow_size"] == 512 and ctor.keywords["render_fast"]


TWO = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}  # A two-worker cluster for TF_CONFIG.


@pytest.mark.parametrize("flags, message, tf_config", [
    (["--task", "dmc_walker_fly"], "walker_fly", None),
    (["--task", "pong"], "pong", None),
    (["--configs", "huge"], "huge", None),
    (["--batch_size", "many"], "batch_size", None),
    (["--steps", "1.5"], "steps", None),
    (["--pcont", "maybe"], "pcont", None),
    (["--unknown_flag", "1"], "unknown_flag", None),
    (["--batch_length", "1"], "batch_length", None),
    (["--devices", "-1"], "devices", None),
    (["--devices", "3"], "only 1 CPU device", None),
    (["--state_symlog", "True"], "state_symlog", None),
    (["--shadow_size", "-1"], "shadow_size", None),
    (["--async_collect", "True", "--train_steps", "0"], "train_steps must be positive", None),
    # TF_CONFIG, for several workers.
    ([], "TF_CONFIG must be JSON", "{cluster"),
    ([], "TF_CONFIG must be JSON", json.dumps({"cluster": TWO})),
    ([], "cluster.worker only", json.dumps({"cluster": {**TWO, "chief": ["127.0.0.1:3"]},
                                            "task": {"type": "chief", "index": 0}})),
    ([], "task index 2", json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 2}})),
    (["--devices", "1"], "CUDA_VISIBLE_DEVICES",
     json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 0}})),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, flags, message,
                                                 tf_config):
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    logdir = tmp_path / "run"
    with pytest.raises(SystemExit) as error:
        dreamer.main(["--logdir", str(logdir), *flags])
    assert error.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not logdir.exists()


def tiny_agent(*flags, act_size=3, discrete=False):
    config = parse("--configs", "debug", *flags)
    dreamer.set_precision(config.precision)
    act_space = {"shape": (act_size,), "discrete": discrete}
    try:
        return dreamer.Dreamer(config, OBS_SPACE, act_space)
    finally:
        dreamer.set_precision(32)


def batch(batch_size=4, length=10, act_size=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        image=tf.constant(rng.integers(0, 255, (batch_size, length, 64, 64, 3), np.uint8)),
        action=tf.constant(rng.uniform(-1, 1, (batch_size, length, act_size)), tf.float32),
        reward=tf.constant(rng.normal(size=(batch_size, length)), tf.float32),
        discount=tf.ones((batch_size, length)))


@pytest.mark.parametrize("precision", [32, 16])
def test_train_step_is_finite_and_moves_each_part(precision, monkeypatch):
    monkeypatch.setattr(dreamer, "cpu_has_bf16", lambda: True)  # The bfloat16 path on any CPU.
    agent = tiny_agent("--precision", str(precision))
    parts = dict(model=agent.encoder, actor=agent.actor, value=agent.value)
    before = {k: [v.numpy().copy() for v in p.trainable_variables] for k, p in parts.items()}
    metrics = agent.train(batch())
    for name, value in metrics.items():
        assert np.isfinite(value.numpy()), name
    for name, part in parts.items():
        moved = [not np.allclose(b, v.numpy()) for b, v in zip(before[name], part.trainable_variables)]
        assert any(moved), name
    if precision == 16:
        assert agent.encoder.convs[0].compute_dtype == "bfloat16"
        assert agent.encoder.convs[0].kernel.dtype == "float32"


def test_trunc_normal_actor_trains_and_acts():
    agent = tiny_agent("--action_dist", "trunc_normal", "--action_min_std", "0.1")
    actor = [v.numpy().copy() for v in agent.actor.trainable_variables]
    metrics = agent.train(batch())
    assert all(np.isfinite(v.numpy()) for v in metrics.values())
    assert 0 <= metrics["action_saturation"] <= 1
    assert not all(np.allclose(a, b.numpy()) for a, b in zip(actor, agent.actor.trainable_variables))
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8)}
    action, _ = agent.policy(obs, None, np.ones(2), False, 0)
    assert action.shape == (2, 3) and np.abs(action).max() <= 1


def test_each_optimizer_updates_only_its_own_variables():
    agent = tiny_agent()
    decoder = [v.numpy().copy() for v in agent.decoder.trainable_variables]
    actor = [v.numpy().copy() for v in agent.actor.trainable_variables]
    data = batch()
    with tf.GradientTape() as tape:
        post, _ = agent.rssm.observe(agent.encoder(data["image"]), data["action"])
        feat = agent.imagine_ahead(post)
        returns, weights = agent.imagined_returns(feat, agent.value(feat).mode())
        loss = -tf.reduce_mean(weights * returns)
    agent.actor_opt(tape, loss)
    assert all(np.allclose(a, b.numpy()) for a, b in zip(decoder, agent.decoder.trainable_variables))
    assert not all(np.allclose(a, b.numpy()) for a, b in zip(actor, agent.actor.trainable_variables))


def test_value_loss_of_the_shared_value_pass():
    """The train step runs the value model once on the imagined states; its
    value loss is that of a separate pass on the states returns start from."""
    agent = tiny_agent("--model_lr", "0", "--actor_lr", "0", "--value_lr", "0")
    data = batch()
    tf.random.set_seed(3)  # The same draws, in the same order, in both.
    metrics = agent._train(data)
    tf.random.set_seed(3)
    post, _ = agent.rssm.observe(agent.encoder(data["image"]), data["action"])
    feat = agent.imagine_ahead(post)
    returns, weights = agent.imagined_returns(feat, agent.value(feat).mode())
    expected = -tf.reduce_mean(weights * agent.value(feat[:-1]).log_prob(returns))
    np.testing.assert_allclose(metrics["value_loss"].numpy(), expected.numpy(), rtol=1e-5)
    assert metrics["value_grad_norm"] > 0


@pytest.mark.parametrize("pcont, times", [(False, 10), (True, 9)])
def test_imagination_starts_from_every_posterior_state(pcont, times):
    agent = tiny_agent("--pcont", str(pcont))
    data = batch(batch_size=4, length=10)
    post, _ = agent.rssm.observe(agent.encoder(data["image"]), data["action"])
    starts = []
    img_step = agent.rssm.img_step
    agent.rssm.img_step = lambda prev, action: starts.append(prev["deter"]) or img_step(prev, action)
    feat = agent.imagine_ahead(post)
    assert feat.shape[:2] == (agent.config.horizon, 4 * times)
    expected = tf.reshape(post["deter"][:, :times], [4 * times, -1])
    np.testing.assert_array_equal(starts[0].numpy(), expected.numpy())


def test_model_loss_clips_the_kl_at_free_nats():
    agent = tiny_agent("--free_nats", "1000", "--kl_scale", "2")
    *_, loss, metrics = agent.world_model_loss(batch())
    likes = sum(float(v) for k, v in metrics.items() if k.endswith("_loss") and k != "model_loss")
    assert float(metrics["div"]) < 1000
    assert float(loss) == pytest.approx(2 * 1000 + likes, rel=1e-5)


def test_pcont_weights_against_hand_computed_example():
    agent = tiny_agent("--pcont", "True", "--horizon", "4", "--disclam", "0.5")
    reward = tf.constant([[1.0], [2.0], [3.0], [4.0]])
    value = tf.constant([[10.0], [20.0], [30.0], [40.0]])
    pcont = tf.constant([[0.9], [0.5], [0.8], [1.0]])
    agent.reward = lambda feat: type("D", (), {"mode": lambda self: reward})()
    agent.pcont = lambda feat: type("D", (), {"mean": lambda self: pcont})()
    returns, weights = agent.imagined_returns(tf.zeros((4, 1, 5)), value)
    v2 = 3 + 0.8 * (0.5 * 40 + 0.5 * 40)
    v1 = 2 + 0.5 * (0.5 * 30 + 0.5 * v2)
    v0 = 1 + 0.9 * (0.5 * 20 + 0.5 * v1)
    np.testing.assert_allclose(returns.numpy()[:, 0], [v0, v1, v2], rtol=1e-6)
    np.testing.assert_allclose(weights.numpy()[:, 0], [1.0, 0.9, 0.45], rtol=1e-6)


def test_policy_resets_state_and_explores():
    agent = tiny_agent()
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8)}
    action, state = agent.policy(obs, None, np.ones(2), True, 0)
    assert action.shape == (2, 3) and np.abs(action).max() <= 1
    _, fresh = agent.policy(obs, None, np.ones(2), False, 0)
    _, state = agent.policy(obs, state, np.array([0.0, 1.0]), False, 0)
    # The deterministic state after a zero state and zero action is fixed:
    # the env that restarted has it, the one that went on does not.
    deter, fresh_deter = state[0]["deter"].numpy(), fresh[0]["deter"].numpy()
    np.testing.assert_allclose(deter[1], fresh_deter[1], atol=1e-6)
    assert not np.allclose(deter[0], fresh_deter[0], atol=1e-3)


def test_evaluation_acts_with_the_mode_whatever_the_exploration(monkeypatch):
    monkeypatch.setattr(dreamer, "random_actions", lambda batch, size, discrete: tf.fill(
        [batch, size], 7.0))  # Marks explored actions.
    agent = tiny_agent("--expl", "completely_random")
    obs = {"image": np.full((2, 64, 64, 3), 128, np.uint8)}
    train, _ = agent.policy(obs, None, np.ones(2), True, 0)
    test, _ = agent.policy(obs, None, np.ones(2), False, 0)
    assert (train == 7).all() and np.abs(test).max() <= 1


def test_policy_traces_once_per_batch_size_and_mode():
    agent = tiny_agent()
    images = lambda n: {"image": np.full((n, 64, 64, 3), 128, np.uint8)}
    state = None
    for reset in (np.ones(2), np.zeros(2), np.zeros(2)):
        _, state = agent.policy(images(2), state, reset, False, 0)
    agent.policy(images(2), None, np.ones(2), True, 0)
    agent.policy(images(1), None, np.ones(1), False, 0)
    assert agent._policy.experimental_get_tracing_count() <= 3


@pytest.mark.parametrize("native", [True, False])
def test_precision_16_uses_bfloat16_only_where_the_cpu_has_it(native, monkeypatch, capsys):
    monkeypatch.setattr(dreamer, "cpu_has_bf16", lambda: native)
    try:
        assert dreamer.set_precision(16) == (16 if native else 32)
        policy = keras.mixed_precision.global_policy().name
    finally:
        dreamer.set_precision(32)
    assert policy == ("mixed_bfloat16" if native else "float32")
    assert ("computing in float32" in capsys.readouterr().out) != native


def test_epsilon_greedy_exploration():
    greedy = tf.one_hot(tf.zeros(4000, tf.int32), 4)
    explored = dreamer.explore(greedy, tf.constant(0.4), "epsilon_greedy", {"discrete": True})
    explored = explored.numpy()
    assert (explored.sum(-1) == 1).all()
    changed = (explored.argmax(-1) != 0).mean()
    assert changed == pytest.approx(0.4 * 3 / 4, abs=0.03)


def run(logdir, *flags, timeout=300):
    env = {**os.environ, "MUJOCO_GL": "egl", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(ROOT / "dreamer.py"), "--logdir", str(logdir), *flags],
        check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def read_metrics(logdir):
    return [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_debug_run(tmp_path):
    """A whole debug run on walker: episodes, metrics, checkpoint, videos, plots.
    Resuming is tested by the kill tests of test_faults.py."""
    logdir = tmp_path / "walker"
    result = run(logdir, "--task", "dmc_walker_walk", "--configs", "debug", "--steps", "2000")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Prefill" in result.stdout
    episodes = sorted((logdir / "episodes").glob("*.npz"))
    assert len(episodes) >= 10
    episode = tools.load_episode(episodes[0])
    assert episode["image"].shape == (101, 64, 64, 3) and episode["image"].dtype == np.uint8
    assert episode["action"].shape == (101, 6)
    assert (episode["action"][0] == 0).all() and episode["reward"][0] == 0
    assert episode["discount"].shape == (101,)
    metrics = read_metrics(logdir)
    assert all("step" in m for m in metrics)
    losses = [m for m in metrics if "train/model_loss" in m]
    assert losses and all(np.isfinite(m["train/model_loss"]) for m in losses)
    assert any("test/return" in m for m in metrics)
    last_step = metrics[-1]["step"]
    assert last_step >= 2000
    checkpoints = sorted((logdir / "checkpoint").glob("[0-9]*"))
    assert checkpoints and int(checkpoints[-1].name) == last_step
    assert (logdir / "config.yaml").read_text().count("batch_size: 4") == 1
    saved = tf.train.load_checkpoint(str(checkpoints[-1] / "ckpt"))
    iterations = [k for k in saved.get_variable_to_shape_map() if k.startswith("model_opt/_iterations")]
    assert saved.get_tensor(iterations[0]) > 0

    # Videos: the first episode and open-loop predictions of every evaluation.
    test_videos = sorted((logdir / "videos").glob("test_*.gif"))
    evals = [m for m in metrics if "test/return" in m]
    assert len(test_videos) == len(evals)
    frames = iio.imread(test_videos[-1], index=None)
    assert frames.shape == (101, 64, 64, 3)
    openl = sorted((logdir / "videos").glob("openl_*.gif"))
    assert [p.name[6:] for p in openl] == [p.name[5:] for p in test_videos]
    frames = iio.imread(openl[-1], index=None)
    # Rows truth / model / error; six sequences side by side (more than a debug batch).
    assert frames.shape == (10, 3 * 64, 6 * 64, 3)
    assert "Eval return: final" in result.stdout and (logdir / "plots").is_dir()
    # Not on a terminal: plain log lines, no progress bar.
    assert "\r" not in result.stdout + result.stderr and "[2000] " in result.stdout


@pytest.mark.slow
def test_atari_debug_run(tmp_path):
    logdir = tmp_path / "pong"
    flags = ["--task", "atari_pong", "--configs", "debug", "--steps", "1600",
             "--log_videos", "False"]
    result = run(logdir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    config = (logdir / "config.yaml").read_text()
    assert "action_dist: onehot" in config and "pcont: true" in config
    # Prefill's random actions and the actor's samples alike: exactly one-hot.
    actions = np.concatenate([np.load(path)["action"][1:]
                              for path in sorted((logdir / "episodes").glob("*.npz"))])
    assert actions.shape[1] == 6 and len(actions) > 800 // 4
    np.testing.assert_array_equal(actions.sum(-1), 1)
    assert set(np.unique(actions)) == {0.0, 1.0}
    metrics = read_metrics(logdir)
    pcont = [m["train/pcont_loss"] for m in metrics if "train/pcont_loss" in m]
    assert pcont and all(np.isfinite(pcont))
    assert any("test/return" in m for m in metrics)
    assert not (logdir / "videos").exists()


def test_summary_of_a_logdir(tmp_path, capsys):
    records = [{"step": 1000, "test/return": 10.0, "wall_time": 60.0},
               {"step": 2000, "train/return": 3.0},
               {"step": 3000, "test/return": 30.0, "wall_time": 7200.0},
               {"step": 4000, "test/return": 20.0, "wall_time": 9000.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "config.yaml").write_text("task: dmc_walker_walk\n")
    dreamer.main(["--logdir", str(tmp_path), "--summary"])
    out = capsys.readouterr().out
    assert "4000 env steps, 2.50 h" in out
    assert "final 20.0 (step 4000), best 30.0 (step 3000), 3 evaluations" in out
    assert (tmp_path / "plots" / "dmc_walker_walk.png").exists()


def test_state_observations_train_step():
    config = parse("--configs", "debug", "--obs", "state")
    agent = dreamer.Dreamer(config, {"state": ((5,), np.float32), "reward": ((), np.float32)},
                            {"shape": (1,), "discrete": False})
    data = batch(act_size=1)
    data["state"] = tf.random.normal((4, 10, 5))
    del data["image"]
    metrics = agent.train(data)
    assert np.isfinite(metrics["state_loss"].numpy()) and "image_loss" not in metrics
    action, _ = agent.policy({"state": np.zeros((1, 5), np.float32)}, None, np.ones(1), True, 0)
    assert action.shape == (1, 1)


def test_state_symlog_squashes_what_the_encoder_sees_and_the_decoder_predicts():
    config = parse("--configs", "debug", "--obs", "state", "--state_symlog", "True")
    agent = dreamer.Dreamer(config, {"state": ((5,), np.float32)}, {"shape": (1,), "discrete": False})
    state = tf.constant([[[-9.0, -0.5, 0.0, 0.5, np.e - 1]]])
    want = np.array([[[-np.log(10), -np.log(1.5), 0.0, np.log(1.5), 1.0]]], np.float32)
    np.testing.assert_allclose(agent.decoder_target({"state": state}).numpy(), want, rtol=1e-6)
    embed = agent.encoder(state).numpy()
    agent.encoder.symlog = False
    np.testing.assert_allclose(embed, agent.encoder(tf.constant(want)).numpy(), rtol=1e-5)
    assert not np.allclose(embed, agent.encoder(state).numpy())


@pytest.mark.parametrize("obs", ["state", "image"])
def test_decoder_std_sets_the_likelihood_scale(obs):
    config = parse("--configs", "debug", "--obs", obs, "--decoder_std", "0.1")
    shape = (5,) if obs == "state" else (64, 64, 3)
    agent = dreamer.Dreamer(config, {obs: (shape, np.float32)}, {"shape": (1,), "discrete": False})
    dist = agent.decoder(tf.random.normal((2, 3, config.deter_size + config.stoch_size)))
    target = dist.mean() + 0.2
    # log N(mean + 0.2; mean, 0.1) = -log(0.1 sqrt(2 pi)) - 0.5 * 2^2 per dimension.
    want = np.prod(shape) * (-np.log(0.1 * np.sqrt(2 * np.pi)) - 2.0)
    np.testing.assert_allclose(dist.log_prob(target).numpy(), np.full((2, 3), want), rtol=1e-4)
    # The reward and value heads keep unit variance.
    assert agent.reward(tf.zeros((1, config.deter_size + config.stoch_size))).stddev() == 1.0


@pytest.mark.slow
def test_gymnasium_task_with_state_and_discrete_actions(tmp_path):
    logdir = tmp_path / "cartpole"
    result = run(logdir, "--task", "gym_CartPole-v1", "--obs", "state", "--configs", "debug",
                 "--steps", "1200")
    assert result.returncode == 0, result.stderr[-3000:]
    config = (logdir / "config.yaml").read_text()
    assert "action_dist: onehot" in config and "expl: epsilon_greedy" in config
    with np.load(min((logdir / "episodes").glob("*.npz"))) as episode:
        assert episode["state"].shape[1:] == (4,) and "image" not in episode
        np.testing.assert_array_equal(episode["action"][1:].sum(-1), 1)
        assert episode["discount"][-1] in (0.0, 1.0)
    assert any("test/return" in m for m in read_metrics(logdir))


def test_float16_loss_scaling():
    """The GPU path of --precision 16, run here on the CPU."""
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        agent = dreamer.Dreamer(parse("--configs", "debug"), OBS_SPACE,
                                {"shape": (3,), "discrete": False})
    finally:
        dreamer.set_precision(32)
    assert agent.encoder.convs[0].compute_dtype == "float16"
    before = [v.numpy().copy() for v in agent.decoder.trainable_variables]
    # The image loss's gradients overflow float16 at the initial scale of
    # 2^15: the scale halves, step by step, until they fit.
    scales = []
    for _ in range(20):
        metrics = agent.train(batch())
        scales.append(float(agent.model_opt.scale.numpy()))
        if not metrics["model_nonfinite"].numpy():
            break
    assert not metrics["model_nonfinite"].numpy() and np.isfinite(metrics["model_loss"])
    assert scales[0] == 2.0**14 and scales == sorted(scales, reverse=True)
    assert not all(np.allclose(a, b.numpy())
                   for a, b in zip(before, agent.decoder.trainable_variables))
    data = batch()
    data["reward"] = tf.fill(data["reward"].shape, np.inf)
    assert agent.train(data)["model_nonfinite"].numpy() == 1.0
    assert agent.model_opt.scale.numpy() == scales[-1] / 2


class PacedLoop:
    """The parts of a Loop that run_overlapped and Collector use, with envs
    and gradient steps that only take time: training is the slower side in
    the first rounds, collection in the later ones."""

    def __init__(self, start=300, steps=1700, driver_error_at=None):
        self.config = parse("--configs", "debug", "--steps", str(steps), "--eval_every", "1000")
        self.step = self.start = start
        self.should_eval = dreamer.tools.Every(self.config.eval_every)
        self.should_log = lambda step: False
        self.trained, self.records, self.evals = 0, [], []
        self._driver_error_at = driver_error_at

    def policy(self, training):
        return None

    def train_driver(self, policy, steps):
        if self._driver_error_at is not None and self.step >= self._driver_error_at:
            raise OSError(28, "No space left on device")
        time.sleep(1e-3 if self.trained >= 6 else 1e-4)
        return steps

    def train(self, steps, collector):
        for _ in range(steps):
            collector.wait_to_train()
            before = self.step
            time.sleep(0.05 if self.trained < 6 else 0)
            self.records.append((before, self.step, self.trained))
            self.trained += 1
            collector.step_trained()

    def evaluate(self):
        self.evals.append(self.step)


def test_overlapped_collection_keeps_the_ratio_within_a_round():
    loop = PacedLoop()
    dreamer.run_overlapped(loop)
    every, steps = loop.config.train_every, loop.config.train_steps
    # The evaluations of the loop without --async_collect, at the same steps.
    assert loop.evals == [300, 1300, 1700] and loop.step == 1700
    assert loop.trained == steps * 3  # The last round, 400 frames, is trained whole.
    for before, after, trained in loop.records:
        # Training never ahead of the frames (the last round once all are in).
        assert (trained + 1) * every <= (before - loop.start) * steps or (
            before == 1700 and trained < steps * 3), (before, trained)
        # Collection never more than a round (plus one env step) ahead of training.
        assert after - loop.start <= every * (trained / steps + 1) + 2, (after, trained)
    # The envs did step while gradient steps ran.
    assert any(after > before for before, after, _ in loop.records)


def test_overlapped_collection_raises_the_collectors_error_in_the_main_thread():
    loop = PacedLoop(driver_error_at=900)
    with pytest.raises(OSError, match="No space left"):
        dreamer.run_overlapped(loop)
    assert loop.step == 900 and loop.trained <= 3 * 600 // 500

