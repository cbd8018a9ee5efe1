"""Batch speed, memory and disk use of the replay (tools.Replay) with many episodes stored.

python benchmarks/replay.py [--episodes 1000 5000] [--dir /tmp/replay_bench]
    [--batches 20] [--out benchmarks/results/replay.json]

Collects one dmc_walker_walk episode of random actions with the trainer's Driver (1000 frames
at action repeat 2: 501 steps of 64x64x3 images), stores it with tools.save_episode and copies
the file under new episode names until --dir holds the largest N (the folder of each N links
into that one set of files); a rerun reuses them.
For each N, in a fresh process so that one row's memory does not carry into the next, it
times one 50x50 batch (50 chunks of 50 steps) from tools.sample_batches (one sampler thread),
the median over --batches after a few warm-up batches, and reads the process's anonymous
resident memory (RssAnon in /proc/self/status: the replay's index and the batches, not the
page cache of the files). Disk use per 1e6 env steps comes from the file sizes. The files
were just written, so reads come from the page cache when it has room, as they do in a run
whose replay fits in RAM. Prints a table and writes every number to a JSON file.
"""

import argparse
import datetime
import functools
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dreamer  # noqa: I001 (first: it sets up TensorFlow's environment before it loads)

import numpy as np

import tools
import wrappers

MEMORY_SOURCE = "RssAnon in /proc/self/status (anonymous resident pages, no file pages)"


# Episode files.


