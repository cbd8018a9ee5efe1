"""Tests for benchmarks/learning.py: which runs it starts, how many at once,
with which threads, and how it reports failures. The jobs are tiny Python
commands, not training runs."""

import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import learning

# A job that records when it ran and with how many TensorFlow threads.
JOB = """
import json, os, sys, time
start = time.time()
print("hello from", sys.argv[1], flush=True)
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump(dict(start=start, end=time.time(),
                   threads=os.environ.get("TF_NUM_INTRAOP_THREADS")), f)
sys.exit(int(sys.argv[3]))
"""


def job(tmp_path: pathlib.Path, name: str, seconds: float = 0.6, status: int = 0):
    logdir = tmp_path / "task" / "variant" / name
    record = tmp_path / f"{name}.json"
    return logdir, [sys.executable, "-c", JOB, str(record), str(seconds), str(status)]


def read(tmp_path: pathlib.Path, name: str) -> dict:
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_thread_env_shares_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert "TF_NUM_INTRAOP_THREADS" not in learning.thread_env(1, cores=8)
    env = learning.thread_env(2, cores=8)
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "4"
    assert learning.thread_env(3, cores=2)["TF_NUM_INTRAOP_THREADS"] == "1"


def test_runs_side_by_side_at_most_parallel_at_once(tmp_path: pathlib.Path) -> None:
    jobs = [job(tmp_path, str(seed)) for seed in range(3)]
    learning.train_all(jobs, parallel=2, poll_s=0.05)
    runs = [read(tmp_path, str(seed)) for seed in range(3)]
    assert runs[0]["start"] < runs[1]["end"] and runs[1]["start"] < runs[0]["end"]
    assert runs[2]["start"] >= min(runs[0]["end"], runs[1]["end"])  # Never three at once.
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert [r["threads"] for r in runs] == [threads] * 3
    for seed in range(3):  # Each run's output went to its own log beside its logdir.
        log = (tmp_path / "task" / "variant" / f"{seed}.log").read_text()
        assert f"hello from {tmp_path / f'{seed}.json'}" in log


def test_one_at_a_time_runs_in_order(tmp_path: pathlib.Path) -> None:
    learning.train_all([job(tmp_path, "a", 0.2), job(tmp_path, "b", 0.2)], poll_s=0.05)
    assert read(tmp_path, "a")["end"] <= read(tmp_path, "b")["start"]
    assert not (tmp_path / "task" / "variant" / "a.log").exists()


def test_a_failed_run_is_named_after_the_others_finished(tmp_path: pathlib.Path) -> None:
    jobs = [job(tmp_path, "bad", 0.1, status=3), job(tmp_path, "good", 0.5)]
    with pytest.raises(SystemExit) as error:
        learning.train_all(jobs, parallel=2, poll_s=0.05)
    message = str(error.value)
    assert "bad (exit status 3)" in message and "good" not in message.split(": ", 2)[-1]
    assert read(tmp_path, "good")["end"] > read(tmp_path, "bad")["end"]


def test_main_skips_finished_runs_and_passes_flags_on(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = learning.logdir_of(tmp_path, "dmc_cartpole_balance", "state_sharp", 0)
    done.mkdir(parents=True)
    (done / "metrics.jsonl").write_text(
        json.dumps({"step": 4000, "test/return": 100.0}) + "\n"
        + json.dumps({"step": 4000, "train/return": 90.0}) + "\n")
    queued = []
    monkeypatch.setattr(learning, "train_all",
                        lambda jobs, parallel: queued.append((jobs, parallel)))
    learning.main(["--run", "dmc_cartpole_balance", "state_sharp", "4000", "0,1",
                   "--outdir", str(tmp_path), "--parallel", "2", "--", "--eval_episodes", "5"])
    [(jobs, parallel)] = queued
    assert parallel == 2
    [(logdir, argv)] = jobs  # Seed 0 reached 4000 steps with an evaluation.
    assert logdir == learning.logdir_of(tmp_path, "dmc_cartpole_balance", "state_sharp", 1)
    assert argv[argv.index("--seed") + 1] == "1"
    assert argv[argv.index("--configs") + 1] == "state_sharp"
    assert argv[-2:] == ["--eval_episodes", "5"]
    assert "| dmc_cartpole_balance | state_sharp | 1 | 4,000 | 100 |" in (
        tmp_path / "learning.md").read_text()


def test_parallel_below_one_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        learning.main(["--suite", "cpu", "--parallel", "0"])
    assert "--parallel must be at least 1, got 0" in capsys.readouterr().err


# What the measured variants resolve to (RESULTS.md gives their runs).
RESOLVED = {
    "state_sharp": dict(obs="state", precision=32, decoder_std=0.03, free_nats=1.0,
                        value_lr=3e-4),
    "state_symlog": dict(obs="state", state_symlog=True, value_lr=3e-4, actor_lr=8e-5,
                         num_units=100, deter_size=100, precision=32,
                         train_steps=200),
    "cpu_image": dict(obs="image", value_lr=3e-4, cnn_depth=16, action_dist="trunc_normal",
                      action_min_std=0.1, batch_size=6, render_fast=True, free_nats=3.0),
}


@pytest.mark.parametrize("variant", sorted(learning.VARIANTS))
def test_each_variant_is_a_valid_dreamer_config(variant: str) -> None:
    import dreamer  # Imports TensorFlow, which the other tests here do not need.

    config = dreamer.parse_config(["--logdir", "unused", *learning.VARIANTS[variant]])
    expected = RESOLVED.get(variant, {})
    assert {key: getattr(config, key) for key in expected} == expected
