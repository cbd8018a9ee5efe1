"""Resident memory over many policy calls at the paper's size, and of the
replay with 1e6 env steps stored.

python benchmarks/memory.py [--calls 100000] [--precision 16 32]
python benchmarks/memory.py --replay [--frames 1000000] [--cache 400]

The original TF2 code leaked on repeated policy calls; this prints the RSS
growth after a warm-up, with training and evaluation calls alternating and
the state reset every 500 calls, as in collection. It also kept every
episode in memory; `--replay` stores walker-sized episodes (1000 frames at
action repeat 2, 64x64x3 images) on disk, samples training chunks until the
cache has seen every episode, and prints the RSS growth.
"""

import argparse
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

import dreamer
import tools


def growth(precision: int, calls: int) -> tuple[float, float]:
    """MiB of RSS growth and seconds for `calls` policy calls at batch 1."""
    config = dreamer.parse_config(["--logdir", "/tmp/unused", "--precision", str(precision)])
    dreamer.set_precision(config.precision)
    agent = dreamer.Dreamer(config, {"image": ((64, 64, 3), np.uint8)},
                            {"shape": (6,), "discrete": False})
    obs = {"image": np.zeros((1, 64, 64, 3), np.uint8)}
    state, reset, go_on = None, np.ones(1, np.float32), np.zeros(1, np.float32)

    def call(i):
        nonlocal state
        _, state = agent.policy(obs, state, reset if i % 500 == 0 else go_on, i % 2 == 0, i)

    for i in range(2000):
        call(i)
    process, start = psutil.Process(), time.time()
    before = process.memory_info().rss
    for i in range(calls):
        call(i)
    return (process.memory_info().rss - before) / 2**20, time.time() - start


def replay_growth(frames: int, cache: int, repeat: int = 2, length: int = 500) -> dict:
    """RSS growth of a Replay over `frames` env steps of stored episodes
    after sampling training chunks until every episode was loaded once (or
    20 chunks per episode, whichever comes first)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="replay-"))
    episodes = frames // (repeat * length)
    for i in range(episodes):
        # Constant images compress to little on disk; loaded, they take full size.
        tools.save_episode(directory, dict(
            image=np.full((length + 1, 64, 64, 3), i % 256, np.uint8),
            action=np.zeros((length + 1, 6), np.float32),
            reward=np.full(length + 1, i, np.float32), discount=np.ones(length + 1, np.float32)))
    process = psutil.Process()
    before = process.memory_info().rss
    replay, start, samples = tools.Replay(directory, cache), time.time(), 0
    loaded = set()
    while len(loaded) < episodes and samples < 20 * episodes:
        chunk = replay.sample(dreamer.DEFAULTS["batch_length"])
        loaded.add(int(chunk["reward"][0]))  # The episode's index.
        samples += 1
    episode_mib = (length + 1) * 64 * 64 * 3 / 2**20
    shutil.rmtree(directory)
    return dict(episodes=episodes, loaded=len(loaded), cache=cache, samples=samples,
                seconds=time.time() - start,
                growth_mib=(process.memory_info().rss - before) / 2**20,
                bound_mib=min(cache, episodes) * episode_mib)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--precision", type=int, nargs="+", choices=(16, 32), default=[16, 32])
    parser.add_argument("--replay", action="store_true", help="measure the replay instead")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--cache", type=int, default=dreamer.DEFAULTS["replay_cache"])
    args = parser.parse_args(argv)
    if args.replay:
        r = replay_growth(args.frames, args.cache)
        print(f"replay of {args.frames} env steps ({r['episodes']} episodes, {r['loaded']} "
              f"loaded), cache {r['cache']}: {r['samples']} chunks in {r['seconds']:.0f} s, "
              "RSS growth "
              f"{r['growth_mib']:.0f} MiB (cached images: {r['bound_mib']:.0f} MiB)")
        return
    for precision in args.precision:
        mib, seconds = growth(precision, args.calls)
        print(f"precision {precision}: {args.calls} policy calls in {seconds:.0f} s, "
              f"RSS growth {mib:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
