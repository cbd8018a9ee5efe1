"""Faults done for real: kill -9 at any moment, damaged episodes and checkpoints,
non-finite losses, dead env workers, a logdir in use or unwritable, a full disk,
and memory over long runs. Each test checks what is left on disk afterwards.

Nothing here renders MuJoCo in the pytest process (TensorFlow and Mesa in one
process crash): runs are subprocesses of dreamer.py, envs are Parallel workers.
"""

import fcntl
import functools
import gc
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import imageio.v3 as iio
import numpy as np
import psutil
import pytest
import tensorflow as tf

import dreamer
import tools
import wrappers

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "MUJOCO_GL": "egl", "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
# Short runs: 50 agent steps an episode, prefill 3 episodes, no GIFs.
FAST = ["--task", "dmc_cartpole_balance", "--configs", "debug", "--time_limit", "100",
        "--prefill", "300", "--log_videos", "False"]
# Lines TensorFlow's C++ logging prints at import whatever TF_CPP_MIN_LOG_LEVEL says.
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog"
                      r"|[IWEF]\d{4} \d\d:\d\d:\d\d)")
CHECKPOINT_NAME = re.compile(r"^\d{12}$")


# Helpers.


class Run:
    """dreamer.py (or a driver script) in a subprocess, output to files."""

    def __init__(self, logdir, *flags, script=None, outdir=None):
        self.logdir = pathlib.Path(logdir)
        tag = f"{self.logdir.name}-{uuid.uuid4().hex[:8]}"
        # Beside the logdir, never in it: its listing must not change.
        outdir = pathlib.Path(outdir or self.logdir.parent)
        self._out, self._err = outdir / f"{tag}.out", outdir / f"{tag}.err"
        with self._out.open("w") as out, self._err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script or ROOT / "dreamer.py"),
                 "--logdir", str(logdir), *flags],
                stdout=out, stderr=err, env=ENV, cwd=ROOT)

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    def errors(self) -> list[str]:
        """stderr without TensorFlow's import-time log lines."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not TF_NOISE.match(line)]

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"run did not finish in {timeout} s:\n{self.stderr[-3000:]}")

    def wait_until(self, condition, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"run exited ({self.proc.returncode}) before {what}:\n"
                            f"{self.stdout[-2000:]}\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {what} within {timeout} s:\n{self.stderr[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no flush."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)


def episode_files(logdir: pathlib.Path) -> list[pathlib.Path]:
    return sorted((logdir / "episodes").glob("[!.]*.npz"))


def check_episodes(logdir: pathlib.Path) -> int:
    """Every episode file loads and has <transitions> + 1 steps in every array,
    the first holding the reset (zero action and reward). Returns transitions."""
    total = 0
    for path in episode_files(logdir):
        transitions = int(path.stem.rsplit("-", 1)[-1])
        episode = tools.load_episode(path)
        assert {"image", "action", "reward", "discount"} <= set(episode), path.name
        for key, value in episode.items():
            assert len(value) == transitions + 1, (path.name, key, value.shape)
        assert (episode["action"][0] == 0).all() and episode["reward"][0] == 0, path.name
        total += transitions
    return total


def checkpoints(logdir: pathlib.Path) -> list[pathlib.Path]:
    folder = logdir / "checkpoint"
    return sorted(p for p in folder.glob("*") if CHECKPOINT_NAME.match(p.name)) \
        if folder.exists() else []


def temporaries(logdir: pathlib.Path) -> list[str]:
    """What interrupted writes leave: .<name>.<hex>.tmp files, checkpoint/.tmp-*
    folders, .probe-* files."""
    return sorted(str(p.relative_to(logdir)) for p in logdir.rglob(".*")
                  if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".probe-")))


def checkpoint_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def assert_checkpoint_finite(path: pathlib.Path) -> None:
    """Readable with tf.train.load_checkpoint and every float tensor finite."""
    reader = tf.train.load_checkpoint(str(path / "ckpt"))
    floats = 0
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            assert np.isfinite(value).all(), (path.name, name)
            floats += 1
    assert floats > 10, path.name


def adam_iterations(path: pathlib.Path) -> int:
    """The world model optimizer's step count in a checkpoint."""
    reader = tf.train.load_checkpoint(str(path / "ckpt"))
    [name] = [k for k in reader.get_variable_to_shape_map()
              if k.startswith("model_opt/_iterations")]
    return int(reader.get_tensor(name))


