import numpy as np
import pytest
import tensorflow as tf

import tools


def loop_lambda_return(reward, value, pcont, bootstrap, lam):
    """The recursion of PAPER.md written out plainly, for one sequence."""
    horizon = len(reward)
    returns = np.zeros(horizon)
    next_return = bootstrap
    for t in reversed(range(horizon)):
        next_value = value[t + 1] if t + 1 < horizon else bootstrap
        returns[t] = reward[t] + pcont[t] * ((1 - lam) * next_value + lam * next_return)
        next_return = returns[t]
    return returns


@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
@pytest.mark.parametrize("per_step", [False, True])
def test_lambda_return_matches_loop(lam, per_step):
    rng = np.random.default_rng(0)
    horizon, batch = 7, 3
    reward = rng.normal(size=(horizon, batch))
    value = rng.normal(size=(horizon, batch))
    bootstrap = rng.normal(size=batch)
    pcont = rng.uniform(0.5, 1.0, (horizon, batch)) if per_step else np.full((horizon, batch), 0.99)
    got = tools.lambda_return(
        tf.constant(reward), tf.constant(value),
        tf.constant(pcont) if per_step else 0.99, tf.constant(bootstrap), lam).numpy()
    for b in range(batch):
        want = loop_lambda_return(reward[:, b], value[:, b], pcont[:, b], bootstrap[b], lam)
        np.testing.assert_allclose(got[:, b], want, rtol=1e-10)


def test_lambda_return_special_cases():
    reward = np.array([1.0, 2.0, 3.0])
    value = np.array([10.0, 20.0, 30.0])
    bootstrap = np.array(40.0)
    td = tools.lambda_return(reward, value, 0.5, bootstrap, 0.0).numpy()
    np.testing.assert_allclose(td, [1 + 0.5 * 20, 2 + 0.5 * 30, 3 + 0.5 * 40])
    mc = tools.lambda_return(reward, value, 0.5, bootstrap, 1.0).numpy()
    np.testing.assert_allclose(mc[0], 1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 40)


