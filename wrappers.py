"""Environments for Dreamer: DeepMind Control, Atari, DeepMind Lab, Gymnasium, workers.

This module must never import TensorFlow, directly or indirectly: MuJoCo's software renderer
(Mesa) and TensorFlow in one process crash, so environments run in `spawn` worker processes
(`Parallel`) that import only this module. Environment libraries are imported lazily inside the
class that needs them.

Every environment exposes:
  obs_space: dict name -> (shape, dtype); act_space: dict with "shape", "discrete", "low",
  "high" (discrete actions are one-hot float32 vectors); reset() -> obs; step(action) -> (obs,
  reward, done, info) with info["discount"] = 0.0 at a true terminal and 1.0 otherwise (a
  time-limit cut included); close().

Observations are {"image": uint8 (H, W, C)} by default; DMC and Gymnasium tasks also offer
obs="state": {"state": float32 (n,)}, a flat vector that never renders.
"""

import contextlib
import difflib
import importlib.util
import multiprocessing
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Obs = dict[str, np.ndarray]
Step = tuple[Obs, float, bool, dict]
Space = dict[str, tuple[tuple[int, ...], Any]]

TASK_HELP = (
    "name tasks dmc_<domain>_<task> (e.g. dmc_walker_walk, dmc_cartpole_balance_sparse, "
    "dmc_cup_catch), atari_<game> in snake_case (e.g. atari_pong, atari_montezuma_revenge), "
    "dmlab_<level> (e.g. dmlab_rooms_collect_good_objects) or gym_<EnvId> with a registered "
    "Gymnasium id (e.g. gym_Pendulum-v1, gym_CartPole-v1, gym_MountainCarContinuous-v0)")


def _discrete_space(num_actions: int) -> dict:
    return {"shape": (num_actions,), "discrete": True,
            "low": np.zeros(num_actions, np.float32), "high": np.ones(num_actions, np.float32)}


def _box_space(shape: tuple[int, ...], low: Any, high: Any) -> dict:
    low, high = (np.broadcast_to(bound, shape).astype(np.float32) for bound in (low, high))
    return {"shape": tuple(shape), "discrete": False, "low": low, "high": high}


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    height, width = size
    image = Image.fromarray(np.asarray(frame, np.uint8))
    if image.size != (width, height):
        # BOX is area averaging, the usual choice for downscaling frames.
        image = image.resize((width, height), Image.Resampling.BOX)
    return np.asarray(image)


def random_action(act_space: dict, rng: np.random.Generator) -> np.ndarray:
    """A uniform random action: one-hot for discrete spaces, else in bounds."""
    if act_space["discrete"]:
        return np.eye(act_space["shape"][0], dtype=np.float32)[rng.integers(act_space["shape"][0])]
    return rng.uniform(act_space["low"], act_space["high"]).astype(np.float32)


class _Env:
    """What the environments share. In DMC and Gymnasium, step(action, render=False) returns the
    last frame (stale), so ActionRepeat renders once per agent step, and an episode's final step
    always renders; obs="state" never renders."""

    _obs_type, _state_size, _channels, _image = "image", 0, 3, None

    @property
    def obs_space(self) -> Space:
        if self._obs_type == "state":
            return {"state": ((self._state_size,), np.float32)}
        return {"image": (self._size + (self._channels,), np.uint8)}

    def _observe(self, raw: Any, render: bool) -> Obs:
        if self._obs_type == "state":
            return {"state": self._state(raw)}
        return {"image": self.render() if render else self._image}

    def close(self) -> None:
        self._env.close()


# DeepMind Control Suite.

# Names used by the paper's score files that differ from the suite's domains.
_DMC_DOMAIN_ALIASES = {"cup": "ball_in_cup"}


def _dmc_suite() -> Any:
    """dm_control.suite; in a process that has TensorFlow (the trainer checking a task name) it is
    imported without a renderer, since loading Mesa's EGL there crashes the process."""
    if "tensorflow" in sys.modules and "dm_control.suite" not in sys.modules:
        saved = os.environ.get("MUJOCO_GL")
        os.environ["MUJOCO_GL"] = "disabled"
        try:
            importlib.import_module("dm_control.suite")
        finally:
            os.environ.pop("MUJOCO_GL")
            if saved is not None:
                os.environ["MUJOCO_GL"] = saved
    return importlib.import_module("dm_control.suite")