def snapshot(logdir: pathlib.Path) -> dict:
    """Every path under logdir; size and mtime for files. Folder mtimes are left
    out: the write probe that must come first touches them and leaves nothing."""
    listing = {}
    for path in sorted(logdir.rglob("*")):
        stat = path.stat()
        key = str(path.relative_to(logdir))
        listing[key] = "dir" if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return listing


def write_script(tmp_path: pathlib.Path, body: str) -> pathlib.Path:
    """A driver that patches dreamer's modules, then runs dreamer.main()."""
    script = tmp_path / f"driver_{uuid.uuid4().hex[:8]}.py"
    script.write_text(textwrap.dedent(body) + "\nimport dreamer\ndreamer.main(sys.argv[1:])\n")
    return script


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """A finished short run: 7 episodes, checkpoints at 300 and 700 env steps.
    Built once for all xdist workers, whose temporary folders share a parent
    in one session; tests copy it and never write to it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    logdir, done = shared / "trained" / "run", shared / "trained.done"
    with (shared / "trained.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # The other worker waits for the build.
        if not done.exists():
            shutil.rmtree(logdir.parent, ignore_errors=True)
            logdir.parent.mkdir()
            run = Run(logdir, *FAST, "--steps", "700")
            assert run.wait() == 0, run.stderr[-3000:]
            assert [p.name for p in checkpoints(logdir)] == ["000000000300", "000000000700"]
            done.touch()
    return logdir


def copy_run(trained: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    logdir = tmp_path / "run"
    shutil.copytree(trained, logdir)
    return logdir


# 1. Kill at any moment, then resume.


@pytest.mark.slow
def test_kill_in_prefill_eval_and_training_then_resume(tmp_path):
    """SIGKILL in prefill, eval and training; the rerun resumes and nothing is lost."""
    logdir = tmp_path / "run"
    flags = ["--task", "dmc_cartpole_balance", "--configs", "debug", "--steps", "2000"]
    # Debug preset: episodes of 200 env steps, prefill 800 (4 episodes).

    # (a) Prefill: two of the four prefill episodes are on disk.
    run = Run(logdir, *flags)
    run.wait_until(lambda: len(episode_files(logdir)) >= 2, "prefill episodes")
    run.kill()
    assert "Prefill" in run.stdout
    stored = check_episodes(logdir) * 2
    assert 400 <= stored < 800 and not checkpoints(logdir)

    # (b) Evaluation: the test episode's GIF is written just before the checkpoint.
    run = Run(logdir, *flags)
    run.wait_until(lambda: list((logdir / "videos").glob("test_*.gif")), "eval video")
    run.kill()
    assert f"{stored} env steps stored" in run.stdout
    assert "Prefill" in run.stdout  # It was not complete.
    check_episodes(logdir)
    before = tools.read_metrics(logdir)

    # (c) Training: a training record after the first collect phase.
    had_checkpoint = bool(checkpoints(logdir))
    run = Run(logdir, *flags)
    run.wait_until(lambda: any(m["step"] > 800 and "train/model_loss" in m
                               for m in tools.read_metrics(logdir)), "training record")
    run.kill()
    assert "Prefill" not in run.stdout
    if had_checkpoint:
        assert "Resumed from checkpoint at step 800." in run.stdout
    after = tools.read_metrics(logdir)[len(before):]
    assert after and min(m["step"] for m in after) >= max(m["step"] for m in before)
    check_episodes(logdir)

    # A killed checkpoint write and a killed episode write leave these.
    stale_dir = logdir / "checkpoint" / ".tmp-abc"
    stale_dir.mkdir(parents=True)
    (stale_dir / "ckpt.index").write_bytes(b"partial")
    stale_file = logdir / "episodes" / ".x.npz.1234.tmp"
    stale_file.write_bytes(b"partial")
    before = tools.read_metrics(logdir)
    stored_step = max(m["step"] for m in before)
    newest = int(checkpoints(logdir)[-1].name)
    stored = check_episodes(logdir) * 2

    videos = len(list((logdir / "videos").glob("test_*.gif")))
    # A flag changed on the rerun applies: later evaluations average 3 episodes.
    run = Run(logdir, *flags, "--eval_episodes", "3")
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Prefill" not in run.stdout and "Pretrain" not in run.stdout
    assert f"Resumed from checkpoint at step {newest}." in run.stdout
    assert f"{stored} env steps stored" in run.stdout
    assert not stale_dir.exists() and not stale_file.exists()
    assert temporaries(logdir) == []
    # The step counts the frames of episodes a kill cut short (at most one
    # 200-frame debug episode per kill), so fewer may be stored.
    assert check_episodes(logdir) * 2 >= 2000 - 3 * 200
    assert (logdir / "checkpoint" / "000000002000").is_dir()
    assert_checkpoint_finite(logdir / "checkpoint" / "000000002000")
    # Adam's state carried on from the checkpoint it resumed.
    assert adam_iterations(logdir / "checkpoint" / "000000002000") > adam_iterations(
        logdir / "checkpoint" / f"{newest:012d}")
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) - len(tools.read_metrics(logdir)) <= 3  # At most a line cut per kill.
    new = tools.read_metrics(logdir)[len(before):]
    assert new and new[-1]["step"] == 2000
    assert min(m["step"] for m in new) >= newest
    # The step of the metrics never goes back, also past records the kill cut
    # off mid-episode.
    assert min(m["step"] for m in new) >= stored_step, (
        f"records after the restart start at step {min(m['step'] for m in new)}, "
        f"the killed run had logged step {stored_step}")
    evals = [m for m in new if "test/return" in m]
    assert evals and all(m["test/episodes"] == 3 for m in evals)
    assert len(list((logdir / "videos").glob("test_*.gif"))) == videos + len(evals)


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume(trained, tmp_path):
    """SIGKILL after a checkpoint's files are written, before the rename."""
    logdir = copy_run(trained, tmp_path)
    newest = checkpoints(logdir)[-1]
    digest = checkpoint_digest(newest)
    script = write_script(tmp_path, """
        import os
        import signal
        import sys
        rename = os.replace
        def replace(src, dst):
            if "checkpoint" in str(src) and ".tmp-" in str(src):
                os.kill(os.getpid(), signal.SIGKILL)
            return rename(src, dst)
        os.replace = replace
    """)
    run = Run(logdir, *FAST, "--steps", "1100", script=script)
    assert run.wait() == -signal.SIGKILL
    assert any(p.name.startswith(".tmp-") for p in (logdir / "checkpoint").iterdir())
    assert checkpoints(logdir)[-1] == newest and checkpoint_digest(newest) == digest

    run = Run(logdir, *FAST, "--steps", "1100")
    assert run.wait() == 0, run.stderr[-3000:]
    assert f"Resumed from checkpoint at step {int(newest.name)}." in run.stdout
    assert temporaries(logdir) == []
    assert (logdir / "checkpoint" / "000000001100").is_dir()
    check_episodes(logdir)


