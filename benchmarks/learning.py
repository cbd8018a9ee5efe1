"""Learning benchmark: trains a list of runs in sequence, each in its own
logdir, then compares eval returns at fixed env-step marks with the paper's
curves (scores/dreamer.json) and draws the plots.

  python benchmarks/learning.py --suite cpu --outdir runs
  python benchmarks/learning.py --run dmc_cartpole_balance state 50000 0,1 --outdir runs
  python benchmarks/learning.py --suite cpu --outdir runs --report   # table only
  python benchmarks/learning.py --suite cpu --outdir runs --parallel 2 -- --eval_episodes 5

Rerunning the same command resumes unfinished runs (dreamer.py resumes a
logdir) and skips finished ones. With --parallel N, N runs train at once, each
with an equal share of the cores and its output in <logdir>.log.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotting

# Variants: extra dreamer.py flags under a name that becomes the method folder.
# The CPU variants are dreamer.py's presets of the same names; RESULTS.md's
# learning table gives what each learned.
VARIANTS = {
    "paper": [],
    "state": ["--obs", "state", "--configs", "cpu"],
    "state_sharp": ["--configs", "state_sharp"],
    "state_symlog": ["--configs", "state_symlog"],
    "cpu_image": ["--configs", "cpu_image"],
}

# (task, variant, env steps, seeds): the targets of this 2-core machine, and
# the paper-size run for a GPU machine.
SUITES = {
    "cpu": [
        ("dmc_cartpole_balance", "state_sharp", 50_000, (0, 1)),
        ("dmc_walker_stand", "state_symlog", 100_000, (0, 1)),
        ("dmc_walker_stand", "cpu_image", 100_000, (0, 1)),
        ("dmc_cartpole_balance", "cpu_image", 100_000, (0, 1)),
        ("dmc_pendulum_swingup", "cpu_image", 100_000, (0, 1)),
        ("dmc_walker_walk", "cpu_image", 100_000, (0, 1)),
    ],
    "gpu": [("dmc_walker_walk", "paper", 1_000_000, (0,))],
}


def logdir_of(outdir: pathlib.Path, task: str, variant: str, seed: int) -> pathlib.Path:
    return outdir / task / variant / str(seed)


def finished(logdir: pathlib.Path, steps: int) -> bool:
    metrics = logdir / "metrics.jsonl"
    if not metrics.exists():
        return False
    lines = metrics.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip().endswith("}")]
    return any(r["step"] >= steps and "test/return" in r for r in records)


def command(logdir: pathlib.Path, task: str, variant: str, steps: int, seed: int,
            extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "dreamer.py"), "--logdir", str(logdir),
            "--task", task, "--seed", str(seed), "--steps", str(steps),
            "--eval_every", str(max(steps // 20, 1000)), *VARIANTS[variant], *extra]


def thread_env(parallel: int, cores: int | None = None) -> dict:
    """The environment of each run. Side by side, each run gets its share of
    the cores as TensorFlow threads, which together make more frames/s than
    one run with all of them."""
    env = dict(os.environ)
    if parallel > 1:
        threads = str(max(1, (cores or os.cpu_count() or 1) // parallel))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    return env


def start(logdir: pathlib.Path, argv: list[str], env: dict, to_log: bool) -> subprocess.Popen:
    print(" ".join(argv), flush=True)
    if not to_log:
        return subprocess.Popen(argv, cwd=ROOT, env=env)
    logdir.parent.mkdir(parents=True, exist_ok=True)
    with open(logdir.parent / f"{logdir.name}.log", "a") as log:  # The child keeps it open.
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def train_all(jobs: list[tuple[pathlib.Path, list[str]]], parallel: int = 1,
              poll_s: float = 5.0) -> None:
    """Runs the (logdir, command) jobs in order, `parallel` at a time. One at
    a time prints to this terminal; side by side, each writes <logdir>.log.
    Exits with an error naming every job that failed, after the rest ran."""
    env = thread_env(parallel)
    pending, running, failed = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            logdir, argv = pending.pop(0)
            running[logdir] = start(logdir, argv, env, to_log=parallel > 1)
        time.sleep(poll_s)
        for logdir, process in list(running.items()):
            if process.poll() is not None:
                del running[logdir]
                if process.returncode:
                    failed.append(f"{logdir} (exit status {process.returncode})")
    if failed:
        sys.exit(f"learning.py: error: runs failed: {', '.join(failed)}; rerun the same "
                 "command to resume them")


def marks_for(steps: int) -> list[int]:
    return sorted({steps // 4, steps // 2, 3 * steps // 4, steps, 100_000, 200_000} - {0})


def report(outdir: pathlib.Path, runs: list[tuple]) -> str:
    """A markdown table of eval return at the marks, ours beside the paper's."""
    ours = plotting.load_runs([outdir])
    paper = plotting.load_paper()
    lines = ["| task | variant | seeds | env steps | ours | paper (pixels) | wall-clock h/seed |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, variant, steps, seeds in runs:
        mine = [r for r in ours if r["task"] == task and r["method"] == variant]
        hours = [wall_hours(logdir_of(outdir, task, variant, s)) for s in seeds]
        ours_at = plotting.curve_at(mine, task, marks_for(steps), tolerance=steps // 40)
        paper_at = plotting.curve_at(paper, task, marks_for(steps), tolerance=10_000)
        for mark in marks_for(steps):
            if mark > steps:
                continue
            lines.append(
                f"| {task} | {variant} | {len(mine)} | {mark:,} | {ours_at[mark]:.0f} | "
                f"{paper_at[mark]:.0f} | {sum(hours) / max(len(hours), 1):.2f} |")
    return "\n".join(lines)


def wall_hours(logdir: pathlib.Path) -> float:
    path = logdir / "metrics.jsonl"
    if not path.exists():
        return float("nan")
    times = [json.loads(line).get("wall_time", 0) for line in path.read_text().splitlines()
             if line.strip().endswith("}")]
    return max(times, default=0) / 3600


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES))
    parser.add_argument("--run", nargs=4, action="append", default=[],
                        metavar=("TASK", "VARIANT", "STEPS", "SEEDS"),
                        help="one more run: seeds comma-separated, variant from VARIANTS")
    parser.add_argument("--outdir", default="runs")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--parallel", type=int, default=1,
                        help="runs that train at once, sharing the cores")
    parser.add_argument("extra", nargs="*", help="flags passed on to dreamer.py (after --)")
    args = parser.parse_args(argv)
    if not args.suite and not args.run:
        parser.error("give --suite or --run")
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {args.parallel}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    outdir = pathlib.Path(args.outdir)
    runs = list(SUITES.get(args.suite, []))
    for task, variant, steps, seeds in args.run:
        if variant not in VARIANTS:
            sys.exit(f"learning.py: error: unknown variant '{variant}' ({', '.join(VARIANTS)})")
        runs.append((task, variant, int(float(steps)), tuple(int(s) for s in seeds.split(","))))
    if not args.report:
        jobs = []
        for task, variant, steps, seeds in runs:
            for seed in seeds:
                logdir = logdir_of(outdir, task, variant, seed)
                if finished(logdir, steps):
                    print(f"{logdir}: done already.")
                else:
                    jobs.append((logdir, command(logdir, task, variant, steps, seed, args.extra)))
        train_all(jobs, args.parallel)
    table = report(outdir, runs)
    print(table)
    (outdir / "learning.md").write_text(table + "\n")
    plotting.main(["--indir", str(outdir), "--outdir", str(outdir / "plots")])


if __name__ == "__main__":
    main()
