"""Tests for wrappers.py on real environments (DMC, ALE) and small fakes."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import functools
import multiprocessing
import signal
import sys
import types

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import wrappers


def _run_unwrapped(name, args, kwargs):
    return globals()[name].__wrapped__(*args, **kwargs)


def without_tensorflow(test):
    """Runs a test that renders MuJoCo in a spawned process when this one has
    TensorFlow loaded (other test modules import it): the two must never
    share a process, and here dm_control was imported without a renderer."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        if 'tensorflow' not in sys.modules:
            return test(*args, **kwargs)
        context = multiprocessing.get_context('spawn')
        with wrappers._main_hidden():
            pool = context.Pool(1)
        with pool:
            return pool.apply(_run_unwrapped, (test.__name__, args, kwargs))
    return run


class FakeEnv:
    """Reward 1 per step, done after `length` steps, counts renders."""

    def __init__(self, length=100, low=(-1.0,), high=(1.0,)):
        self.length, self.renders, self.steps = length, 0, 0
        self.actions = []
        self.low = np.array(low, np.float32)
        self.high = np.array(high, np.float32)

    @property
    def obs_space(self):
        return {'image': ((2, 2, 3), np.uint8)}

    @property
    def act_space(self):
        return {'shape': self.low.shape, 'discrete': False,
                'low': self.low, 'high': self.high}

    def reset(self):
        self.steps = 0
        return {'image': np.zeros((2, 2, 3), np.uint8)}

    def step(self, action, render=True):
        self.steps += 1
        self.actions.append(np.array(action))
        done = self.steps >= self.length
        self.renders += int(render or done)
        return ({'image': np.zeros((2, 2, 3), np.uint8)}, 1.0, done,
                {'discount': np.float32(0.0 if done else 1.0)})

    def close(self):
        pass


@without_tensorflow
def test_dmc_walker_make_env():
    env = wrappers.make_env('dmc_walker_walk', 2, 1000)
    assert env.obs_space == {'image': ((64, 64, 3), np.uint8),
                             'reward': ((), np.float32)}
    space = env.act_space
    assert space['shape'] == (6,) and not space['discrete']
    np.testing.assert_array_equal(space['low'], -np.ones(6))
    np.testing.assert_array_equal(space['high'], np.ones(6))
    obs = env.reset()
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert obs['reward'] == 0 and obs['reward'].dtype == np.float32
    # Count real renders: one per agent step although each does 2 physics
    # steps.
    dmc = env._env._env._env._env
    assert isinstance(dmc, wrappers.DeepMindControl)
    renders = []
    original = dmc.render
    dmc.render = lambda: renders.append(1) or original()
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, reward, done, info = env.step(wrappers.random_action(space, rng))
        assert obs['reward'] == np.float32(reward) and reward > 0
        assert obs['reward'].dtype == np.float32 and not done
        assert info['discount'] == 1.0
    assert len(renders) == 3
    env.close()


def test_action_repeat_sums_rewards_and_renders_once():
    inner = FakeEnv()
    env = wrappers.ActionRepeat(inner, 3)
    env.reset()
    _, reward, done, _ = env.step(np.zeros(1))
    assert (reward, done, inner.steps, inner.renders) == (3.0, False, 3, 1)


def test_action_repeat_stops_early_on_done():
    inner = FakeEnv(length=4)
    env = wrappers.ActionRepeat(inner, 3)
    env.reset()
    env.step(np.zeros(1))
    _, reward, done, info = env.step(np.zeros(1))
    assert (reward, done, inner.steps) == (1.0, True, 4)
    assert info['discount'] == 0.0 and inner.renders == 2


def test_time_limit_is_a_cut():
    env = wrappers.TimeLimit(FakeEnv(length=100), 3)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1))
    env.reset()
    dones = [env.step(np.zeros(1))[2] for _ in range(2)]
    _, _, done, info = env.step(np.zeros(1))
    assert dones == [False, False] and done and info['discount'] == 1.0
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1))
    # A real terminal on the last step keeps discount 0.
    env = wrappers.TimeLimit(FakeEnv(length=2), 2)
    env.reset()
    env.step(np.zeros(1))
    assert env.step(np.zeros(1))[3]['discount'] == 0.0