def read_paced_steps(path: pathlib.Path) -> list[list[dict]]:
    """The records the driver below writes, one list a run."""
    runs = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # Cut short by the kill.
            continue
        if "start" in record:
            runs.append([record])
        else:
            runs[-1].append(record)
    return runs


@pytest.mark.slow
def test_async_collect_keeps_the_ratio_and_resumes_after_kill(trained, tmp_path):
    """--async_collect on a copy of a run at step 700, killed while the envs
    step and training runs, then rerun to the end; every gradient step
    records the env frames before and after it."""
    logdir = copy_run(trained, tmp_path)
    records = tmp_path / "steps.jsonl"
    script = write_script(tmp_path, f"""
        import json
        import sys
        import dreamer
        start = dreamer.Loop.start
        def recorded_start(self, agent):
            start(self, agent)
            train, out = agent.train, open({str(records)!r}, "a")
            def record(**values):
                out.write(json.dumps(values) + "\\n")
                out.flush()
            record(start=self.step)
            def recorded_train(batch):
                before = self.step
                metrics = train(batch)
                record(before=before, after=self.step)
                return metrics
            agent.train = recorded_train
        dreamer.Loop.start = recorded_start
    """)
    # Rounds of 500 frames and 3 gradient steps from 700; an evaluation at 1200.
    flags = [*FAST, "--steps", "1700", "--eval_every", "500", "--async_collect", "True"]
    run = Run(logdir, *flags, script=script)
    run.wait_until(lambda: records.exists() and any(
        step.get("before", 0) > 1200 for steps in read_paced_steps(records) for step in steps),
        "a gradient step after the evaluation at 1200")
    run.kill()
    assert "Resumed from checkpoint at step 700." in run.stdout
    assert [p.name for p in checkpoints(logdir)] == ["000000000700", "000000001200"]
    iterations = [adam_iterations(path) for path in checkpoints(logdir)]
    assert iterations[1] == iterations[0] + 3  # One whole round, as without the flag.
    before = tools.read_metrics(logdir)
    assert [m["step"] for m in before if "test/return" in m] == [300, 700, 1200]
    check_episodes(logdir)

    run = Run(logdir, *flags, script=script)
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Prefill" not in run.stdout and "Pretrain" not in run.stdout
    assert "Resumed from checkpoint at step 1200." in run.stdout
    assert temporaries(logdir) == []
    assert check_episodes(logdir) * 2 >= 1700 - 100  # At most the killed episode is lost.
    assert_checkpoint_finite(logdir / "checkpoint" / "000000001700")
    new = tools.read_metrics(logdir)[len(before):]
    assert new and new[-1]["step"] == 1700 and "test/return" in new[-1]
    assert min(m["step"] for m in new) >= max(m["step"] for m in before)

    runs = read_paced_steps(records)
    assert len(runs) == 2 and all(len(steps) > 1 for steps in runs)
    every, train_steps = 500, 3
    for first, *steps in runs:
        start = first["start"]
        for done, step in enumerate(steps):
            # Training never ahead of the frames (the last round once all are in).
            assert (done + 1) * every <= (step["before"] - start) * train_steps or (
                step["before"] == 1700), (start, done, step)
            # Collection never more than a round (plus one env step) ahead of training.
            assert step["after"] - start <= every * (done / train_steps + 1) + 2, (
                start, done, step)
    # The envs stepped while gradient steps ran.
    assert any(step["after"] > step["before"] for _, *steps in runs for step in steps)


