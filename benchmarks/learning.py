"""Learning benchmark: trains a list of runs in sequence, each in its own
logdir, then compares eval returns at fixed env-step marks with the paper's
curves (scores/dreamer.json) and draws the plots.

  python benchmarks/learning.py --suite cpu --outdir runs
  python benchmarks/learning.py --run dmc_cartpole_balance state 50000 0,1 --outdir runs
  python benchmarks/learning.py --suite cpu --outdir runs --report   # table only

Rerunning the same command resumes unfinished runs (dreamer.py resumes a
logdir) and skips finished ones.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotting

# Variants: extra dreamer.py flags under a name that becomes the method folder.
VARIANTS = {
    "paper": [],
    "state": ["--obs", "state", "--configs", "cpu"],
    # From a few state dimensions a unit-variance decoder leaves the model
    # imprecise; these settings learned cartpole fastest (RESULTS.md).
    "state_sharp": ["--obs", "state", "--configs", "cpu", "--decoder_std", "0.1",
                    "--free_nats", "1", "--action_dist", "trunc_normal",
                    "--action_min_std", "0.1"],
    "cpu_image": ["--configs", "cpu_image"],
}

# (task, variant, env steps, seeds): the targets of this 2-core machine, and
# the paper-size run for a GPU machine.
SUITES = {
    "cpu": [
        ("dmc_cartpole_balance", "state_sharp", 50_000, (0, 1)),
        ("dmc_walker_stand", "state", 100_000, (0, 1)),
        ("dmc_walker_stand", "cpu_image", 100_000, (0,)),
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


def train(outdir: pathlib.Path, task: str, variant: str, steps: int, seed: int,
          extra: list[str]) -> float:
    """Runs dreamer.py to `steps` env steps; returns wall-clock seconds."""
    logdir = logdir_of(outdir, task, variant, seed)
    if finished(logdir, steps):
        print(f"{logdir}: done already.")
        return 0.0
    command = [sys.executable, str(ROOT / "dreamer.py"), "--logdir", str(logdir),
               "--task", task, "--seed", str(seed), "--steps", str(steps),
               "--eval_every", str(max(steps // 20, 1000)), *VARIANTS[variant], *extra]
    print(" ".join(command), flush=True)
    start = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.time() - start


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
    parser.add_argument("extra", nargs="*", help="flags passed on to dreamer.py (after --)")
    args = parser.parse_args(argv)
    if not args.suite and not args.run:
        parser.error("give --suite or --run")
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
        for task, variant, steps, seeds in runs:
            for seed in seeds:
                train(outdir, task, variant, steps, seed, args.extra)
    table = report(outdir, runs)
    print(table)
    (outdir / "learning.md").write_text(table + "\n")
    plotting.main(["--indir", str(outdir), "--outdir", str(outdir / "plots")])


if __name__ == "__main__":
    main()