@without_tensorflow
def test_time_limit_in_env_frames_dmc():
    env = wrappers.make_env('dmc_cartpole_balance', 2, 20)
    env.reset()
    steps, done = 0, False
    while not done and steps < 50:
        _, _, done, info = env.step(np.zeros(1))
        steps += 1
    assert steps == 10 and info['discount'] == 1.0


def test_normalize_actions_maps_to_native_bounds():
    inner = FakeEnv(low=(-2.0, 0.0, -np.inf), high=(2.0, 10.0, np.inf))
    env = wrappers.NormalizeActions(inner)
    np.testing.assert_array_equal(env.act_space['low'], [-1, -1, -np.inf])
    np.testing.assert_array_equal(env.act_space['high'], [1, 1, np.inf])
    env.step(np.array([-1.0, 1.0, 5.0]))
    env.step(np.array([1.0, -1.0, -7.0]))
    env.step(np.array([0.0, 0.0, 0.0]))
    env.step(np.array([3.0, -3.0, 0.0]))  # Out of range: clipped.
    np.testing.assert_allclose(inner.actions, [
        [-2, 10, 5], [2, 0, -7], [0, 5, 0], [2, 0, 0]])


@without_tensorflow
def test_render_fast_turns_off_shadows_reflections_and_multisampling():
    slow = wrappers.DeepMindControl('walker_walk', seed=0)
    fast = wrappers.DeepMindControl('walker_walk', seed=0, render_fast=True)
    assert slow.render_flags == {}
    assert fast.render_flags == {'shadow': False, 'reflection': False}
    image_slow, image_fast = slow.reset()['image'], fast.reset()['image']
    assert image_fast.shape == (64, 64, 3) and image_fast.dtype == np.uint8
    np.testing.assert_array_equal(slow.physics.data.qpos,
                                  fast.physics.data.qpos)
    # Same state, different lighting: shadows/floor reflection are gone.
    assert np.abs(image_slow.astype(int) - image_fast).mean() > 1
    # And no multisampling: against the same scene with it, only edge
    # pixels differ.
    assert fast.physics.model.vis.quality.offsamples == 0
    smooth = slow.physics.render(64, 64, camera_id=0, render_flag_overrides=fast.render_flags)
    changed = (smooth != image_fast).any(-1).mean()
    assert 0.01 < changed < 0.3


@without_tensorflow
def test_smaller_shadow_map_moves_only_shadow_edge_pixels():
    suite = wrappers.DeepMindControl('walker_walk', seed=0)
    small = wrappers.DeepMindControl('walker_walk', seed=0, shadow_size=1024)
    assert suite.physics.model.vis.quality.shadowsize == 2048
    assert small.physics.model.vis.quality.shadowsize == 1024
    env = wrappers.make_env('dmc_walker_walk', 2, None, shadow_size=512)
    assert env.physics.model.vis.quality.shadowsize == 512
    pairs = [(suite.reset()['image'], small.reset()['image'])]
    action = np.full(suite.act_space['shape'], 0.5)
    for _ in range(10):
        pairs.append((suite.step(action)[0]['image'], small.step(action)[0]['image']))
    changed = np.mean([(a != b).any(-1).mean() for a, b in pairs])
    assert 0 < changed < 0.005


@without_tensorflow
@pytest.mark.parametrize('task, render_fast', [
    ('walker_walk', False), ('walker_walk', True), ('quadruped_walk', False)])
def test_dmc_images_are_those_of_physics_render(task, render_fast):
    # The env keeps one camera; physics.render builds one per call.
    env = wrappers.DeepMindControl(task, seed=0, render_fast=render_fast)
    env.reset()
    for _ in range(3):
        image = env.step(np.full(env.act_space['shape'], 0.5))[0]['image']
        np.testing.assert_array_equal(image, env.physics.render(
            64, 64, camera_id=env.camera, render_flag_overrides=env.render_flags))