def _split_dmc_name(name: str) -> tuple[str, str]:
    """'cartpole_balance_sparse' -> ('cartpole', 'balance_sparse')."""
    domains = dict(_dmc_suite().TASKS_BY_DOMAIN)
    for alias, domain in _DMC_DOMAIN_ALIASES.items():
        domains[alias] = domains[domain]
    # Longest domain first so 'humanoid_CMU_run' beats 'humanoid'.
    for domain in sorted(domains, key=len, reverse=True):
        task = name[len(domain) + 1:]
        if name.startswith(domain + "_") and task in domains[domain]:
            return _DMC_DOMAIN_ALIASES.get(domain, domain), task
    raise ValueError(
        f"Unknown DeepMind Control task '{name}': use <domain>_<task> from "
        f"dm_control.suite.ALL_TASKS, e.g. walker_walk, cartpole_balance_sparse, cup_catch.")


class DeepMindControl(_Env):
    """A dm_control suite task, one physics step per call. obs="state" is every entry of
    time_step.observation flattened and concatenated in the observation spec's order."""

    def __init__(self, name: str, size: tuple[int, int] = (64, 64), camera: int | None = None,
                 seed: int = 0, render_fast: bool = False, obs: str = "image",
                 shadow_size: int | None = None) -> None:
        check_obs(f"dmc_{name}", obs)
        if obs == "image" and render_fast:
            # Without shadows a 64x64 frame is too small for llvmpipe's threads to pay off.
            # Mesa reads this when dm_control first loads, as in a Parallel worker.
            os.environ.setdefault("LP_NUM_THREADS", "0")
        # A state-only env needs no renderer, even beside TensorFlow.
        suite = _dmc_suite() if obs == "state" else importlib.import_module("dm_control.suite")
        domain, task = _split_dmc_name(name)
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        self.physics = self._env.physics
        self._obs_type, self._size = obs, tuple(size)  # size: (height, width)
        spec = self._env.observation_spec()
        self._state_size = sum(int(np.prod(value.shape)) for value in spec.values())
        self.camera = (2 if domain == "quadruped" else 0) if camera is None else camera
        self.render_flags = {}
        quality = self.physics.model.vis.quality  # Read by Mesa at the first render.
        if render_fast:
            # Shadows, reflections and 4x multisampling cost most of the software-rendering
            # time; without multisampling only pixels on edges change.
            self.render_flags = {"shadow": False, "reflection": False}
            quality.offsamples = 0
        if shadow_size:
            # The suite asks for a 2048^2 shadow map drawn every frame; at 64x64 a smaller one
            # moves only a few pixels on shadow edges and costs less to draw.
            quality.shadowsize = shadow_size
        self._camera = None  # Built on the first render (needs a renderer).

    @property
    def act_space(self) -> dict:
        spec = self._env.action_spec()
        return _box_space(spec.shape, spec.minimum, spec.maximum)

    def render(self) -> np.ndarray:
        # One Camera for all frames: physics.render builds one, with its scene, per call.
        if self._camera is None:
            from dm_control.mujoco import Camera
            self._camera = Camera(self.physics, *self._size, self.camera)
        # Copied: the camera renders into one buffer, and the image is kept as the stale frame.
        self._image = self._camera.render(render_flag_overrides=dict(self.render_flags)).copy()
        return self._image

    def _state(self, time_step: Any) -> np.ndarray:
        return np.concatenate([np.asarray(value, np.float32).ravel()
                               for value in time_step.observation.values()])

    def reset(self) -> Obs:
        return self._observe(self._env.reset(), render=True)

    def step(self, action: np.ndarray, render: bool = True) -> Step:
        time_step = self._env.step(np.asarray(action, np.float64))
        done = time_step.last()
        discount = np.float32(1.0 if time_step.discount is None else time_step.discount)
        obs = self._observe(time_step, render=render or done)
        return obs, float(time_step.reward or 0.0), done, {"discount": discount}

    def close(self) -> None:
        self._camera = None
        self._env.close()


# Generic wrappers.


class Wrapper:
    """Forwards everything it does not override (reset, step, close, ...) to the inner env."""

    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)


