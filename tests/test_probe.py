"""Tests for benchmarks/imagination_probe.py's replay statistics."""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import imagination_probe


def store(directory: pathlib.Path, index: int, cos: list[float]) -> None:
    """A cartpole episode under the name dreamer.py gives it, stored at second `index`."""
    state = np.zeros((len(cos), 5), np.float32)
    state[:, 1] = cos
    np.savez(directory / f"20260101T0000{index:02d}-{index:032x}-{len(cos) - 1}.npz",
             state=state, reward=np.zeros(len(cos), np.float32))


def test_balance_times_per_group_in_collection_order(tmp_path: pathlib.Path) -> None:
    episodes = [
        [1.0, 1.0, 0.2, -1.0, 0.95, 0.95],  # Falls at step 2, back up for 2 steps: 4 of 6 up.
        [1.0, 0.7, 0.4, 0.4, 0.4, 0.4],  # Falls at step 2; 1 of 6 up.
        [1.0] * 6,  # Never falls.
    ]
    for index, cos in reversed(list(enumerate(episodes))):  # Order comes from the names.
        store(tmp_path, index, cos)
    rows = imagination_probe.cartpole_balance_times(tmp_path, group=2)
    assert [r["episodes"] for r in rows] == [(1, 2), (3, 3)]
    assert rows[0]["first_fall"] == 2 and rows[1]["first_fall"] == 6
    assert np.isclose(rows[0]["upright"], (4 / 6 + 1 / 6) / 2) and rows[1]["upright"] == 1.0