@without_tensorflow
def test_render_fast_renders_in_the_calling_thread():
    saved = os.environ.pop('LP_NUM_THREADS', None)
    try:
        wrappers.DeepMindControl('walker_walk')
        assert 'LP_NUM_THREADS' not in os.environ
        wrappers.DeepMindControl('walker_walk', render_fast=True)
        assert os.environ['LP_NUM_THREADS'] == '0'
        os.environ['LP_NUM_THREADS'] = '2'  # A user's setting is kept.
        wrappers.DeepMindControl('walker_walk', render_fast=True)
        assert os.environ['LP_NUM_THREADS'] == '2'
    finally:
        os.environ.pop('LP_NUM_THREADS', None)
        if saved is not None:
            os.environ['LP_NUM_THREADS'] = saved


@without_tensorflow
def test_dmc_frames_are_not_overwritten_by_later_renders():
    env = wrappers.DeepMindControl('walker_walk', seed=0)
    first = env.reset()['image']
    kept = first.copy()
    for _ in range(5):
        later = env.step(np.ones(6))[0]['image']
    assert np.abs(later.astype(int) - kept).max() > 0  # The walker moved.
    np.testing.assert_array_equal(first, kept)


@without_tensorflow
def test_quadruped_uses_camera_2():
    assert wrappers.DeepMindControl('quadruped_walk').camera == 2
    assert wrappers.DeepMindControl('walker_walk').camera == 0
    assert wrappers.DeepMindControl('walker_walk', camera=1).camera == 1


@without_tensorflow
def test_dmc_non_render_steps_reuse_image():
    env = wrappers.DeepMindControl('cartpole_swingup')
    first = env.reset()['image']
    obs, _, done, _ = env.step(np.ones(1), render=False)
    assert obs['image'] is first and not done


def test_dmc_state_obs_never_renders(monkeypatch):
    def no_render(self):
        raise AssertionError('rendered with obs=state')
    monkeypatch.setattr(wrappers.DeepMindControl, 'render', no_render)
    env = wrappers.make_env('dmc_cartpole_balance', 2, 1000, obs='state')
    assert env.obs_space == {'state': ((5,), np.float32),
                             'reward': ((), np.float32)}
    assert env.act_space['shape'] == (1,)
    first = env.reset()
    assert first.keys() == {'state', 'reward'}
    assert first['state'].shape == (5,) and first['state'].dtype == np.float32
    # Spec order: position (cart x, pole cos, pole sin), then velocity.
    np.testing.assert_allclose(first['state'][1] ** 2 + first['state'][2] ** 2,
                               1, rtol=1e-5)
    obs = first
    for _ in range(5):
        obs, reward, done, info = env.step(np.ones(1, np.float32))
        assert obs['state'].shape == (5,) and obs['state'].dtype == np.float32
        assert not done and info['discount'] == 1.0 and reward > 0
    assert not np.allclose(obs['state'], first['state'])
    # No rendering context was ever made.
    assert env.physics._contexts is None
    env.close()


def _gym(env):
    """The Gym instance inside a make_env stack."""
    while not isinstance(env, wrappers.Gym):
        env = env._env
    return env


def test_gym_pendulum_state_and_continuous_actions():
    env = wrappers.make_env('gym_Pendulum-v1', 2, None, obs='state')
    assert env.obs_space == {'state': ((3,), np.float32),
                             'reward': ((), np.float32)}
    space = env.act_space
    assert space['shape'] == (1,) and not space['discrete']
    np.testing.assert_array_equal(space['low'], [-1])
    np.testing.assert_array_equal(space['high'], [1])
    obs = env.reset()
    assert obs['state'].shape == (3,) and obs['state'].dtype == np.float32
    pendulum = _gym(env)._env.unwrapped
    # [-1, 1] maps to the native torque range [-2, 2].
    for action, torque in ((1.0, 2.0), (-0.5, -1.0), (3.0, 2.0)):
        obs, reward, done, info = env.step(np.array([action], np.float32))
        assert pendulum.last_u == pytest.approx(torque)
        assert obs['state'].shape == (3,) and obs['state'].dtype == np.float32
        assert not done and info['discount'] == 1.0 and reward <= 0
    # The registered 200-step limit is a cut: 100 agent steps at repeat 2.
    steps = 3
    while not done:
        _, _, done, info = env.step(np.zeros(1, np.float32))
        steps += 1
    assert steps == 100 and info['discount'] == 1.0
    env.close()