@pytest.mark.parametrize("unroll", [True, False])
def test_scan_values_and_gradient(unroll):
    """h_t = h_{t-1} * a_t + b_t over a nest of inputs; d sum_t h_t / d b_t is
    1 + a_{t+1} + a_{t+1} a_{t+2} + ..., by hand."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.5, 1.5, (4, 2)), rng.normal(size=(4, 2))
    a_t, b_t = tf.constant(a), tf.constant(b)
    with tf.GradientTape() as tape:
        tape.watch(b_t)
        states = tools.scan(lambda h, x: h * x["a"] + x["b"],
                            {"a": a_t, "b": b_t}, tf.ones(2, tf.float64), unroll)
        total = tf.reduce_sum(states)
    h, want = np.ones(2), []
    for t in range(4):
        h = h * a[t] + b[t]
        want.append(h)
    np.testing.assert_allclose(states.numpy(), want)
    grad = [sum(np.prod(a[t + 1:k + 1], 0) for k in range(t, 4)) for t in range(4)]
    np.testing.assert_allclose(tape.gradient(total, b_t).numpy(), grad)



def test_scan_as_a_loop_holds_one_step_whatever_the_length():
    """What XLA compiles: the loop's graph is the same for 3 or 30 steps, the
    unrolled one holds a copy of the step per step."""
    def graph_ops(length, unroll):
        scan = tf.function(lambda x: tools.scan(lambda h, x: h * x + 1.0, x, tf.zeros(2), unroll))
        graph = scan.get_concrete_function(tf.TensorSpec([length, 2])).graph
        return len(graph.get_operations())

    assert graph_ops(3, unroll=False) == graph_ops(30, unroll=False)
    assert graph_ops(30, unroll=True) > graph_ops(3, unroll=True) + 27

def make_episode(length, tag):
    """length transitions plus the reset step; every field tagged."""
    steps = length + 1
    return dict(
        image=np.full((steps, 64, 64, 3), tag, np.uint8),
        action=np.full((steps, 2), tag, np.float32),
        reward=np.arange(steps, dtype=np.float32) + 1000 * tag,
        discount=np.ones(steps, np.float32))


def test_save_and_load_episode(tmp_path):
    episode = make_episode(20, 3)
    path = tools.save_episode(tmp_path, episode)
    assert path.name.endswith("-20.npz")
    assert tools.list_episodes(tmp_path) == [path]
    assert not list(tmp_path.glob(".*"))  # No temporary file left.
    loaded = tools.load_episode(path)
    assert loaded.keys() == episode.keys()
    for key in episode:
        np.testing.assert_array_equal(loaded[key], episode[key])
        assert loaded[key].dtype == episode[key].dtype


def test_replay_chunks_stay_in_one_episode(tmp_path):
    for tag, length in enumerate([5, 12, 30]):
        tools.save_episode(tmp_path, make_episode(length, tag + 1))
    replay = tools.Replay(tmp_path, seed=1)
    assert replay.episodes == 3 and replay.steps == 47
    seen = set()
    for _ in range(200):
        chunk = replay.sample(8)
        assert chunk["reward"].shape == (8,) and chunk["image"].shape == (8, 64, 64, 3)
        tag = int(chunk["reward"][0] // 1000)
        seen.add(tag)
        # One episode: one tag everywhere and consecutive steps.
        assert (chunk["image"] == tag).all() and (chunk["action"] == tag).all()
        np.testing.assert_array_equal(np.diff(chunk["reward"]), 1)
    assert seen == {2, 3}  # The 5-step episode is too short for 8 steps.


def test_replay_skips_corrupt_files(tmp_path, capsys):
    good = tools.save_episode(tmp_path, make_episode(10, 1))
    bad = tmp_path / "20200101T000000-deadbeef-10.npz"
    bad.write_bytes(good.read_bytes()[:100])  # Truncated.
    replay = tools.Replay(tmp_path)
    for _ in range(20):
        assert replay.sample(5)["action"][0, 0] == 1
    assert bad.name in capsys.readouterr().err
    assert replay.episodes == 1 and bad.exists()  # Reported, never deleted.


def test_sample_batches(tmp_path):
    tools.save_episode(tmp_path, make_episode(15, 1))
    replay = tools.Replay(tmp_path)
    spec = {"image": ((64, 64, 3), np.uint8), "reward": ((), np.float32),
            "action": ((2,), np.float32), "discount": ((), np.float32)}
    batch = next(tools.sample_batches(replay, spec, 3, 6))
    assert batch["image"].shape == (3, 6, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert batch["action"].shape == (3, 6, 2) and batch["action"].dtype == np.float32
    # Each row is one contiguous chunk of the episode (rewards count its steps).
    reward = batch["reward"] - 1000
    assert np.all(np.diff(reward, axis=1) == 1) and reward.min() >= 0 and reward.max() <= 15


def test_sample_batches_raises_sampling_errors(tmp_path):
    tools.save_episode(tmp_path, make_episode(5, 1))
    replay = tools.Replay(tmp_path)
    with pytest.raises(RuntimeError, match="No episode of at least 20 steps"):
        next(tools.sample_batches(replay, {"reward": ((), np.float32)}, 2, 20))


def test_schedule_and_every():
    assert tools.schedule(0, 0.4, 200000, 0.1) == pytest.approx(0.4)
    assert tools.schedule(100000, 0.4, 200000, 0.1) == pytest.approx(0.25)
    assert tools.schedule(1e6, 0.4, 200000, 0.1) == pytest.approx(0.1)
    assert tools.schedule(1e6, 0.3, 0, 0.0) == 0.3
    every = tools.Every(100)
    assert [every(s) for s in (0, 50, 100, 150, 420, 450, 500)] == [
        True, False, True, False, True, False, True]


def test_replay_samples_added_episodes(tmp_path):
    tools.save_episode(tmp_path, make_episode(5, 1))
    replay = tools.Replay(tmp_path)
    with pytest.raises(RuntimeError, match="batch_length"):
        replay.sample(8)
    episode = make_episode(20, 2)
    replay.add(tools.save_episode(tmp_path, episode))
    assert replay.sample(8)["action"][0, 0] == 2 and replay.steps == 25


def counting_episode(steps: int) -> dict:
    """Image t holds t in every pixel (mod 256), so chunks show which steps they read."""
    image = np.arange(steps, dtype=np.uint8)[:, None, None, None] * np.ones((8, 8, 3), np.uint8)
    return dict(image=image, reward=np.arange(steps, dtype=np.float32),
                action=np.zeros((steps, 2), np.float32), discount=np.ones(steps, np.float32))


def test_chunks_read_the_right_image_blocks(tmp_path):
    """Chunks that start and end inside blocks, span several or sit at the end
    get exactly their steps' images."""
    steps = 3 * tools.BLOCK + 7  # Ends in a partial block.
    path = tools.save_episode(tmp_path, counting_episode(steps))
    with np.load(path) as data:  # The small arrays need numpy alone.
        np.testing.assert_array_equal(data["reward"], np.arange(steps))
    replay = tools.Replay(tmp_path, seed=3)
    starts = set()
    for _ in range(300):
        chunk = replay.sample(13)
        start = int(chunk["reward"][0])
        starts.add(start)
        expected = np.arange(start, start + 13, dtype=np.uint8)
        np.testing.assert_array_equal(chunk["image"][:, 0, 0, 0], expected)
        assert (chunk["image"] == expected[:, None, None, None]).all()
    assert starts == set(range(steps - 13 + 1))  # Every start, the last one included.


def test_older_episode_files_are_converted_in_place(tmp_path, capsys):
    """Episodes saved whole with np.savez_compressed (the older format) are
    rewritten as blocks once, under the same name, with the same arrays."""
    episode = counting_episode(25)
    path = tmp_path / "20200101T000000-0123abcd-24.npz"
    np.savez_compressed(path, **episode)
    replay = tools.Replay(tmp_path)
    assert "Converting 1 episode" in capsys.readouterr().err
    assert tools.list_episodes(tmp_path) == [path] and replay.episodes == 1
    loaded = tools.load_episode(path)
    for key in episode:
        np.testing.assert_array_equal(loaded[key], episode[key])
    with np.load(path) as data:
        assert "image.lz4" in data.files and "image" not in data.files
    chunk = replay.sample(10)
    assert (chunk["image"][:, 0, 0, 0] == chunk["reward"]).all()


def test_replay_skips_files_damaged_after_indexing(tmp_path, capsys):
    good = tools.save_episode(tmp_path, make_episode(30, 1))
    bad = tools.save_episode(tmp_path, make_episode(30, 2))
    replay = tools.Replay(tmp_path)
    bad.write_bytes(bad.read_bytes()[:200])  # Truncated under the replay's feet.
    batch = replay.sample_batch(20, 10)
    assert (batch["action"] == 1).all()
    assert bad.name in capsys.readouterr().err and replay.episodes == 1 and good.exists()