# 2. Damaged data.


@pytest.mark.slow
def test_damaged_episodes_and_checkpoint_are_skipped(trained, tmp_path):
    """A truncated and a garbage episode and a truncated checkpoint are skipped, kept;
    episodes of the older format (whole arrays, compressed) are converted and used."""
    logdir = copy_run(trained, tmp_path)
    episodes = episode_files(logdir)
    for path in episodes[1:3]:
        np.savez_compressed(path, **tools.load_episode(path))
    truncated = episodes[0]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = logdir / "episodes" / f"20200101T000000-{uuid.uuid4().hex}-100.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not an episode" * 100)
    old, newest = checkpoints(logdir)
    (data,) = newest.glob("ckpt.data-*")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

    # Many train steps, so that sampling certainly reaches both bad files.
    run = Run(logdir, *FAST, "--steps", "1100", "--train_steps", "30")
    assert run.wait() == 0, run.stderr[-3000:]
    errors = run.stderr
    assert f"Skipping unreadable episode {truncated.name}" in errors
    assert f"Skipping unreadable episode {garbage.name}" in errors
    assert f"Skipping unreadable checkpoint {newest.name}" in errors
    assert f"Resumed from checkpoint at step {int(old.name)}." in run.stdout
    assert truncated.exists() and garbage.exists()  # Reported, never deleted.
    assert "Converting 2 episode files" in errors
    for path in episodes[1:3]:
        with np.load(path) as data:
            assert "image.lz4" in data.files
    records = tools.read_metrics(logdir)
    assert records[-1]["step"] >= 1100
    assert all(np.isfinite(m["train/model_loss"]) for m in records if "train/model_loss" in m)
    assert_checkpoint_finite(checkpoints(logdir)[-1])
    assert temporaries(logdir) == []