def test_gym_seed_makes_first_reset_repeatable():
    first = [wrappers.Gym('Pendulum-v1', seed=3).reset()['state']
             for _ in range(2)]
    other = wrappers.Gym('Pendulum-v1', seed=4).reset()['state']
    np.testing.assert_array_equal(first[0], first[1])
    assert not np.allclose(first[0], other)


def test_gym_cartpole_discrete_terminates_with_discount_zero():
    env = wrappers.make_env('gym_CartPole-v1', 1, 1000, obs='state')
    assert env.obs_space['state'] == ((4,), np.float32)
    space = env.act_space
    assert space['discrete'] and space['shape'] == (2,)
    rng = np.random.default_rng(0)
    env.reset()
    with pytest.raises(ValueError, match='one-hot'):
        env.step(np.full(2, 0.5, np.float32))
    for steps in range(1, 500):
        obs, _, done, info = env.step(wrappers.random_action(space, rng))
        assert obs['state'].shape == (4,)
        if done:
            break
    # Random play drops the pole long before the 500-step truncation.
    assert done and steps < 500 and info['discount'] == 0.0
    env.close()


def test_gym_discrete_observations_are_one_hot():
    env = wrappers.make_env('gym_FrozenLake-v1', 1, None, obs='state')
    assert env.obs_space['state'] == ((16,), np.float32)
    assert env.act_space['shape'] == (4,)
    obs = env.reset()
    np.testing.assert_array_equal(obs['state'], np.eye(16)[0])
    obs = env.step(np.eye(4, dtype=np.float32)[1])[0]
    assert obs['state'].sum() == 1 and obs['state'].dtype == np.float32


def test_gym_image_obs_renders_once_per_agent_step():
    env = wrappers.make_env('gym_CartPole-v1', 2, 1000)
    assert env.obs_space == {'image': ((64, 64, 3), np.uint8),
                             'reward': ((), np.float32)}
    obs = env.reset()
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert obs['image'].min() < 128 < obs['image'].max()  # Cart on white.
    gym = _gym(env)
    renders = []
    original = gym.render
    gym.render = lambda: renders.append(1) or original()
    obs, _, done, info = env.step(np.eye(2, dtype=np.float32)[0])
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert len(renders) == 1 and not done and info['discount'] == 1.0
    env.close()


def _text_env(render_mode=None):
    """A Gymnasium env with text observations and MultiDiscrete actions."""
    import gymnasium
    from gymnasium import spaces
    env = gymnasium.Env()
    env.observation_space = spaces.Text(5)
    env.action_space = spaces.MultiDiscrete([2, 2])
    env.render_mode = render_mode
    return env


def test_gym_unsupported_spaces_raise_value_error(monkeypatch):
    import gymnasium
    spec = gymnasium.envs.registration.EnvSpec(
        'TextWorld-v0', entry_point=_text_env, disable_env_checker=True)
    monkeypatch.setitem(gymnasium.envs.registry, 'TextWorld-v0', spec)
    wrappers.check_task('gym_TextWorld-v0')
    with pytest.raises(ValueError, match='unsupported observation space'):
        wrappers.Gym('TextWorld-v0', obs='state')
    with pytest.raises(ValueError, match='unsupported action space'):
        wrappers.Gym('TextWorld-v0', obs='image')


@pytest.mark.parametrize('task', [
    'dmc_walker_fly', 'dmc_foo_bar', 'dmc_walker', 'walker_walk', 'atari_xyz',
    'atari_Pong', 'gym_cartpole', 'dmc', '', 'gym_NoSuchEnv-v0', 'gym_',
    'gym_CartPole-v9', 'gym_ALE/Pong-v5', 'gymnasium_CartPole-v1'])
def test_unknown_tasks_raise_value_error(task):
    with pytest.raises(ValueError) as error:
        wrappers.check_task(task)
    assert '\n' not in str(error.value)
    with pytest.raises(ValueError):
        wrappers.make_env(task, 2, 1000)