class ActionRepeat(Wrapper):
    """Repeats an action, summing rewards; the inner step (which takes `render=`) renders only on
    the last repeat, or when done."""

    def __init__(self, env: Any, amount: int) -> None:
        super().__init__(env)
        if amount < 1:
            raise ValueError(f"Action repeat must be >= 1, got {amount}.")
        self._amount = amount

    def step(self, action: np.ndarray) -> Step:
        total = 0.0
        for index in range(self._amount):
            obs, reward, done, info = self._env.step(action, render=index == self._amount - 1)
            total += reward
            if done:
                break
        return obs, total, done, info


class NormalizeActions(Wrapper):
    """Exposes continuous actions in [-1, 1], clipped and mapped to the native bounds; dimensions
    with infinite bounds pass through unchanged."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        space = env.act_space
        self._mask = np.isfinite(space["low"]) & np.isfinite(space["high"])
        # Finite stand-ins so the unbounded dimensions compute no NaNs.
        self._low = np.where(self._mask, space["low"], -1)
        self._high = np.where(self._mask, space["high"], 1)

    @property
    def act_space(self) -> dict:
        space = dict(self._env.act_space)
        space["low"] = np.where(self._mask, -1, space["low"]).astype(np.float32)
        space["high"] = np.where(self._mask, 1, space["high"]).astype(np.float32)
        return space

    def step(self, action: np.ndarray) -> Step:
        action = np.asarray(action, np.float32)
        native = (np.clip(action, -1, 1) + 1) / 2 * (self._high - self._low) + self._low
        return self._env.step(np.where(self._mask, native, action))


class TimeLimit(Wrapper):
    """Ends episodes after `duration` agent steps as a cut: the inner discount is kept (1 unless
    the inner env really terminated on that step)."""

    def __init__(self, env: Any, duration: int) -> None:
        super().__init__(env)
        self._duration, self._step = duration, None

    def reset(self) -> Obs:
        self._step = 0
        return self._env.reset()

    def step(self, action: np.ndarray) -> Step:
        if self._step is None:
            raise RuntimeError("Call reset() before step() (episode over).")
        obs, reward, done, info = self._env.step(action)
        self._step += 1
        done = done or self._step >= self._duration
        if done:
            self._step = None
        return obs, reward, done, info


class RewardObs(Wrapper):
    """Adds the reward of the transition that led to each obs, for logging."""

    @property
    def obs_space(self) -> Space:
        return {**self._env.obs_space, "reward": ((), np.float32)}

    def reset(self) -> Obs:
        return {**self._env.reset(), "reward": np.float32(0.0)}

    def step(self, action: np.ndarray) -> Step:
        obs, reward, done, info = self._env.step(action)
        return {**obs, "reward": np.float32(reward)}, reward, done, info


class OneHotAction(Wrapper):
    """Takes one-hot actions and passes the index to a discrete inner env."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self._num = env.act_space["shape"][0]

    @property
    def act_space(self) -> dict:
        return _discrete_space(self._num)

    def step(self, action: np.ndarray) -> Step:
        action = np.asarray(action, np.float32)
        index = int(np.argmax(action))
        # Tolerance for straight-through samples (sample + p - sg(p)).
        if action.shape != (self._num,) or not np.allclose(
                action, np.eye(self._num)[index], atol=1e-4):
            raise ValueError(f"Expected a one-hot action of shape ({self._num},), got "
                             f"{np.array2string(action.ravel(), precision=3)}.")
        return self._env.step(index)


# Atari.


def _atari_id(game: str) -> str:
    """The registered 'ALE/...-v5' id of a snake_case game name."""
    import ale_py
    import gymnasium
    gymnasium.register_envs(ale_py)
    ids = {key[4:-3].lower(): key for key in gymnasium.registry
           if key.startswith("ALE/") and key.endswith("-v5")}
    key = game.replace("_", "").lower()
    if game != game.lower() or key not in ids:
        raise ValueError(
            f"Unknown Atari game '{game}': use the snake_case ROM name from "
            f"ale_py.roms.get_all_rom_ids(), e.g. pong, montezuma_revenge.")
    return ids[key]


