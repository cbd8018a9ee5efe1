"""Episodes on disk, replay, distributions, lambda-return, scans and logging."""

import collections
import datetime
import io
import itertools
import json
import os
import pathlib
import queue
import random
import shutil
import sys
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator

import cramjam
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

# Images are stored in lz4 blocks of BLOCK steps: a training chunk reads and
# decompresses only the blocks it spans, fast enough at millions of stored steps
# without holding episodes in memory. The other arrays are plain .npy members.
BLOCK = 10
LZ4 = ".lz4"  # An image KEY's members: KEY.lz4 (the blocks), KEY.lz4.{ends,shape,block}.


def save_episode(directory: pathlib.Path, episode: dict) -> pathlib.Path:
    """Stores one finished episode as <time>-<uuid>-<length>.npz, where length
    counts transitions (steps - 1, the first step holds the reset)."""
    directory = pathlib.Path(directory)
    length = len(episode["reward"]) - 1
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    path = directory / f"{stamp}-{uuid.uuid4().hex}-{length}.npz"
    atomic_write(path, encode_episode(episode))
    return path


def is_image(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim >= 3


def encode_episode(episode: dict) -> bytes:
    members = {}
    for key, value in episode.items():
        if not is_image(value):
            members[key] = value
            continue
        blocks = [bytes(cramjam.lz4.compress_block(np.ascontiguousarray(value[i:i + BLOCK])))
                  for i in range(0, len(value), BLOCK)]
        members[key + LZ4] = np.frombuffer(b"".join(blocks), np.uint8)
        members[key + LZ4 + ".ends"] = np.cumsum([len(b) for b in blocks], dtype=np.int64)
        members[key + LZ4 + ".shape"] = np.array(value.shape, np.int64)
        members[key + LZ4 + ".block"] = np.int64(BLOCK)
    buffer = io.BytesIO()
    np.savez(buffer, **members)
    return buffer.getvalue()


def load_episode(path: pathlib.Path) -> dict:
    """The whole episode as arrays, from this format or the older one
    (np.savez_compressed of the arrays as they are)."""
    with np.load(path) as data:
        episode = {key: data[key] for key in data.files if LZ4 not in key}
        for key in (k[:-len(LZ4)] for k in data.files if k.endswith(LZ4)):
            blob, ends = data[key + LZ4], data[key + LZ4 + ".ends"]
            steps = int(data[key + LZ4 + ".block"])
            episode[key] = np.empty(data[key + LZ4 + ".shape"], np.uint8)
            for i, (a, b) in enumerate(itertools.pairwise([0, *ends])):
                unpack_block(blob[a:b], episode[key][i * steps:(i + 1) * steps])
    return episode


def unpack_block(blob, out: np.ndarray) -> None:
    """Decompresses one lz4 block straight into `out`, its exact size."""
    if cramjam.lz4.decompress_block_into(blob, out) != out.nbytes:
        raise ValueError("an image block is shorter than its frames")


def episode_length(path: pathlib.Path) -> int:
    return int(pathlib.Path(path).stem.rsplit("-", 1)[-1])


def list_episodes(directory: pathlib.Path) -> list[pathlib.Path]:
    """Complete episode files only: temporary files start with a dot."""
    return sorted(pathlib.Path(directory).glob("[!.]*.npz"))


class OldFormat(Exception):
    """An episode file of the older format: np.savez_compressed of whole arrays."""


class Stored:
    """One episode file as the replay samples it: its small arrays in memory
    and, for each image, where its lz4 blocks lie in the file."""

    def __init__(self, path: pathlib.Path):
        self.path, self.arrays, self.images = path, {}, {}
        with open(path, "rb") as f, np.load(f) as data:
            if any(info.compress_type != zipfile.ZIP_STORED for info in data.zip.infolist()):
                raise OldFormat
            for key in data.files:
                if key.endswith(LZ4):
                    offset = member_offset(f, data.zip.getinfo(key + ".npy"))
                    bounds = np.concatenate([[0], data[key + ".ends"]])
                    self.images[key[:-len(LZ4)]] = (offset, bounds, tuple(data[key + ".shape"]),
                                                    int(data[key + ".block"]))
                elif LZ4 not in key:
                    self.arrays[key] = data[key]
        self.length = len(self.arrays["reward"])  # Steps, the reset's included.
        for _, bounds, shape, block in self.images.values():
            if shape[0] != self.length or len(bounds) != -(-self.length // block) + 1:
                raise ValueError("image blocks do not match the episode's length")
        self.spec = {k: (v.shape[1:], v.dtype) for k, v in self.arrays.items()}
        self.spec.update({k: (v[2][1:], np.uint8) for k, v in self.images.items()})

    def read(self, key: str, start: int, stop: int, out: np.ndarray) -> None:
        """Writes steps [start, stop) of an image into `out`, decompressing only
        the blocks they span."""
        offset, bounds, shape, steps = self.images[key]
        first, last = start // steps, (stop - 1) // steps
        fd = os.open(self.path, os.O_RDONLY)
        try:
            blob = os.pread(fd, int(bounds[last + 1] - bounds[first]), offset + int(bounds[first]))
        finally:
            os.close(fd)
        if len(blob) != bounds[last + 1] - bounds[first]:
            raise OSError("the file is shorter than when it was indexed")
        blob, filled = memoryview(blob), 0  # Slices without copies.
        for block in range(first, last + 1):
            data = blob[bounds[block] - bounds[first]:bounds[block + 1] - bounds[first]]
            size = min(steps, shape[0] - block * steps)  # Frames in this block.
            lo, hi = max(start - block * steps, 0), min(stop - block * steps, size)
            if hi - lo == size:  # The whole block: decompressed in place.
                unpack_block(data, out[filled:filled + size])
            else:
                frames = np.empty((size, *shape[1:]), np.uint8)
                unpack_block(data, frames)
                out[filled:filled + hi - lo] = frames[lo:hi]
            filled += hi - lo


def member_offset(f, info: zipfile.ZipInfo) -> int:
    """Where the array data of an uncompressed .npz member starts in its file."""
    f.seek(info.header_offset + 26)  # The zip local header's name and extra lengths.
    name, extra = np.frombuffer(f.read(4), "<u2")
    f.seek(info.header_offset + 30 + int(name) + int(extra))
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(f)
    else:
        np.lib.format.read_array_header_2_0(f)
    return f.tell()


def convert_episodes(paths: list[pathlib.Path]) -> None:
    """Rewrites episodes of the older format in place, each atomically."""
    print(f"Converting {len(paths)} episode files to the block format, once.", file=sys.stderr)
    for path in tqdm.tqdm(paths, disable=len(paths) < 50, file=sys.stderr):
        atomic_write(path, encode_episode(load_episode(path)))


class Replay:
    """Episodes on disk, sampled as training chunks.

    Chunks are drawn uniformly over stored episodes (then uniformly over start
    offsets). Only the episodes' small arrays stay in memory; images are read
    from their files block by block, so memory stays small however long the
    run, and the page cache keeps the files that fit in RAM. Files that fail
    to load are reported once and skipped. The collector adds episodes while
    the batch thread samples, so both go through one lock.
    """

    def __init__(self, directory: pathlib.Path, seed: int = 0):
        self.directory = pathlib.Path(directory)
        self._episodes: list[Stored] = []
        self._known: set[pathlib.Path] = set()  # Indexed or skipped.
        self._longest = 0  # Steps of the longest episode.
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Takes in episode files that appeared on disk; converts those of the
        older format first."""
        old = []
        for path in list_episodes(self.directory):
            if path not in self._known:
                try:
                    self._index(path)
                except OldFormat:
                    old.append(path)
        if old:
            convert_episodes(old)
            for path in old:
                self._index(path)

    def add(self, path: pathlib.Path) -> None:
        """Takes in an episode that save_episode just wrote."""
        self._index(path)

    def _index(self, path: pathlib.Path) -> None:
        """Raises OldFormat for a file of the older format."""
        try:
            stored = Stored(path)
            if stored.length != episode_length(path) + 1:
                raise ValueError("length does not match its name")
        except OldFormat:
            raise
        except Exception as e:  # noqa: BLE001 (any unreadable file is skipped, never fatal)
            return self._skip(path, f"{type(e).__name__}: {e}")
        with self._lock:
            self._episodes.append(stored)
            self._known.add(path)
            self._longest = max(self._longest, stored.length)

    @property
    def episodes(self) -> int:
        return len(self._episodes)

    @property
    def steps(self) -> int:
        """Stored transitions (agent steps)."""
        with self._lock:
            return sum(stored.length - 1 for stored in self._episodes)

    def sample(self, length: int) -> dict:
        """One chunk of `length` steps from a single episode (time-major)."""
        return {k: v[0] for k, v in self.sample_batch(1, length).items()}

    def sample_batch(self, size: int, length: int, spec: dict | None = None) -> dict:
        """`size` chunks (batch, time, ...) of the keys in `spec` (key: (shape,
        dtype); by default every array of the episodes)."""
        batch = None
        row = 0
        while row < size:
            stored, start = self._choose(length)
            spec = spec or stored.spec
            if batch is None:
                batch = {k: np.empty((size, length, *shape), dtype)
                         for k, (shape, dtype) in spec.items()}
            try:
                for key in spec:
                    if key in stored.images:
                        stored.read(key, start, start + length, batch[key][row])
                    else:
                        batch[key][row] = stored.arrays[key][start:start + length]
            except (OSError, ValueError, cramjam.DecompressionError) as e:  # Damaged since.
                self._skip(stored.path, f"{type(e).__name__}: {e}")
                continue
            row += 1
        return batch

    def _choose(self, length: int) -> tuple[Stored, int]:
        with self._lock:
            if self._longest < length:
                raise RuntimeError(
                    f"No episode of at least {length} steps in {self.directory}; "
                    "lower --batch_length or collect longer episodes.")
            while True:  # Uniform over the episodes that are long enough.
                stored = self._rng.choice(self._episodes)
                if stored.length >= length:
                    return stored, self._rng.randint(0, stored.length - length)

    def _skip(self, path: pathlib.Path, why: str) -> None:
        print(f"Skipping unreadable episode {path.name}: {why}", file=sys.stderr)
        with self._lock:
            self._known.add(path)
            self._episodes = [stored for stored in self._episodes if stored.path != path]
            self._longest = max((stored.length for stored in self._episodes), default=0)


def sample_batches(replay: Replay, spec: dict, batch_size: int, batch_length: int,
                   prepare: Callable = lambda batch: batch, prefetch: int = 2) -> Iterator:
    """Batches of chunks (batch, time, ...), sampled and passed through
    `prepare` (for example onto the training device) by a background thread,
    `prefetch` ahead of the trainer; episodes added to the replay are sampled
    from as soon as they are stored. Not a tf.data generator dataset: while
    one is live, every TensorFlow call in the process runs slower."""
    batches: queue.Queue = queue.Queue(prefetch)

    def produce():
        try:
            while True:
                batches.put(prepare(replay.sample_batch(batch_size, batch_length, spec)))
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