@pytest.mark.parametrize('task', [
    'dmc_walker_walk', 'dmc_cartpole_balance_sparse', 'dmc_cup_catch',
    'dmc_ball_in_cup_catch', 'dmc_humanoid_CMU_run', 'atari_pong',
    'atari_montezuma_revenge', 'atari_kung_fu_master', 'gym_Pendulum-v1',
    'gym_CartPole-v1', 'gym_MountainCarContinuous-v0'])
def test_known_tasks_pass_check(task):
    wrappers.check_task(task)


def test_unknown_gym_id_message_names_the_registry():
    with pytest.raises(ValueError) as error:
        wrappers.check_task('gym_NoSuchEnv-v0')
    message = str(error.value)
    assert '\n' not in message and "'NoSuchEnv-v0'" in message
    assert 'gymnasium.envs.registry' in message
    with pytest.raises(ValueError, match='did you mean CartPole-v1'):
        wrappers.check_task('gym_CartPole-v9')
    assert 'gym_<EnvId>' in wrappers.TASK_HELP


@pytest.mark.parametrize('task', [
    'atari_pong', 'dmlab_rooms_collect_good_objects'])
def test_state_obs_only_for_dmc_and_gym(task):
    with pytest.raises(ValueError) as error:
        wrappers.check_obs(task, 'state')
    assert '\n' not in str(error.value) and 'dmc_ and gym_' in str(error.value)
    wrappers.check_obs(task, 'image')
    # make_env refuses before building anything (dmlab is not installed).
    with pytest.raises(ValueError, match="obs='state'"):
        wrappers.make_env('atari_pong', 4, 1000, obs='state')


def test_check_obs():
    for task in ('dmc_walker_walk', 'gym_Pendulum-v1'):
        wrappers.check_obs(task, 'state')
        wrappers.check_obs(task, 'image')
    with pytest.raises(ValueError) as error:
        wrappers.check_obs('dmc_walker_walk', 'pixels')
    assert '\n' not in str(error.value) and "'pixels'" in str(error.value)
    with pytest.raises(ValueError, match="'pixels'"):  # Refused before anything is built.
        wrappers.Gym('Pendulum-v1', obs='pixels')


def test_dmlab_task_check_needs_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, 'deepmind_lab', None)
    with pytest.raises(ValueError, match='not on PyPI.*bazel'):
        wrappers.check_task('dmlab_rooms_collect_good_objects')
    monkeypatch.setitem(sys.modules, 'deepmind_lab', types.ModuleType('deepmind_lab'))
    wrappers.check_task('dmlab_rooms_collect_good_objects')


def test_atari_pong():
    env = wrappers.make_env('atari_pong', 4, 108000, grayscale=False)
    assert env.obs_space['image'] == ((64, 64, 3), np.uint8)
    space = env.act_space
    assert space['discrete'] and space['shape'] == (6,)
    assert env.ale.getFloat('repeat_action_probability') == 0.25
    obs = env.reset()
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    assert obs['image'].max() > 0
    action = np.eye(6, dtype=np.float32)[2]
    obs, _, done, info = env.step(action)
    assert obs['image'].shape == (64, 64, 3) and not done
    assert info['discount'] == 1.0
    # Straight-through samples are one-hot up to float error.
    env.step(action + np.float32(1e-5))
    for bad in (np.ones(6), np.zeros(6), np.full(6, 1 / 6), np.eye(4)[0],
                np.array(2.0)):
        with pytest.raises(ValueError, match='one-hot'):
            env.step(bad)
    env.close()


def test_atari_grayscale():
    env = wrappers.make_env('atari_pong', 4, 108000, grayscale=True)
    assert env.obs_space['image'] == ((64, 64, 1), np.uint8)
    assert env.reset()['image'].shape == (64, 64, 1)
    obs = env.step(np.eye(6, dtype=np.float32)[0])[0]
    assert obs['image'].shape == (64, 64, 1) and obs['image'].dtype == np.uint8
    with pytest.raises(ValueError):
        wrappers.make_env('dmc_walker_walk', 2, 1000, grayscale=True)