class Atari(_Env):
    """An ALE game with frame skipping, max-pooling, no-ops and sticky actions; takes integer
    actions (wrap in OneHotAction). With life_done, losing a life ends the episode as a terminal
    (discount 0), as in the original Dreamer code, and the next reset() starts a new game.
    `length` caps the episode in frames (a cut, discount 1)."""

    def __init__(self, name: str, action_repeat: int = 4, size: tuple[int, int] = (64, 64),
                 grayscale: bool = False, sticky: float = 0.25, noops: int = 30,
                 life_done: bool = False, length: int = 108000, seed: int = 0) -> None:
        import gymnasium
        self._env = gymnasium.make(
            _atari_id(name), frameskip=1, repeat_action_probability=sticky,
            full_action_space=False, max_num_frames_per_episode=length,
            obs_type="grayscale" if grayscale else "rgb")
        self.ale = self._env.unwrapped.ale
        self._repeat, self._size, self._grayscale = action_repeat, tuple(size), grayscale
        self._channels = 1 if grayscale else 3
        self._noops, self._life_done, self._lives = noops, life_done, None
        self._seed, self._rng = seed, np.random.default_rng(seed)

    @property
    def act_space(self) -> dict:
        return _discrete_space(int(self._env.action_space.n))

    def _obs(self, frame: np.ndarray) -> Obs:
        image = _resize(frame, self._size)
        return {"image": image[..., None] if self._grayscale else image}

    def reset(self) -> Obs:
        # Seed once so the whole run (sticky actions included) is repeatable.
        frame, _ = self._env.reset(seed=self._seed)
        self._seed = None
        for _ in range(self._rng.integers(1, self._noops + 1) if self._noops else 0):
            frame, _, terminated, truncated, _ = self._env.step(0)
            if terminated or truncated:
                frame, _ = self._env.reset()
        self._lives = self.ale.lives()
        return self._obs(frame)

    def step(self, action: int) -> Step:
        total, frames = 0.0, []
        for _ in range(self._repeat):
            frame, reward, terminated, truncated, _ = self._env.step(int(action))
            total += reward
            frames = frames[-1:] + [frame]
            lost = self.ale.lives() < self._lives
            if terminated or truncated or (self._life_done and lost):
                break
        self._lives = self.ale.lives()
        terminal = terminated or (self._life_done and lost)
        obs = self._obs(np.max(np.stack(frames), axis=0))
        return obs, total, terminal or truncated, {"discount": np.float32(0.0 if terminal else 1.0)}


# DeepMind Lab.

_DMLAB_INSTALL = (
    "deepmind_lab is not on PyPI: `make dmlab` builds it from source with bazel into .venv "
    "(DMLAB_SRC=/path/to/a/checkout of github.com/google-deepmind/lab where there is no network).")


def _check_dmlab(level: str) -> None:
    """Refuses DMLab tasks where `import deepmind_lab` cannot work (checked without importing)."""
    try:
        found = importlib.util.find_spec("deepmind_lab") is not None
    except ValueError:  # Loaded without a spec, e.g. a stand-in module.
        found = True
    if not found:
        raise ValueError(_DMLAB_INSTALL)


# Paper names whose DMLab-30 level file carries a _train/_test suffix.
_DMLAB_ALIASES = {name: name + "_train" for name in (
    "rooms_collect_good_objects", "rooms_exploit_deferred_effects")}

# Columns in the order of Lab.action_spec().
DMLAB_ACTION_NAMES = ("LOOK_LEFT_RIGHT_PIXELS_PER_FRAME", "LOOK_DOWN_UP_PIXELS_PER_FRAME",
                      "STRAFE_LEFT_RIGHT", "MOVE_BACK_FORWARD", "FIRE", "JUMP", "CROUCH")
DMLAB_ACTIONS = np.array([
    (0, 0, 0, 0, 0, 0, 0),     # noop
    (0, 0, 0, 1, 0, 0, 0),     # forward
    (0, 0, 0, -1, 0, 0, 0),    # backward
    (0, 0, -1, 0, 0, 0, 0),    # strafe left
    (0, 0, 1, 0, 0, 0, 0),     # strafe right
    (-20, 0, 0, 0, 0, 0, 0),   # look left
    (20, 0, 0, 0, 0, 0, 0),    # look right
    (-20, 0, 0, 1, 0, 0, 0),   # forward + look left
    (20, 0, 0, 1, 0, 0, 0),    # forward + look right
    (0, 0, 0, 0, 1, 0, 0),     # fire
], dtype=np.intc)


