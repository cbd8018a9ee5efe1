"""Resident memory over many policy calls at the paper's size.

python benchmarks/memory.py [--calls 100000] [--precision 16 32]

The original TF2 code leaked on repeated policy calls; this prints the RSS
growth after a warm-up, with training and evaluation calls alternating and
the state reset every 500 calls, as in collection. The replay's memory is
measured by benchmarks/replay.py.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

import dreamer


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--precision", type=int, nargs="+", choices=(16, 32), default=[16, 32])
    args = parser.parse_args(argv)
    for precision in args.precision:
        mib, seconds = growth(precision, args.calls)
        print(f"precision {precision}: {args.calls} policy calls in {seconds:.0f} s, "
              f"RSS growth {mib:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
