"""Tests for benchmarks/imagination_probe.py's replay statistics and
benchmarks/exploration.py's counts."""

import json
import pathlib
import sys
import types

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import exploration
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


class Returned:
    """What a head returns: a distribution whose mode is the given tensor."""

    def __init__(self, value):
        self._value = value

    def mode(self):
        return self._value


class LookingAgent:
    """Stands in for the agent: its posterior features are the observations,
    its reward head reads feature `read`, its value head the last feature."""

    def __init__(self, read: int):
        self.encoder = lambda obs: obs
        self.rssm = types.SimpleNamespace(observe=lambda embed, action: ({"feat": embed}, None),
                                          get_feat=lambda post: post["feat"])
        self.reward = lambda feat: Returned(feat[..., read])
        self.value = lambda feat: Returned(feat[..., -1])


def test_reward_fit_tells_a_reward_in_the_states_from_one_that_is_not(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for index in range(4):
        reward = (rng.uniform(size=60) > 0.8) * 2.0
        state = np.stack([reward, rng.normal(size=60)], 1).astype(np.float32)
        np.savez(tmp_path / f"20260101T0000{index:02d}-{index:032x}-59.npz", state=state,
                 action=np.zeros((60, 1), np.float32), reward=reward.astype(np.float32))
    np.savez(tmp_path / f"20260101T000009-{9:032x}-59.npz",  # No reward: left out.
             state=np.ones((60, 2), np.float32), action=np.zeros((60, 1), np.float32),
             reward=np.zeros(60, np.float32))
    seen = imagination_probe.reward_fit(LookingAgent(read=0), tmp_path, "state", 0.99)
    assert seen["episodes"] == 4 and seen["steps"] > 20
    assert seen["true"] == 2.0 and np.isclose(seen["pred"], 2.0) and seen["pred_other"] == 0.0
    assert np.isclose(seen["corr"], 1.0) and seen["probe"] > 0.95
    blind = imagination_probe.reward_fit(LookingAgent(read=1), tmp_path, "state", 0.99)
    assert abs(blind["corr"]) < 0.3 and blind["probe"] > 0.95  # The states still hold it.


def test_reward_fit_compares_the_value_before_a_reward_with_the_return_that_followed(
        tmp_path) -> None:
    reward = np.array([0, 0, 0, 2, 0], np.float32)
    state = np.stack([reward, [10, 20, 30, 40, 50]], 1).astype(np.float32)  # Value: feature 1.
    for index in range(2):
        np.savez(tmp_path / f"20260101T0000{index:02d}-{index:032x}-4.npz", state=state,
                 action=np.zeros((5, 1), np.float32), reward=reward)
    fit = imagination_probe.reward_fit(LookingAgent(read=0), tmp_path, "state", 0.5, before=2)
    # Steps 1 and 2 precede the reward at 3: returns 0.5 * 0.5 * 2 and 0.5 * 2.
    assert np.isclose(fit["value_ahead"], 25.0) and np.isclose(fit["return_ahead"], 0.75)


def test_reward_fit_needs_two_rewarded_episodes(tmp_path) -> None:
    np.savez(tmp_path / f"20260101T000000-{0:032x}-2.npz", state=np.ones((3, 1), np.float32),
             action=np.zeros((3, 1), np.float32), reward=np.array([0, 1, 0], np.float32))
    assert imagination_probe.reward_fit(LookingAgent(read=0), tmp_path, "state", 0.99) is None


class RewardedWhenPushed:
    """Episodes of 10 steps whose reward is 1 where the action exceeds 0.5."""

    def reset(self):
        self._t = 0

    def step(self, action):
        self._t += 1
        return None, float(action[0] > 0.5), self._t == 10, {}


def test_exploration_rules_count_rewarded_steps_and_episodes() -> None:
    rng = np.random.default_rng(0)
    rules = exploration.rules(1, rng)
    pushed = exploration.run(RewardedWhenPushed(), rules["constant +1"], episodes=3)
    assert pushed == dict(mean=10.0, max=10.0, episodes_with_reward=1.0, rewarded_steps=1.0)
    never = exploration.run(RewardedWhenPushed(), rules["constant -1"], episodes=3)
    assert never["episodes_with_reward"] == 0.0 and never["rewarded_steps"] == 0.0
    uniform = exploration.run(RewardedWhenPushed(), rules["uniform random"], episodes=40)
    assert 0.15 < uniform["rewarded_steps"] < 0.35  # P(a > 0.5) = 0.25.
    held, memory = rules["random sign held 10 steps"], {}
    signs = {float(held(t, memory)[0]) for t in range(10)}
    assert len(signs) == 1 and signs <= {-1.0, 1.0}


def test_exploration_writes_its_table_and_refuses_discrete_actions(tmp_path, capsys) -> None:
    out = tmp_path / "exploration.json"
    exploration.main(["--task", "dmc_pendulum_swingup", "--episodes", "1", "--time_limit", "20",
                      "--json", str(out)])
    rows = json.loads(out.read_text())["rules"]
    assert "constant +1" in rows and all(0 <= r["rewarded_steps"] <= 1 for r in rows.values())
    with pytest.raises(SystemExit):
        exploration.main(["--task", "gym_CartPole-v1", "--episodes", "1"])
    assert "discrete actions" in capsys.readouterr().err