def _play_until_life_lost(env, rng, max_steps=3000):
    """Steps random actions until done or a life is lost."""
    lives = env.ale.lives()
    for _ in range(max_steps):
        action = wrappers.random_action(env.act_space, rng)
        _, _, done, info = env.step(action)
        if done or env.ale.lives() != lives:
            return lives, done, info
    raise AssertionError('No life lost within the step budget.')


def test_atari_life_loss_ends_episode_only_with_life_done():
    rng = np.random.default_rng(0)
    env = wrappers.make_env('atari_breakout', 4, 108000, life_done=True)
    env.reset()
    lives, done, info = _play_until_life_lost(env, rng)
    assert done and info['discount'] == 0.0
    assert env.ale.lives() == lives - 1 > 0
    env.reset()
    assert env.ale.lives() == lives  # A new game.
    env = wrappers.make_env('atari_breakout', 4, 108000, life_done=False)
    env.reset()
    lives, done, info = _play_until_life_lost(env, rng)
    assert not done and env.ale.lives() == lives - 1


LABS = []  # Every FakeLab built, newest last.


class FakeLab:
    """Stand-in for deepmind_lab.Lab: episodes last 3 steps."""

    def __init__(self, level, observations, config, renderer=None):
        self.level, self.observation_names, self.config = (
            level, observations, config)
        self.renderer = renderer
        self.calls, self.count = [], 0
        LABS.append(self)

    def action_spec(self):
        names = ['LOOK_LEFT_RIGHT_PIXELS_PER_FRAME',
                 'LOOK_DOWN_UP_PIXELS_PER_FRAME', 'STRAFE_LEFT_RIGHT',
                 'MOVE_BACK_FORWARD', 'FIRE', 'JUMP', 'CROUCH']
        return [{'name': name, 'min': -1, 'max': 1} for name in names]

    def reset(self, seed=None):
        self.count = 0

    def step(self, action, num_steps=1):
        self.calls.append((np.array(action), num_steps))
        self.count += 1
        return 2.0

    def is_running(self):
        return self.count < 3

    def observations(self):
        assert self.is_running(), 'no observations after the episode ended'
        height, width = int(self.config['height']), int(self.config['width'])
        image = np.full((height, width, 3), self.count, np.uint8)
        return {'RGB_INTERLEAVED': image}

    def close(self):
        pass


def test_dmlab_with_stand_in_module(monkeypatch):
    module = types.ModuleType('deepmind_lab')
    module.Lab = FakeLab
    monkeypatch.setitem(sys.modules, 'deepmind_lab', module)
    env = wrappers.make_env('dmlab_rooms_collect_good_objects', 4, 1000)
    lab = LABS[-1]
    assert lab.level == 'contributed/dmlab30/rooms_collect_good_objects_train'
    assert lab.observation_names == ['RGB_INTERLEAVED']
    assert lab.renderer == 'software'  # Headless, on the CPU.
    assert env.obs_space['image'] == ((64, 64, 3), np.uint8)
    num = env.act_space['shape'][0]
    assert env.act_space['discrete'] and num == len(wrappers.DMLAB_ACTIONS)
    assert env.reset()['image'].shape == (64, 64, 3)
    obs, reward, done, _ = env.step(np.eye(num, dtype=np.float32)[1])
    action, num_steps = lab.calls[-1]
    assert num_steps == 4 and reward == 2.0 and not done
    np.testing.assert_array_equal(action, [0, 0, 0, 1, 0, 0, 0])  # Forward.
    assert action.dtype == np.intc and obs['image'][0, 0, 0] == 1
    env.step(np.eye(num, dtype=np.float32)[5])
    np.testing.assert_array_equal(lab.calls[-1][0], [-20, 0, 0, 0, 0, 0, 0])
    obs, _, done, info = env.step(np.eye(num, dtype=np.float32)[0])
    # Ended by the level's timer: a cut, with the last frame kept.
    assert done and info['discount'] == 1.0 and obs['image'][0, 0, 0] == 2


def test_dmlab_refuses_actions_in_another_order(monkeypatch):
    class SwappedLab(FakeLab):
        def action_spec(self):
            return super().action_spec()[::-1]
    module = types.ModuleType('deepmind_lab')
    module.Lab = SwappedLab
    monkeypatch.setitem(sys.modules, 'deepmind_lab', module)
    with pytest.raises(ValueError, match='Unexpected DeepMind Lab actions') as error:
        wrappers.DMLab('rooms_collect_good_objects')
    assert '\n' not in str(error.value)