# 3. Non-finite values.


def tiny_agent():
    config = dreamer.parse_config(["--logdir", "/tmp/unused", "--configs", "debug"])
    dreamer.set_precision(config.precision)
    try:
        obs_space = {"image": ((64, 64, 3), np.uint8), "reward": ((), np.float32)}
        return dreamer.Dreamer(config, obs_space, {"shape": (1,), "discrete": False})
    finally:
        dreamer.set_precision(32)


def batch(seed=0, size=4, length=10):
    rng = np.random.default_rng(seed)
    return dict(
        image=tf.constant(rng.integers(0, 255, (size, length, 64, 64, 3), np.uint8)),
        action=tf.constant(rng.uniform(-1, 1, (size, length, 1)), tf.float32),
        reward=tf.constant(rng.normal(size=(size, length)), tf.float32),
        discount=tf.ones((size, length)))


def test_nonfinite_reward_skips_the_model_step_and_keeps_adam_clean():
    """A NaN reward leaves world model and Adam state untouched; training goes on."""
    agent = tiny_agent()
    world = [agent.encoder, agent.rssm, agent.decoder, agent.reward]
    variables = [v for part in world for v in part.trainable_variables]
    variables += list(agent.model_opt.adam.variables)
    before = [v.numpy().copy() for v in variables]
    data = batch()
    data["reward"] = tf.tensor_scatter_nd_update(data["reward"], [[1, 3]], [np.nan])
    metrics = agent.train(data)
    assert metrics["model_nonfinite"].numpy() == 1.0
    assert not np.isfinite(metrics["model_loss"].numpy())
    for value, variable in zip(before, variables):
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)
    # The next clean batch trains as usual, from finite weights and moments.
    metrics = agent.train(batch(seed=1))
    assert metrics["model_nonfinite"].numpy() == 0.0
    assert np.isfinite(metrics["model_loss"].numpy())
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables))
    assert all(np.isfinite(v.numpy()).all() for v in variables)


@pytest.mark.slow
def test_repeated_nonfinite_steps_stop_the_run(trained, tmp_path):
    """--max_nonfinite 3 stops a run whose batches are all NaN; checkpoints stay good."""
    logdir = copy_run(trained, tmp_path)
    newest = checkpoints(logdir)[-1]
    digest = checkpoint_digest(newest)
    script = write_script(tmp_path, """
        import sys
        import numpy as np
        import tools
        original = tools.Replay.sample_batch
        def sample_batch(self, *args):
            batch = original(self, *args)
            batch["reward"][:] = np.nan
            return batch
        tools.Replay.sample_batch = sample_batch
    """)
    run = Run(logdir, *FAST, "--steps", "1100", "--max_nonfinite", "3", script=script)
    code = run.wait()
    assert code not in (0, None), run.stderr[-3000:]
    assert "non-finite" in run.stderr
    assert "Resumed from checkpoint at step 700." in run.stdout
    records = tools.read_metrics(logdir)
    assert [m["train/model_nonfinite"] for m in records if "train/model_nonfinite" in m][-1] == 1
    assert checkpoints(logdir)[-1] == newest
    assert checkpoint_digest(newest) == digest
    for path in checkpoints(logdir):
        assert_checkpoint_finite(path)
    assert temporaries(logdir) == []
    check_episodes(logdir)


# 4. Environment failures.