class DMLab(_Env):
    """A DeepMind Lab level with a small discrete action set (wrap in OneHotAction). Levels end on
    their own timer, so episode ends are cuts (discount 1). Level names without a '/' are looked
    up in contributed/dmlab30/."""

    def __init__(self, level: str, action_repeat: int = 4, size: tuple[int, int] = (64, 64),
                 seed: int = 0) -> None:
        try:
            import deepmind_lab
        except ImportError:
            raise ImportError(_DMLAB_INSTALL) from None
        if "/" not in level:
            level = "contributed/dmlab30/" + _DMLAB_ALIASES.get(level, level)
        height, width = size
        # The software renderer (OSMesa) needs no display, GPU or EGL; headless here, 'hardware'
        # rendered the same frames through Mesa's EGL.
        self._env = deepmind_lab.Lab(
            level, ["RGB_INTERLEAVED"], config={"width": str(width), "height": str(height)},
            renderer="software")
        names = tuple(spec["name"] for spec in self._env.action_spec())
        if names != DMLAB_ACTION_NAMES:  # The columns of DMLAB_ACTIONS would act wrongly.
            raise ValueError(f"Unexpected DeepMind Lab actions {names}: expected {DMLAB_ACTION_NAMES}.")
        self._repeat, self._size = action_repeat, tuple(size)
        self._rng = np.random.default_rng(seed)

    @property
    def act_space(self) -> dict:
        return _discrete_space(len(DMLAB_ACTIONS))

    def _obs(self) -> Obs:
        # Observations are unavailable after the episode ended: keep the last.
        if self._env.is_running():
            self._image = np.array(self._env.observations()["RGB_INTERLEAVED"], np.uint8)
        return {"image": self._image}

    def reset(self) -> Obs:
        self._env.reset(seed=int(self._rng.integers(2 ** 31 - 1)))
        return self._obs()

    def step(self, action: int) -> Step:
        reward = self._env.step(DMLAB_ACTIONS[int(action)], num_steps=self._repeat)
        done = not self._env.is_running()
        return self._obs(), float(reward), done, {"discount": np.float32(1.0)}


# Gymnasium.


def _gym_id(env_id: str) -> str:
    """Checks that env_id is in gymnasium.envs.registry (builds nothing)."""
    import gymnasium
    if env_id.startswith("ALE/"):
        raise ValueError(
            f"Use atari_<game> tasks for Atari, not 'gym_{env_id}' (e.g. atari_pong): they add "
            f"frame pooling, no-ops and sticky actions.")
    registry = gymnasium.envs.registry
    if env_id not in registry:
        close = difflib.get_close_matches(env_id, list(registry), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"Unknown Gymnasium environment '{env_id}'{hint}: use an id registered in "
            f"gymnasium.envs.registry, e.g. gym_Pendulum-v1, gym_CartPole-v1, "
            f"gym_MountainCarContinuous-v0.")
    return env_id


def _flattenable(space: Any) -> bool:
    """Whether gymnasium.spaces.flatten gives a sensible float vector."""
    from gymnasium import spaces
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        inner = space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces
        return all(map(_flattenable, inner))
    return isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiBinary,
                              spaces.MultiDiscrete))