def collect_template(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """One episode of random actions on the default task, stored as the trainer stores it;
    the file already in `directory`, if any."""
    existing = tools.list_episodes(directory)
    if existing:
        return existing[0]
    c = dreamer.DEFAULTS
    # A spawned worker renders: MuJoCo's renderer and TensorFlow in one process crash.
    env = wrappers.Parallel(functools.partial(wrappers.make_env, c["task"], c["action_repeat"],
                                              c["time_limit"], seed=seed))
    rng = np.random.default_rng(seed)
    episodes = []

    def random_policy(obs, state, reset):
        return np.stack([wrappers.random_action(env.act_space, rng) for _ in reset]), None

    try:
        dreamer.Driver([env], episodes.append)(random_policy, episodes=1)
    finally:
        env.close()
    directory.mkdir(parents=True, exist_ok=True)
    return tools.save_episode(directory, episodes[0])


def write_copies(template: pathlib.Path, directory: pathlib.Path, count: int) -> None:
    """Adds byte copies of `template` under fresh names of save_episode's form until
    `directory` holds `count` episodes: compressing each anew would take longer than the
    benchmark, and the sampler reads every file whole whatever its content."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp, _, length = template.stem.split("-")
    data = template.read_bytes()
    for _ in range(count - len(tools.list_episodes(directory))):
        tools.atomic_write(directory / f"{stamp}-{uuid.uuid4().hex}-{length}.npz", data)


def replay_dir(pool: pathlib.Path, directory: pathlib.Path, count: int) -> pathlib.Path:
    """`directory` with exactly `count` episodes, hard links into `pool` (which must hold at
    least that many), so that every N shares one set of files on disk."""
    directory.mkdir(parents=True, exist_ok=True)
    present = tools.list_episodes(directory)
    if len(present) != count:
        for path in present:
            path.unlink()
        for path in tools.list_episodes(pool)[:count]:
            os.link(path, directory / path.name)
    return directory


def disk_figures(directory: pathlib.Path, repeat: int) -> dict:
    """Bytes of the episode files per 1e6 env steps (env frames: agent steps x action repeat;
    the name's length counts the steps after the reset)."""
    paths = tools.list_episodes(directory)
    size = sum(path.stat().st_size for path in paths)
    env_steps = sum(tools.episode_length(path) * repeat for path in paths)
    return dict(files=len(paths), file_bytes=size, env_steps=env_steps,
                episode_file_mb=size / len(paths) / 1e6,
                disk_gb_per_1e6_steps=size / env_steps * 1e6 / 1e9)


# Measurements.


def rss_anon_gib() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024 / 2**30
    raise RuntimeError("No RssAnon in /proc/self/status: this needs Linux.")


def measure(directory: pathlib.Path, batches: int, batch_size: int, batch_length: int,
            seed: int = 0) -> dict:
    """Milliseconds per batch from the trainer's sampler, and the anonymous memory before the
    replay is built and after the timed batches."""
    base = rss_anon_gib()
    start = time.perf_counter()
    replay = tools.Replay(directory, seed)
    index_s = time.perf_counter() - start
    spec = tools.Stored(tools.list_episodes(directory)[0]).spec
    stream = tools.sample_batches(replay, spec, batch_size, batch_length)
    start = time.perf_counter()
    for _ in range(3):
        next(stream)
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        batch = next(stream)
        times.append((time.perf_counter() - start) * 1e3)
    assert batch["image"].shape[:2] == (batch_size, batch_length)
    return dict(episodes=replay.episodes, batch_size=batch_size, batch_length=batch_length,
                batch_ms_median=statistics.median(times), batch_ms=times, index_s=index_s,
                warmup_s=warmup_s, rss_anon_gib=rss_anon_gib(), rss_anon_base_gib=base)


def measure_in_child(directory: pathlib.Path, args: argparse.Namespace) -> dict:
    """measure() in a fresh process: freed arrays stay in the allocator, so memory read after
    an earlier row would include that row's."""
    command = [sys.executable, __file__, "--measure", str(directory), "--batches", str(args.batches), "--batch_size", str(args.batch_size),
               "--batch_length", str(args.batch_length)]
    output = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def machine() -> dict:
    info = dict(line.split(":", 1) for line in
                pathlib.Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    return dict(cpu=info.get("model name", "unknown"), family=info.get("cpu family"),
                model=info.get("model"), cores=os.cpu_count(),
                avx512=sorted(f for f in info.get("flags", "").split() if f.startswith("avx512")),
                python=platform.python_version(), numpy=np.__version__,
                tensorflow=tools.tf.__version__)


def table(rows: list[dict]) -> str:
    header = (f"{'episodes':>9} {'batch ms':>9} {'anon GiB':>9} {'base GiB':>9} "
              f"{'disk GB/1e6':>12} {'index s':>8}")
    lines = [header]
    for r in rows:
        lines.append(f"{r['episodes']:>9} {r['batch_ms_median']:>9.1f} "
                     f"{r['rss_anon_gib']:>9.2f} {r['rss_anon_base_gib']:>9.2f} "
                     f"{r['disk_gb_per_1e6_steps']:>12.2f} {r['index_s']:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--dir", default="/tmp/replay_bench",
                        help="episode files; kept for reruns (delete it when done)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per row")
    parser.add_argument("--batch_size", type=int, default=dreamer.DEFAULTS["batch_size"])
    parser.add_argument("--batch_length", type=int, default=dreamer.DEFAULTS["batch_length"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/replay.json"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # One row, in the child process.
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(pathlib.Path(args.measure), args.batches, args.batch_size,
                                 args.batch_length)))
        return

    root = pathlib.Path(args.dir)
    start = time.time()
    template = collect_template(root / "template")
    write_copies(template, root / "pool", max(args.episodes))
    print(f"{max(args.episodes)} episode files ready in {time.time() - start:.0f} s", flush=True)
    rows = []
    for n in args.episodes:
        directory = replay_dir(root / "pool", root / f"n{n}", n)
        rows.append({**measure_in_child(directory, args),
                     **disk_figures(directory, dreamer.DEFAULTS["action_repeat"])})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    results = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   machine=machine(), command=" ".join(["python", *sys.argv]),
                   task=dreamer.DEFAULTS["task"], action_repeat=dreamer.DEFAULTS["action_repeat"],
                   memory_source=MEMORY_SOURCE, rows=rows, table=table(rows))
    print(results["table"])
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"Wrote {out}.")


if __name__ == "__main__":
    main()