def test_killed_env_worker_is_restarted_and_its_episode_dropped():
    """SIGKILL an env worker mid-episode: one restart, only complete episodes, goes on."""
    # Two workers with different time limits, so each episode tells its worker.
    envs = [wrappers.Parallel(functools.partial(
        wrappers.make_env, "dmc_cartpole_balance", 2, limit, seed=i))
        for i, limit in enumerate((100, 60))]
    try:
        episodes = []
        killed = []
        steps = [0]

        def on_step(n):
            steps[0] += 1
            if steps[0] == 20:  # Env 0 is 20 of its 50 steps into its first episode.
                killed.append(envs[0].pid)
                os.kill(envs[0].pid, signal.SIGKILL)

        rng = np.random.default_rng(0)

        def policy(obs, state, reset):
            return rng.uniform(-1, 1, (len(reset), 1)).astype(np.float32), None

        driver = dreamer.Driver(envs, episodes.append, on_step)
        driver(policy, episodes=4)
        assert killed and driver.restarts == 1
        assert envs[0].pid != killed[0]
        driver(policy, episodes=2)  # And it goes on.
        assert driver.restarts == 1
        lengths = [len(e["reward"]) for e in episodes]
        assert len(episodes) >= 6
        assert set(lengths) == {51, 31}, lengths  # Time limits; no partial episode.
        assert lengths.count(51) >= 2  # The restarted worker finished episodes.
        for episode in episodes:
            assert {len(v) for v in episode.values()} == {len(episode["reward"])}
            assert (episode["action"][0] == 0).all() and episode["reward"][0] == 0
            assert (np.abs(episode["action"][1:]).sum(-1) > 0).all()
            assert (episode["discount"] == 1).all()
            assert episode["image"].dtype == np.uint8 and episode["image"].shape[1:] == (
                64, 64, 3)
    finally:
        for env in envs:
            env.close()


# 5. Bad input.


@pytest.mark.slow
def test_logdir_in_use_or_unwritable_exits_2(trained, tmp_path):
    """A logdir in use or under a file: exit 2, one stderr line, nothing changed."""
    logdir = copy_run(trained, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with (logdir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(logdir)
        time.sleep(0.05)  # So that any write shows in the mtimes.
        in_use = Run(logdir, *FAST, "--steps", "1100")
        unwritable = Run(blocker / "run", *FAST, outdir=tmp_path)
        assert in_use.wait(120) == 2, in_use.stderr[-3000:]
        assert unwritable.wait(120) == 2, unwritable.stderr[-3000:]
        after = snapshot(logdir)
    errors = unwritable.errors()
    assert len(errors) == 1 and "cannot write" in errors[0], errors
    assert blocker.read_text() == "not a folder"
    assert len(in_use.errors()) == 1 and "in use" in in_use.errors()[0], in_use.errors()
    assert in_use.stdout == ""
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
               if before.get(k) != after.get(k)}
    assert not changed, f"the refused run changed (size, mtime_ns) before/after: {changed}"


def test_eval_only_beside_a_live_run_writes_only_its_eval_files(trained, tmp_path):
    """--eval_only reads the newest checkpoint while a run holds the lock,
    writes eval/<step>.json and .gif, and leaves every other file alone."""
    logdir = copy_run(trained, tmp_path)
    with (logdir / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # As a live run holds it.
        before = snapshot(logdir)
        time.sleep(0.05)  # So that any write shows in the mtimes.
        run = Run(logdir, "--eval_only", "--eval_episodes", "2")
        assert run.wait(180) == 0, run.stderr[-3000:]
        after = snapshot(logdir)
    result = json.loads((logdir / "eval" / "700.json").read_text())
    assert result["step"] == 700 and len(result["returns"]) == 2
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))
    assert result["std"] == pytest.approx(np.std(result["returns"]))
    assert f"Checkpoint at step 700: return {result['mean']:.1f} +- " in run.stdout
    frames = iio.imread(logdir / "eval" / "700.gif", index=None)
    assert frames.shape == (51, 64, 64, 3)  # --time_limit 100 at repeat 2, and the reset.
    changed = {k for k in before.keys() | after.keys()
               if before.get(k) != after.get(k) and not k.startswith("eval")}
    assert not changed, changed


def test_eval_only_without_a_checkpoint_is_one_line_and_writes_nothing(tmp_path):
    logdir = tmp_path / "empty"
    run = Run(logdir, "--eval_only", outdir=tmp_path)
    assert run.wait(120) == 2
    errors = run.errors()
    assert len(errors) == 1 and "no checkpoint" in errors[0], errors
    assert not logdir.exists()


