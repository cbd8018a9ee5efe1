"""Tests for benchmarks/replay.py on tiny synthetic episodes: no rendering."""

import json
import math
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import replay


def tiny_episode(steps: int = 9) -> dict:
    rng = np.random.default_rng(0)
    return dict(image=rng.integers(0, 256, (steps, 8, 8, 3), dtype=np.uint8),
                action=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                reward=rng.normal(size=steps).astype(np.float32),
                discount=np.ones(steps, np.float32))


def test_copies_links_disk_and_measure_give_positive_finite_numbers(tmp_path):
    (tmp_path / "template").mkdir()
    template = replay.tools.save_episode(tmp_path / "template", tiny_episode())
    assert replay.collect_template(tmp_path / "template") == template  # Reused, not rendered.
    replay.write_copies(template, tmp_path / "pool", 6)
    replay.write_copies(template, tmp_path / "pool", 6)  # A rerun adds nothing.
    pool = replay.tools.list_episodes(tmp_path / "pool")
    assert len(pool) == 6 and all(p.read_bytes() == template.read_bytes() for p in pool)
    assert all(replay.tools.episode_length(p) == 8 for p in pool)
    directory = replay.replay_dir(tmp_path / "pool", tmp_path / "n5", 5)
    assert len(replay.tools.list_episodes(directory)) == 5

    disk = replay.disk_figures(directory, repeat=2)
    # Five files of 8 transitions at action repeat 2: 80 env steps.
    size = template.stat().st_size
    assert disk["env_steps"] == 80 and disk["file_bytes"] == 5 * size
    assert math.isclose(disk["disk_gb_per_1e6_steps"], 5 * size / 80 * 1e6 / 1e9)

    measured = replay.measure(directory, batches=3, batch_size=4, batch_length=5)
    row = {**measured, **disk}
    assert measured["episodes"] == 5
    for key in ("batch_ms_median", "rss_anon_gib", "rss_anon_base_gib",
                "disk_gb_per_1e6_steps", "episode_file_mb"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert len(row["batch_ms"]) == 3
    json.dumps(row)  # Plain numbers only, as the results file needs.
    assert replay.table([row]).splitlines()[1].split()[0] == "5"