class Gym(_Env):
    """A Gymnasium environment. obs="state" is the observation flattened by
    gymnasium.spaces.flatten (Discrete as one-hot); obs="image" is env.render() resized to `size`.
    Box actions are continuous (wrap in NormalizeActions), Discrete ones integers (wrap in
    OneHotAction). terminated ends an episode with discount 0, truncated (e.g. the registered
    max_episode_steps) with discount 1. The seed goes to the first reset only."""

    def __init__(self, env_id: str, size: tuple[int, int] = (64, 64), obs: str = "state",
                 seed: int = 0) -> None:
        check_obs(f"gym_{env_id}", obs)
        if obs == "image":
            # Classic control draws with pygame: no display or sound needed.
            for key in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
                os.environ.setdefault(key, "dummy")
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import gymnasium
        from gymnasium import spaces
        self._env = gymnasium.make(env_id, render_mode="rgb_array" if obs == "image" else None)
        self._id, self._obs_type, self._size, self._seed = env_id, obs, tuple(size), seed
        observation_space, action_space = self._env.observation_space, self._env.action_space
        self._discrete = isinstance(action_space, spaces.Discrete)
        if obs == "state" and not _flattenable(observation_space):
            self._refuse(f"an unsupported observation space {observation_space} for "
                         f"obs='state': use Box, Discrete (one-hot) or Tuple/Dict of those, or "
                         f"obs='image'")
        if not self._discrete and not isinstance(action_space, spaces.Box):
            self._refuse(f"an unsupported action space {action_space}: only Box (continuous) "
                         f"and Discrete are supported")
        self._state_size = int(spaces.flatdim(observation_space)) if obs == "state" else 0

    def _refuse(self, problem: str) -> None:
        self._env.close()
        raise ValueError(f"Gymnasium env '{self._id}' has {problem}.")

    @property
    def act_space(self) -> dict:
        space = self._env.action_space
        if self._discrete:
            return _discrete_space(int(space.n))
        return _box_space(space.shape, space.low, space.high)

    def render(self) -> np.ndarray:
        frame = self._env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(
                f"Gymnasium env '{self._id}' rendered {shape}, not an RGB frame: use obs='state'.")
        self._image = _resize(frame, self._size)
        return self._image

    def _state(self, observation: Any) -> np.ndarray:
        from gymnasium import spaces
        return np.asarray(spaces.flatten(self._env.observation_space, observation), np.float32)

    def reset(self) -> Obs:
        observation, _ = self._env.reset(seed=self._seed)
        self._seed = None
        return self._observe(observation, render=True)

    def step(self, action: Any, render: bool = True) -> Step:
        space = self._env.action_space
        if self._discrete:
            action = int(action) + int(space.start)
        else:
            action = np.asarray(action, space.dtype).reshape(space.shape)
        observation, reward, terminated, truncated, _ = self._env.step(action)
        done = bool(terminated or truncated)
        obs = self._observe(observation, render=render or done)
        return obs, float(reward), done, {"discount": np.float32(0.0 if terminated else 1.0)}


# Task names.


def check_task(task: str) -> None:
    """Validates a task name cheaply (no environment is built)."""
    kind, _, name = task.partition("_")
    checks = {"dmc": _split_dmc_name, "atari": _atari_id, "dmlab": _check_dmlab, "gym": _gym_id}
    if not name or kind not in checks:
        raise ValueError(f"Unknown task '{task}': {TASK_HELP}.")
    checks[kind](name)


def check_obs(task: str, obs: str) -> None:
    """Validates an observation type for a task name: "state" exists for dmc_ and gym_ only."""
    if obs not in ("image", "state"):
        raise ValueError(f"Unknown observation type {obs!r}: use 'image' or 'state'.")
    if obs == "state" and task.partition("_")[0] not in ("dmc", "gym"):
        raise ValueError(
            f"obs='state' is only available for dmc_ and gym_ tasks, not '{task}': use "
            f"obs='image'.")