# 6. Disk full.


@pytest.mark.slow
def test_disk_full_stops_cleanly_and_keeps_data(trained, tmp_path):
    """ENOSPC on the 2nd new episode: exit 1, one 'disk full' line, all data intact."""
    logdir = copy_run(trained, tmp_path)
    before = {p.name for p in episode_files(logdir)}
    saved = checkpoints(logdir)
    digests = {p.name: checkpoint_digest(p) for p in saved}
    # The write fails inside the real atomic_write (at fsync, after the data
    # went to the temporary file), as a full disk would make it.
    script = write_script(tmp_path, """
        import errno
        import os
        import sys
        import tools
        original, fsync = tools.atomic_write, os.fsync
        writes = 0
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        def atomic_write(path, data):
            global writes
            if str(path).endswith(".npz"):
                writes += 1
                if writes == 2:
                    os.fsync = full
            try:
                return original(path, data)
            finally:
                os.fsync = fsync
        tools.atomic_write = atomic_write
    """)
    run = Run(logdir, *FAST, "--steps", "1100", script=script)
    assert run.wait() == 1, run.stderr[-3000:]
    errors = run.errors()
    assert len(errors) == 1 and "disk full" in errors[0], errors
    assert "Traceback" not in run.stderr
    after = {p.name for p in episode_files(logdir)}
    assert before < after and len(after - before) == 1  # The one that fit.
    check_episodes(logdir)
    assert temporaries(logdir) == []
    for path in saved:  # Resuming re-saved the newest at the same step, same bytes.
        assert path.is_dir() and checkpoint_digest(path) == digests[path.name]
        assert_checkpoint_finite(path)


# 7. Bounded memory.


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_policy_memory_is_flat():
    """Policy calls at batch 1 do not grow resident memory (< 200 MiB per 100k calls)."""
    agent = tiny_agent()
    obs = {"image": np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), np.uint8)}
    state, reset, go_on = None, np.ones(1, np.float32), np.zeros(1, np.float32)
    for i in range(2000):
        _, state = agent.policy(obs, state, reset if i % 500 == 0 else go_on, True, i)
    start, calls = rss(), 0
    # 100k calls take about 100 s on 2 shared cores, too long for this file:
    # run for 10 s (about 10k calls) and extrapolate the growth linearly.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline or calls < 5000:
        for i in range(500):
            _, state = agent.policy(obs, state, reset if i == 0 else go_on, True, calls + i)
        calls += 500
    growth = (rss() - start) * 100_000 / calls
    assert growth < 200 * 2**20, f"{growth / 2**20:.0f} MiB per 100k calls ({calls} run)"


def test_replay_memory_is_bounded(tmp_path):
    """A Replay over 1,000 episodes on disk stays flat over 3,000 samples: images
    are read from the files, never kept."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(8):  # Blocky noise: 60 KB files that still hold 750 KB each.
        image = rng.integers(0, 255, (61, 16, 16, 3), np.uint8).repeat(4, 1).repeat(4, 2)
        episode = dict(image=image, action=rng.uniform(-1, 1, (61, 1)).astype(np.float32),
                       reward=rng.normal(size=61).astype(np.float32),
                       discount=np.ones(61, np.float32))
        episode["action"][0] = episode["reward"][0] = 0
        blobs.append(tools.encode_episode(episode))
    directory = tmp_path / "episodes"
    directory.mkdir()
    for i in range(1000):
        name = f"20200101T{i // 60 % 24:02d}{i % 60:02d}00-{uuid.uuid4().hex}-60.npz"
        (directory / name).write_bytes(blobs[i % len(blobs)])
    replay = tools.Replay(directory, seed=0)
    assert replay.episodes == 1000 and replay.steps == 60_000
    start = rss()
    for _ in range(3000):
        chunk = replay.sample(10)
        assert chunk["image"].shape == (10, 64, 64, 3)
    growth = rss() - start
    assert growth < 200 * 2**20, f"{growth / 2**20:.0f} MiB"
    assert replay.episodes == 1000  # Nothing was skipped.
