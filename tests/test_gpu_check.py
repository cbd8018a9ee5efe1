"""Tests for benchmarks/gpu_check.py's parts that need no GPU: the training
flags it picks from the speed rows, and the rate it reads off a run's log."""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check


def speed_file(tmp_path, name, extra, steps, in_progress=None):
    data = dict(extra_flags=extra, in_progress=in_progress, grad_step=[
        dict(batch=[50, 50], model="image", precision=p, first_call_s=first,
             seconds=dict(median=median, min=median * 0.9))
        for p, median, first in steps])
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def choose(capsys, *args):
    assert gpu_check.main(["choose", *args]) == 0
    return capsys.readouterr().out.split()


def test_choose_takes_the_fastest_step_and_xla_only_if_it_compiles_in_time(tmp_path, capsys):
    nojit = speed_file(tmp_path, "a.json", [], [(16, 0.10, 19.0), (32, 0.075, 10.0)])
    jit = speed_file(tmp_path, "b.json", ["--jit", "True"], [(32, 0.05, 100.0)])
    flags = choose(capsys, "--speed", nojit, jit, "--train-seconds", "1000")
    assert flags[:4] == ["--precision", "32", "--jit", "True"]
    assert "--envs" in flags and "--jit_policy" not in flags
    # 100 s of compilation is more than a quarter of 300 s of training.
    flags = choose(capsys, "--speed", nojit, jit, "--train-seconds", "300")
    assert flags[:4] == ["--precision", "32", "--jit", "False"]


def test_choose_without_rows_or_xla(tmp_path, capsys):
    started = dict(row="gradient step 50x50 precision 32 --jit True", started=0.0)
    jit = speed_file(tmp_path, "b.json", ["--jit", "True"], [], in_progress=started)
    flags = choose(capsys, "--speed", str(tmp_path / "missing.json"), jit,
                   "--train-seconds", "300", "--xla-ok", "0", "--why", str(tmp_path / "w.json"))
    assert flags[:4] == ["--precision", "32", "--jit", "False"]
    assert flags[-2:] == ["--jit_policy", "False"]
    rows = json.loads((tmp_path / "w.json").read_text())["rows"]
    assert rows == [dict(row=started["row"], jit=True, done=False, started=0.0)]


def test_throughput_skips_the_first_interval_and_reads_evals():
    metrics = [
        {"step": 5000, "train/return": 30.0},
        {"step": 5000, "test/return": 25.0, "wall_time": 60.0},
        {"step": 6000, "fps": 20.0, "wall_time": 100.0},  # Prefill, pretrain, compile.
        {"step": 7000, "fps": 70.0, "wall_time": 114.3},
        {"step": 8000, "fps": 60.0, "wall_time": 131.0},
        {"step": 9000, "fps": 65.0, "wall_time": 146.4},
    ]
    t = gpu_check.throughput(metrics)
    assert t["fps_median"] == 65.0 and t["fps_intervals"] == 3
    assert t["env_steps_per_hour"] == 65.0 * 3600
    assert abs(t["hours_per_1e6_env_steps"] - 1e6 / (65.0 * 3600)) < 1e-9
    assert abs(t["env_steps_per_hour_overall"] - 3000 / 46.4 * 3600) < 1e-6
    assert t["eval_returns"] == [[5000, 25.0]] and t["last_step"] == 9000


def test_jit_of_reads_the_flag():
    assert gpu_check.jit_of(["--precision", "32", "--jit", "True"])
    assert not gpu_check.jit_of(["--jit", "False"]) and not gpu_check.jit_of([])