def test_dmlab_missing_module_has_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'deepmind_lab', None)
    with pytest.raises(ImportError) as error:
        wrappers.DMLab('rooms_collect_good_objects')
    message = str(error.value)
    assert '\n' not in message and 'PyPI' in message and 'bazel' in message


# Parallel tests share one worker (a spawn child takes seconds to start).

@pytest.fixture(scope='module')
def worker_main(tmp_path_factory):
    """A fake __main__ that marks the child if it gets re-imported."""
    folder = tmp_path_factory.mktemp('fake_main')
    script = folder / 'fake_dreamer_main.py'
    script.write_text("import sys\nsys.modules['main_was_imported'] = sys\n")
    return script


@pytest.fixture(scope='module')
def parallel(worker_main):
    main = sys.modules['__main__']
    saved = {key: getattr(main, key) for key in ('__file__', '__spec__')
             if hasattr(main, key)}
    # Either attribute alone would make multiprocessing re-run the script.
    sys.path.insert(0, str(worker_main.parent))
    import importlib.util
    main.__file__ = str(worker_main)
    main.__spec__ = importlib.util.spec_from_file_location(
        'fake_dreamer_main', worker_main)
    try:
        env = wrappers.Parallel(
            functools.partial(wrappers.make_env, 'dmc_walker_walk', 2, 1000))
        # The hiding is temporary.
        assert main.__file__ == str(worker_main)
        assert main.__spec__.name == 'fake_dreamer_main'
    finally:
        for key in ('__file__', '__spec__'):
            if key in saved:
                setattr(main, key, saved[key])
            elif hasattr(main, key):
                delattr(main, key)
        sys.path.remove(str(worker_main.parent))
    yield env
    env.close()


def test_parallel_matches_local_env(parallel):
    assert parallel.obs_space == {'image': ((64, 64, 3), np.uint8),
                                  'reward': ((), np.float32)}
    assert parallel.act_space['shape'] == (6,)
    obs = parallel.reset()
    assert obs.keys() == {'image', 'reward'}
    assert obs['image'].shape == (64, 64, 3) and obs['image'].dtype == np.uint8
    obs, reward, done, info = parallel.step(np.zeros(6, np.float32))
    assert obs['image'].shape == (64, 64, 3) and obs['reward'] == np.float32(
        reward)
    assert not done and info['discount'] == 1.0
    promise = parallel.step_async(np.zeros(6, np.float32))
    assert promise()[0]['image'].shape == (64, 64, 3)
    assert parallel.reset_async()()['reward'] == 0


def test_parallel_child_imports_neither_main_nor_tensorflow(parallel):
    assert parallel.call(wrappers.imported, 'dm_control')
    assert not parallel.call(wrappers.imported, 'tensorflow')
    assert not parallel.call(wrappers.imported, 'main_was_imported')
    assert parallel.call(os.getenv, 'MUJOCO_GL') is not None


def test_parallel_reraises_child_errors(parallel):
    parallel.reset()
    with pytest.raises(ValueError) as error:
        parallel.step(np.zeros(3, np.float32))  # Wrong shape.
    assert 'In the env worker' in str(error.value.__cause__)
    # The worker survives its exceptions.
    assert parallel.step(np.zeros(6, np.float32))[0]['image'].shape[0] == 64


def test_parallel_crash_and_restart(parallel):
    parallel.reset()
    old_pid = parallel.pid
    os.kill(old_pid, signal.SIGKILL)
    with pytest.raises(wrappers.WorkerCrashed):
        parallel.step(np.zeros(6, np.float32))
    parallel.restart()
    assert parallel.pid != old_pid
    assert parallel.reset()['image'].shape == (64, 64, 3)
    assert parallel.step(np.zeros(6, np.float32))[2] is False


def test_parallel_rejects_main_module_ctor():
    def ctor():
        return None
    ctor.__module__ = '__main__'
    with pytest.raises(ValueError):
        wrappers.Parallel(ctor)