def make_env(task: str, action_repeat: int, time_limit: int | None,
             size: tuple[int, int] = (64, 64), seed: int = 0, render_fast: bool = False,
             life_done: bool = False, grayscale: bool = False, obs: str = "image",
             shadow_size: int | None = None) -> Any:
    """Builds a wrapped environment for 'dmc_*', 'atari_*', 'dmlab_*' or 'gym_*'.

    time_limit is in env frames (None: no extra limit). life_done and grayscale apply to Atari
    only; render_fast and shadow_size (pixels per side of MuJoCo's shadow map; None: the task's
    own) to DMC only; obs is "image" or "state" (DMC and Gymnasium only, see check_obs).
    """
    check_task(task)
    check_obs(task, obs)
    kind, _, name = task.partition("_")
    if grayscale and kind != "atari":
        raise ValueError(f"grayscale is only supported for Atari, not '{task}'.")
    if kind == "dmc":
        env = ActionRepeat(DeepMindControl(name, size, seed=seed, render_fast=render_fast,
                                           obs=obs, shadow_size=shadow_size), action_repeat)
    elif kind == "gym":
        env = ActionRepeat(Gym(name, size, obs=obs, seed=seed), action_repeat)
    elif kind == "atari":  # Atari and DMLab repeat actions themselves.
        env = Atari(name, action_repeat, size, grayscale=grayscale, life_done=life_done, seed=seed)
    else:
        env = DMLab(name, action_repeat, size, seed=seed)
    env = OneHotAction(env) if env.act_space["discrete"] else NormalizeActions(env)
    if time_limit:
        env = TimeLimit(env, max(1, time_limit // action_repeat))
    return RewardObs(env)


# Worker processes.


class WorkerCrashed(RuntimeError):
    """The environment worker process died; call restart() on it."""


class RemoteTraceback(Exception):
    """Carries the worker's traceback text as the cause of a re-raise."""


def imported(module: str) -> bool:
    """Whether a module is loaded (ask a worker via Parallel.call)."""
    return module in sys.modules


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Stops spawn children from re-importing __main__ (which may load TF): multiprocessing
    re-runs __main__ in the child when it has a __spec__ name or a __file__."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: getattr(main, key) for key in ("__file__", "__spec__") if hasattr(main, key)}
    try:
        with contextlib.suppress(AttributeError):
            del main.__file__
        main.__spec__ = None
        yield
    finally:
        for key in ("__file__", "__spec__"):
            if key in saved:
                setattr(main, key, saved[key])
            elif hasattr(main, key):
                delattr(main, key)


def _error_message(exc: Exception) -> tuple[str, Any]:
    text = traceback.format_exc()
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 -- any pickling failure: send text.
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return "error", (exc, text)


def _worker(conn: Any, ctor: Callable[[], Any]) -> None:
    """Child loop: build the env, then answer (fn, args) messages, fn an env method's name or a
    picklable function, until None."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    env = None
    try:
        try:
            env = ctor()
            conn.send(("ok", (env.obs_space, env.act_space)))
        except Exception as exc:  # noqa: BLE001 -- forwarded to the parent.
            conn.send(_error_message(exc))
            return
        while (message := conn.recv()) is not None:
            fn, args = message
            try:
                conn.send(("ok", getattr(env, fn)(*args) if isinstance(fn, str) else fn(*args)))
            except Exception as exc:  # noqa: BLE001 -- forwarded to the parent.
                conn.send(_error_message(exc))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # Parent went away or Ctrl-C: exit quietly.
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()


class Parallel:
    """Runs an environment in a `spawn` child process. ctor must be picklable and importable
    without __main__, e.g. functools.partial(make_env, "dmc_walker_walk", 2, 1000). The child is
    built in the background; obs_space/act_space wait for it once."""

    def __init__(self, ctor: Callable[[], Any]) -> None:
        if getattr(getattr(ctor, "func", ctor), "__module__", None) == "__main__":
            raise ValueError("Parallel needs a ctor from an importable module, not __main__ "
                             "(spawn children do not import it).")
        self._ctor, self._process = ctor, None
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_worker, args=(child_conn, self._ctor), daemon=True)
        with _main_hidden():
            self._process.start()
        child_conn.close()  # Our copy, so that recv() sees EOF when the child dies.
        self._spaces = None

    @property
    def pid(self) -> int:
        return self._process.pid

    def _ready(self) -> tuple[Space, dict]:
        if self._spaces is None:
            self._spaces = self._receive()
        return self._spaces

    @property
    def obs_space(self) -> Space:
        return self._ready()[0]

    @property
    def act_space(self) -> dict:
        return self._ready()[1]

    def _send(self, fn: str | Callable[..., Any], *args: Any) -> Callable[[], Any]:
        if self._process is None:
            raise RuntimeError("This Parallel env is closed.")
        self._ready()
        try:
            self._conn.send((fn, args))
        except (EOFError, OSError):
            raise self._crashed() from None
        return self._receive

    def _receive(self) -> Any:
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._crashed() from None
        if status == "error":
            exc, text = payload
            raise exc from RemoteTraceback(f"\n\nIn the env worker:\n{text}")
        return payload

    def _crashed(self) -> WorkerCrashed:
        self._process.join(timeout=1)
        return WorkerCrashed(f"Env worker (pid {self._process.pid}) died with exit code "
                             f"{self._process.exitcode}; call restart() for a fresh one.")

    def step_async(self, action: np.ndarray) -> Callable[[], Step]:
        return self._send("step", action)

    def reset_async(self) -> Callable[[], Obs]:
        return self._send("reset")

    def step(self, action: np.ndarray) -> Step:
        return self.step_async(action)()

    def reset(self) -> Obs:
        return self.reset_async()()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a picklable fn(*args) inside the worker and returns its value."""
        return self._send(fn, *args)()

    def restart(self) -> None:
        """Replaces the worker with a fresh one (the episode is lost)."""
        self.close()
        self._start()

    def close(self) -> None:
        if self._process is None:
            return
        if self._process.is_alive():
            with contextlib.suppress(Exception):
                self._conn.send(None)
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()
        self._process = None
