"""Tests for plotting.py: run discovery, curve statistics and the PNGs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import plotting

TASK = "dmc_walker_walk"


def write_run(
    logdir: Path, points: list[tuple[float, float]], task: str | None = None
) -> None:
    """A fake logdir: eval lines plus training lines that must be ignored."""
    logdir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": 0, "train/model_loss": 3.0})]
    lines += [
        json.dumps({"step": x, "test/return": y, "test/length": 1000})
        for x, y in points
    ]
    lines.append(json.dumps({"step": 99_999, "train/actor_loss": 1.0}))
    (logdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if task:
        (logdir / "config.yaml").write_text(
            f"logdir: {logdir}\ntask: {task}\nseed: 0\n"
        )


def make_layout(root: Path, task: str = TASK, scale: float = 1.0) -> Path:
    """Two seeds of <task>/ours/<seed>/metrics.jsonl, returns per 1e4 steps."""
    steps = np.arange(0, 100_001, 10_000)
    write_run(root / task / "ours" / "0", [(float(x), scale * x / 200) for x in steps])
    write_run(root / task / "ours" / "1", [(float(x), scale * x / 100) for x in steps])
    return root


def pixels(path: Path) -> np.ndarray:
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_main_writes_nonblank_pngs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    indir = make_layout(tmp_path / "logs")
    written = plotting.main(
        ["--indir", str(indir), "--outdir", str(tmp_path / "plots")]
    )
    expected = {tmp_path / "plots" / f"{TASK}.png", tmp_path / "plots" / "grid.png"}
    assert set(written) == expected
    out = capsys.readouterr().out
    for path in expected:
        assert path.is_file() and str(path) in out
        assert pixels(path).std() > 0


def test_changing_the_data_changes_the_image(tmp_path: Path) -> None:
    images = []
    for scale in (1.0, 0.5):
        indir = make_layout(tmp_path / f"logs{scale}", scale=scale)
        outdir = tmp_path / f"plots{scale}"
        plotting.main(["--indir", str(indir), "--outdir", str(outdir)])
        images.append(outdir / f"{TASK}.png")
    assert images[0].read_bytes() != images[1].read_bytes()
    first, second = pixels(images[0]), pixels(images[1])
    assert first.shape != second.shape or np.abs(first - second).max() > 0


def test_load_runs_reads_layout_and_skips_train_lines(tmp_path: Path) -> None:
    runs = plotting.load_runs([make_layout(tmp_path)])
    assert sorted((r["task"], r["method"], r["seed"]) for r in runs) == [
        (TASK, "ours", "0"),
        (TASK, "ours", "1"),
    ]
    run = next(r for r in runs if r["seed"] == "1")
    assert run["xs"] == [float(x) for x in range(0, 100_001, 10_000)]
    assert run["ys"][-1] == pytest.approx(1000.0)


def test_single_logdir_task_from_config(tmp_path: Path) -> None:
    logdir = tmp_path / "my_cheetah_run"
    write_run(logdir, [(0.0, 1.0), (5000.0, 2.0)], task="dmc_cheetah_run")
    (run,) = plotting.load_runs([logdir])
    assert (run["task"], run["method"], run["seed"]) == (
        "dmc_cheetah_run",
        "ours",
        "my_cheetah_run",
    )
    (run,) = plotting.load_runs([tmp_path])  # The same logdir one level down.
    assert run["task"] == "dmc_cheetah_run"


def test_missing_indir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for indir in (tmp_path / "empty", tmp_path / "nowhere"):
        with pytest.raises(SystemExit, match="no metrics.jsonl found"):
            plotting.main(["--indir", str(indir), "--outdir", str(tmp_path / "plots")])


def test_paper_curve_drawn_for_known_task() -> None:
    paper, baselines = plotting.load_paper(), plotting.load_baselines()
    runs = [
        {
            "task": TASK,
            "method": "ours",
            "seed": "0",
            "xs": [0.0, 5e5],
            "ys": [0.0, 500.0],
        }
    ]
    fig = Figure()
    labels = plotting.plot_task(fig.add_subplot(), TASK, runs, paper, baselines)
    assert "ours (1 seed)" in labels
    assert any(label.startswith(plotting.PAPER_NAME) for label in labels)
    assert "D4PG (1e8 steps)" in labels and "A3C (1e8 steps, proprio)" in labels


def test_paper_curve_skipped_for_unknown_task(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    indir = make_layout(tmp_path / "logs", task="dmc_made_up_task")
    plotting.main(["--indir", str(indir), "--outdir", str(tmp_path / "plots")])
    assert "no paper curve for dmc_made_up_task" in capsys.readouterr().out
    assert pixels(tmp_path / "plots" / "dmc_made_up_task.png").std() > 0
    runs = plotting.load_runs([indir])
    labels = plotting.plot_task(
        Figure().add_subplot(), "dmc_made_up_task", runs, plotting.load_paper(), {}
    )
    assert labels == ["ours (2 seeds)"]


def test_curve_at_interpolates_mean_over_seeds() -> None:
    runs = [
        {
            "task": "t",
            "method": "a",
            "seed": "0",
            "xs": [0.0, 100.0, 200.0],
            "ys": [0.0, 10.0, 30.0],
        },
        {
            "task": "t",
            "method": "a",
            "seed": "1",
            "xs": [0.0, 100.0],
            "ys": [20.0, 40.0],
        },
        {
            "task": "other",
            "method": "a",
            "seed": "0",
            "xs": [0.0, 100.0],
            "ys": [1e6, 1e6],
        },
    ]
    got = plotting.curve_at(runs, "t", [50, 150, 250])
    # Seed 0 at 50: 5; seed 1 at 50: 30 -> 17.5. At 150 only seed 0 reaches: 20.
    assert got[50] == pytest.approx(17.5)
    assert got[150] == pytest.approx(20.0)
    assert math.isnan(got[250])
    assert plotting.curve_at(runs, "t", [250], tolerance=50)[250] == pytest.approx(30.0)


def test_curve_at_on_paper_scores() -> None:
    paper = plotting.load_paper()
    walker = [r for r in paper if r["task"] == TASK]
    expected = np.mean([np.interp(1e6, r["xs"], r["ys"]) for r in walker])
    assert plotting.curve_at(paper, TASK, [1_000_000])[1_000_000] == pytest.approx(
        expected
    )
    assert 900 < expected < 1000  # The paper's walker_walk is near 956 at 1M steps.
