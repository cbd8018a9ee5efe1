"""Episodes on disk, replay, distributions, lambda-return, scans and logging."""

import collections
import datetime
import io
import json
import os
import pathlib
import queue
import random
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import imageio.v3 as iio
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tqdm

tfd = tfp.distributions


# Files.


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Writes to a temporary name in the same folder, flushes, then renames,
    so that a reader never sees a partial file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(logdir: pathlib.Path) -> None:
    """Deletes the temporary files and folders of writes a killed run left."""
    for path in pathlib.Path(logdir).glob("**/.*.tmp"):
        path.unlink(missing_ok=True)
    for path in pathlib.Path(logdir).glob("checkpoint/.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


# Episodes on disk.


def save_episode(directory: pathlib.Path, episode: dict) -> pathlib.Path:
    """Stores one finished episode as <time>-<uuid>-<length>.npz, where length
    counts transitions (steps - 1, the first step holds the reset)."""
    directory = pathlib.Path(directory)
    length = len(episode["reward"]) - 1
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = directory / f"{stamp}-{uuid.uuid4().hex}-{length}.npz"
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **episode)
    atomic_write(path, buffer.getvalue())
    return path


def episode_length(path: pathlib.Path) -> int:
    return int(pathlib.Path(path).stem.rsplit("-", 1)[-1])


def list_episodes(directory: pathlib.Path) -> list[pathlib.Path]:
    """Complete episode files only: temporary files start with a dot."""
    return sorted(pathlib.Path(directory).glob("[!.]*.npz"))


