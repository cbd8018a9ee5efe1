"""DeepMind Lab for real: dmlab/build.sh's answers to bad input, and wrappers.DMLab on the real
module that `make dmlab` builds, where deepmind_lab imports (the stand-in tests in
test_wrappers.py run everywhere)."""

import functools
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import wrappers  # conftest.py puts the repository on sys.path.

BUILD = pathlib.Path(__file__).resolve().parents[1] / "dmlab" / "build.sh"


def _build(tmp_path, **env):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DMLAB_BUILD": str(tmp_path), **env}
    return subprocess.run(["bash", str(BUILD)], check=False, env=env, capture_output=True,
                          text=True, timeout=60)


def test_build_refuses_a_source_path_that_is_not_deepmind_lab(tmp_path):
    # Refused before anything is installed or built.
    result = _build(tmp_path, DMLAB_SRC=str(tmp_path), PYTHON=sys.executable)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"DMLAB_SRC={tmp_path} is not" in result.stderr
    assert "github.com/google-deepmind/lab" in result.stderr
    assert not (tmp_path / "bazel").exists()


def test_build_needs_the_venv(tmp_path):
    result = _build(tmp_path, PYTHON=str(tmp_path / "python"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "build the project's venv first" in result.stderr


def test_real_rooms_collect_good_objects():
    pytest.importorskip("deepmind_lab")
    # In a spawned worker, as training runs it: the software renderer and TensorFlow, which
    # other tests load into this process, segfault together.
    env = wrappers.Parallel(functools.partial(
        wrappers.make_env, "dmlab_rooms_collect_good_objects", 4, None, seed=0))
    num = len(wrappers.DMLAB_ACTIONS)
    assert env.obs_space["image"] == ((64, 64, 3), np.uint8)
    assert env.act_space["discrete"] and env.act_space["shape"] == (num,)
    first = env.reset()["image"]
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert first.std() > 10 and len(np.unique(first.reshape(-1, 3), axis=0)) > 20  # Not blank.
    actions = np.eye(num, dtype=np.float32)
    obs, reward, done, info = env.step(actions[1])  # Forward: the view changes.
    assert obs["image"].shape == (64, 64, 3) and not np.array_equal(obs["image"], first)
    assert not done and info["discount"] == 1.0
    # A seeded walk (forward, forward while turning, turning) until the level's 60 s timer ends
    # it: 3600 frames at action repeat 4. Good objects give +1, bad ones -1 (this walk: 4 each).
    rng = np.random.default_rng(0)
    rewards = [reward]
    while not done:
        obs, reward, done, info = env.step(actions[rng.choice([1, 7, 8, 5])])
        rewards.append(reward)
    assert len(rewards) == 900 and info["discount"] == 1.0  # A cut, not a terminal state.
    assert set(rewards) == {-1.0, 0.0, 1.0}
    assert obs["image"].std() > 10  # The last frame is kept after the episode ended.
    env.close()