def load_episode(path: pathlib.Path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


class Replay:
    """Episodes on disk with a bounded cache in memory.

    Training chunks are drawn uniformly over stored episodes (then uniformly
    over start offsets); episodes not in the cache are read from disk, so
    memory stays bounded however long the run. Files that fail to load are
    reported once and skipped. The trainer adds episodes while the batch
    thread samples, so both go through one lock.
    """

    def __init__(self, directory: pathlib.Path, cache: int, seed: int = 0):
        self.directory = pathlib.Path(directory)
        self._cache_size = cache
        self._cache: dict[pathlib.Path, dict] = {}
        self._lengths: dict[pathlib.Path, int] = {}
        self._bad: set[pathlib.Path] = set()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Takes in episode files that appeared on disk."""
        with self._lock:
            for path in list_episodes(self.directory):
                if path not in self._lengths and path not in self._bad:
                    try:
                        self._lengths[path] = episode_length(path)
                    except ValueError:
                        self._skip(path, "name does not end in -<length>")

    @property
    def episodes(self) -> int:
        return len(self._lengths)

    @property
    def steps(self) -> int:
        """Stored transitions (agent steps)."""
        with self._lock:
            return sum(self._lengths.values())

    def add(self, path: pathlib.Path, episode: dict) -> None:
        with self._lock:
            self._lengths[path] = len(episode["reward"]) - 1
            self._store(path, episode)

    def sample(self, length: int) -> dict:
        """One chunk of `length` steps from a single episode (batch-major)."""
        with self._lock:
            return self._sample(length)

    def _sample(self, length: int) -> dict:
        candidates = [p for p, n in self._lengths.items() if n + 1 >= length]
        while candidates:
            path = self._rng.choice(candidates)
            episode = self._get(path)
            if episode is None:
                candidates.remove(path)
                continue
            total = len(episode["reward"])
            start = self._rng.randint(0, total - length)
            return {k: v[start : start + length] for k, v in episode.items()}
        raise RuntimeError(
            f"No episode of at least {length} steps in {self.directory}; "
            "lower --batch_length or collect longer episodes."
        )

    def _get(self, path: pathlib.Path) -> dict | None:
        if path in self._cache:
            return self._cache[path]
        try:
            episode = load_episode(path)
            if len(episode["reward"]) != self._lengths[path] + 1:
                raise ValueError("length does not match its name")
        except Exception as e:  # noqa: BLE001 (any unreadable file is skipped, never fatal)
            self._skip(path, f"{type(e).__name__}: {e}")
            return None
        self._store(path, episode)
        return episode

    def _store(self, path: pathlib.Path, episode: dict) -> None:
        if self._cache_size <= 0:
            return
        if len(self._cache) >= self._cache_size:
            # Random eviction keeps the cache an unbiased subset of the replay.
            del self._cache[self._rng.choice(list(self._cache))]
        self._cache[path] = episode

    def _skip(self, path: pathlib.Path, why: str) -> None:
        print(f"Skipping unreadable episode {path.name}: {why}", file=sys.stderr)
        self._bad.add(path)
        self._lengths.pop(path, None)
        self._cache.pop(path, None)


def sample_batches(
    replay: Replay, spec: dict, batch_size: int, batch_length: int, prefetch: int = 2
) -> Iterator[dict]:
    """Batches of chunks (batch, time, ...) as numpy arrays, stacked ahead of
    the trainer by a background thread; episodes added to the replay are
    sampled from as soon as they are stored. Not a tf.data generator dataset:
    while one is live, every TensorFlow call in the process runs slower."""
    batches: queue.Queue = queue.Queue(prefetch)

    def produce():
        try:
            while True:
                chunks = [replay.sample(batch_length) for _ in range(batch_size)]
                batches.put({k: np.stack([chunk[k] for chunk in chunks]).astype(dtype, copy=False)
                             for k, (_, dtype) in spec.items()})
        except Exception as e:  # noqa: BLE001 (raised again in the trainer)
            batches.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        batch = batches.get()
        if isinstance(batch, Exception):
            raise batch
        yield batch


# Scans and returns.


def scan(fn: Callable, inputs, start, unroll: bool = True):
    """Scans `fn(state, input)` over the leading (time) axis of a nest of
    inputs. Returns the stacked states, time-major. Unrolled, the graph holds
    one copy of `fn` per step, each of which XLA compiles anew; as a
    tf.while_loop (not `unroll`), one copy, which XLA compiles once."""
    if not unroll:
        return tf.scan(fn, inputs, start)
    # Unstacked rather than indexed: the gradient of T slices x[t] is T
    # full-size zero tensors summed (quadratic in T), that of unstack one stack.
    flat = [tf.unstack(x, axis=0) for x in tf.nest.flatten(inputs)]
    last = start
    outputs = []
    for step in zip(*flat):
        last = fn(last, tf.nest.pack_sequence_as(inputs, list(step)))
        outputs.append(last)
    return tf.nest.map_structure(lambda *xs: tf.stack(xs, 0), *outputs)


def lambda_return(reward, value, pcont, bootstrap, lambda_: float):
    """TD(lambda) returns over a time-major horizon (PAPER: behavior learning):
    V(t) = r_t + p_t * ((1 - lambda) * v_{t+1} + lambda * V(t+1)), V(H) = bootstrap.
    `value[t]` is the value of the state that earns `reward[t]`; `pcont` is a
    tensor of per-step discounts or a scalar."""
    pcont = pcont * tf.ones_like(reward)
    next_values = tf.concat([value[1:], bootstrap[None]], 0)
    inputs = tf.unstack(reward + pcont * next_values * (1 - lambda_))
    pcont = tf.unstack(pcont)  # As in scan, unstack for a linear gradient.
    returns = []
    last = bootstrap
    for t in reversed(range(len(inputs))):
        last = inputs[t] + pcont[t] * lambda_ * last
        returns.append(last)
    return tf.stack(returns[::-1], 0)


# Distributions.


class SampleDist:
    """Mode and entropy of a distribution without closed forms, estimated from
    samples per batch element (the tanh-Normal actor)."""

    def __init__(self, dist: tfd.Distribution, samples: int = 100):
        self._dist = dist
        self._samples = samples

    def __getattr__(self, name):
        return getattr(self._dist, name)

    def mode(self):
        sample = self._dist.sample(self._samples)
        logprob = self._dist.log_prob(sample)
        best = tf.argmax(logprob, axis=0)
        # Pick the best of the samples for each batch element separately.
        sample = tf.experimental.numpy.moveaxis(sample, 0, -2)
        return tf.gather(sample, best, axis=-2, batch_dims=len(best.shape))

    def entropy(self):
        sample = self._dist.sample(self._samples)
        return -tf.reduce_mean(self._dist.log_prob(sample), 0)


class OneHotDist(tfd.OneHotCategorical):
    """Categorical with one-hot samples and straight-through gradients to the
    probabilities (PAPER: discrete actions)."""

    def mode(self):
        return tf.one_hot(tf.argmax(self.logits_parameter(), -1), self.event_shape[-1])

    def sample(self, sample_shape=(), seed=None):
        sample = tf.cast(super().sample(sample_shape, seed), tf.float32)
        probs = self.probs_parameter()
        while len(probs.shape) < len(sample.shape):
            probs = probs[None]
        # Parenthesized, so that the forward value is the exact one-hot sample.
        return sample + (probs - tf.stop_gradient(probs))


# Exploration schedules.


def schedule(step: float, start: float, decay: float, floor: float) -> float:
    """Linear decay from `start` to `floor` over `decay` env steps; constant
    `start` when decay is 0."""
    if decay <= 0:
        return start
    return max(floor, start - (start - floor) * min(1.0, step / decay))


# Loop helpers.


class Every:
    """True at the first call (unless the `last` step that fired is given),
    then once each time `step` reaches `every` more steps."""

    def __init__(self, every: float, last: int | None = None):
        self._every = every
        self._last = last

    def __call__(self, step: int) -> bool:
        if not self._every:
            return False
        if self._last is None:
            self._last = step
            return True
        if step >= self._last + self._every:
            self._last += self._every * ((step - self._last) // self._every)
            return True
        return False


# Logging.


def encode_gif(frames: np.ndarray, fps: int = 20) -> bytes:
    """(time, height, width, channels) uint8 -> animated GIF; no ffmpeg needed."""
    frames = np.asarray(frames, np.uint8)
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    return iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)


def read_metrics(logdir: pathlib.Path) -> list[dict]:
    """Records of metrics.jsonl; a line cut short by a killed run is skipped."""
    path = pathlib.Path(logdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def progress_bar(total: int, initial: int) -> tqdm.tqdm:
    """A live bar over env steps towards --steps on a terminal; nothing
    otherwise, where the log lines tell the progress."""
    return tqdm.tqdm(total=total, initial=initial, unit="frames", dynamic_ncols=True,
                     disable=not sys.stdout.isatty())


class Logger:
    """Scalars to metrics.jsonl, TensorBoard and the console; each record
    carries the env step (frames)."""

    def __init__(self, logdir: pathlib.Path):
        self._logdir = pathlib.Path(logdir)
        self._writer = tf.summary.create_file_writer(str(self._logdir))
        self._scalars: dict[str, list] = collections.defaultdict(list)
        self._end_last_line(self._logdir / "metrics.jsonl")

    @staticmethod
    def _end_last_line(path: pathlib.Path) -> None:
        """A killed run may have cut the last line short: end it, so that the
        next record starts on a line of its own."""
        if not path.exists() or not path.stat().st_size:
            return
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")

    def scalar(self, name: str, value) -> None:
        self._scalars[name].append(float(value))

    def video(self, step: int, tag: str, name: str, frames: np.ndarray) -> None:
        """An animated GIF to videos/<name>_<step>.gif and to TensorBoard,
        whose image dashboard plays GIFs."""
        gif = encode_gif(frames)
        (self._logdir / "videos").mkdir(exist_ok=True)
        atomic_write(self._logdir / "videos" / f"{name}_{step}.gif", gif)
        height, width = frames.shape[1:3]
        image = tf.compat.v1.Summary.Image(
            height=height, width=width, colorspace=frames.shape[-1], encoded_image_string=gif)
        summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=tag, image=image)])
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step)

    def write(self, step: int, console: bool = True) -> dict:
        record = {k: float(np.mean(v)) for k, v in self._scalars.items()}
        self._scalars.clear()
        if not record:
            return record
        with (self._logdir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": int(step), **record}) + "\n")
        with self._writer.as_default():
            for name, value in record.items():
                tf.summary.scalar(name, value, step)
        self._writer.flush()
        if console:
            text = " / ".join(f"{k} {v:.3g}" for k, v in record.items())
            tqdm.tqdm.write(f"[{step}] {text}")  # Above a live progress bar, if any.
            sys.stdout.flush()
        return record
