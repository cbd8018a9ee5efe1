"""Plot evaluation returns of Dreamer runs against the paper's curves.

Reads `metrics.jsonl` files from run logdirs and the authors' released scores
(scores/dreamer.json, scores/baselines.json). Deliberately free of TensorFlow and of the agent
modules, so plots can be made on any machine while runs are still training.

    python plotting.py --indir LOGDIR [LOGDIR ...] --outdir PLOTS [--xmax STEPS]

Runs are found as INDIR/<task>/<method>/<seed>/metrics.jsonl or as single logdirs
(INDIR/metrics.jsonl with the task read from INDIR/config.yaml).
"""

import argparse
import json
import math
import re
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

# Headless: runs on servers and in tests without a display. The figures are drawn through
# Figure objects, so pyplot's global state is never touched.
matplotlib.use("Agg")

SCORES = Path(__file__).resolve().parent / "scores"
RETURN_KEY = "test/return"
DEFAULT_METHOD = "ours"
PAPER_NAME = "Dreamer paper"
# Final scores after 1e8 env steps, drawn as horizontal reference lines.
BASELINES = {
    "d4pg_100m": ("D4PG (1e8 steps)", "tab:purple"),
    "a3c_100m_proprio": ("A3C (1e8 steps, proprio)", "tab:brown"),
}
TASK_LINE = re.compile(r"^task:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


# Loading.


def read_metrics(path: Path) -> tuple[list[float], list[float]]:
    """Eval returns of one metrics.jsonl, sorted by step.

    Lines without "test/return" (training scalars) are ignored, and so are unparsable lines: a
    run that is still writing may end in a partial line. Repeated steps (a resumed run logging
    the same step again) are averaged so that the steps strictly increase, as interpolation needs.
    """
    points: dict[float, list[float]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            step, value = float(row["step"]), float(row[RETURN_KEY])
        except (ValueError, KeyError, TypeError):
            continue
        if math.isfinite(step) and math.isfinite(value):
            points.setdefault(step, []).append(value)
    xs = sorted(points)
    return xs, [float(np.mean(points[x])) for x in xs]


def describe_run(indir: Path, logdir: Path, method: str | None) -> tuple[str | None, str, str]:
    """(task, method, seed) of a logdir, from its path below indir and its config.

    config.yaml is the resolved configuration, so its `task:` line wins over a folder name; the
    folder layout <task>/<method>/<seed> supplies the rest.
    """
    parts = logdir.relative_to(indir).parts
    config = logdir / "config.yaml"
    match = TASK_LINE.search(config.read_text()) if config.is_file() else None
    task = match.group(1) if match else None
    if task is None and len(parts) >= 3:
        task = parts[-3]
    elif task is None and len(logdir.resolve().parts) >= 4:
        # --indir pointed inside the layout (at a task, method or seed folder): the folders above
        # it still name the task, but say that it is a guess.
        task = logdir.resolve().parts[-3]
        print(f"no config.yaml task for {logdir}; task {task!r} taken from its path")
    if len(parts) >= 2:
        return task, method or parts[-2], parts[-1]
    # A single logdir (given directly or one level down): its name is the seed.
    return task, method or DEFAULT_METHOD, logdir.resolve().name


def load_runs(indirs: list[str | Path], method: str | None = None) -> list[dict]:
    """Runs below the given dirs as dicts {task, method, seed, xs, ys}.

    xs are env steps and ys eval returns, both lists of floats (the format of
    scores/dreamer.json). `method` overrides the method name of every run. Raises SystemExit
    with a one-line message when nothing can be plotted.
    """
    runs: list[dict] = []
    seen_files: set[Path] = set()
    seen_keys: set[tuple[str, str, str]] = set()
    for indir in map(Path, indirs):
        if indir.is_file() and indir.name == "metrics.jsonl":
            files = [indir]
        else:
            files = sorted(indir.rglob("metrics.jsonl")) if indir.is_dir() else []
        if not files:
            raise SystemExit(f"error: no metrics.jsonl found under {indir}")
        root = indir.parent if indir.is_file() else indir
        for path in files:
            if path.resolve() in seen_files:  # Overlapping --indir arguments.
                continue
            seen_files.add(path.resolve())
            task, name, seed = describe_run(root, path.parent, method)
            if task is None:
                print(f"skipping {path}: no task (no folder layout or config.yaml task line)")
                continue
            xs, ys = read_metrics(path)
            if not xs:
                print(f"skipping {path}: no '{RETURN_KEY}' lines yet")
                continue
            # Two logdirs with the same folder name must not merge into one seed.
            unique, count = seed, 1
            while (task, name, unique) in seen_keys:
                count += 1
                unique = f"{seed}#{count}"
            seen_keys.add((task, name, unique))
            runs.append({"task": task, "method": name, "seed": unique, "xs": xs, "ys": ys})
    if not runs:
        raise SystemExit(f"error: no '{RETURN_KEY}' values in any metrics.jsonl under {indirs}")
    return runs


def load_paper(path: str | Path = SCORES / "dreamer.json") -> list[dict]:
    """The authors' per-seed curves: list of {task, method, seed, xs, ys}."""
    return json.loads(Path(path).read_text())


def load_baselines(path: str | Path = SCORES / "baselines.json") -> dict[str, dict[str, float]]:
    """Final scores per task, e.g. {"dmc_walker_walk": {"d4pg_100m": 968.3, ...}}."""
    return json.loads(Path(path).read_text())


# Statistics.


def curve_at(runs: list[dict], task: str, marks: list[float], method: str | None = None,
             tolerance: float = 0.0) -> dict[int, float]:
    """Mean over seeds of the eval return at each env-step mark.

    Each seed is linearly interpolated at the mark; a seed whose own step range does not cover
    the mark (widened by `tolerance` steps at both ends, where its end value is used) is left
    out, and a mark no seed covers is nan. Works on our runs and on load_paper() alike; `method`
    selects one method.
    """
    chosen = [r for r in runs if r["task"] == task and method in (None, r["method"])]
    result = {}
    for mark in marks:
        values = []
        for run in chosen:
            order = np.argsort(run["xs"], kind="stable")
            xs, ys = np.asarray(run["xs"], float)[order], np.asarray(run["ys"], float)[order]
            if len(xs) and xs[0] - tolerance <= mark <= xs[-1] + tolerance:
                values.append(float(np.interp(mark, xs, ys)))
        result[int(mark)] = float(np.mean(values)) if values else math.nan
    return result


def on_grid(xs: list[float], ys: list[float], grid: np.ndarray, width: float) -> np.ndarray:
    """One seed resampled at the grid points; nan outside the seed's own range.

    Grid point i stands for the bin of steps within width / 2 of it. Points are first averaged
    within these bins (evaluations are noisy and seeds are not evaluated at the same steps), then
    the bin means are interpolated, which bridges bins without points (the paper evaluated only
    every 1e5 steps). Data beyond the plotted range still anchors the last grid points.
    """
    xs_arr, ys_arr = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs_arr) == 0:
        return np.full(len(grid), np.nan)
    bins = np.floor(xs_arr / width + 0.5)  # Bins centred on the grid points.
    _, inverse = np.unique(bins, return_inverse=True)
    counts = np.bincount(inverse)
    bin_x = np.bincount(inverse, weights=xs_arr) / counts
    bin_y = np.bincount(inverse, weights=ys_arr) / counts
    values = np.interp(grid, bin_x, bin_y)
    # A grid point counts when its bin reaches the seed's data, so a curve never extends more
    # than half a bin past the seed's first or last step.
    values[(grid < xs_arr.min() - width / 2) | (grid > xs_arr.max() + width / 2)] = np.nan
    return values


# Plotting.


def steps_label(value: float, _pos: object = None) -> str:
    """Tick labels like 200k and 1.5M: raw step counts are hard to read."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def draw_band(ax: Axes, grid: np.ndarray, runs: list[dict], width: float, label: str,
              band_alpha: float, **style) -> bool:
    """Mean line plus a shaded min-max band over the runs' seeds, where any seed has a value."""
    curves = np.stack([on_grid(r["xs"], r["ys"], grid, width) for r in runs])
    if np.isnan(curves).all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Grid points without seeds stay nan.
        mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
    # A lone point would be an invisible line of length zero.
    marker = "o" if np.isfinite(mean).sum() == 1 else None
    (line,) = ax.plot(grid, mean, label=label, marker=marker, **style)
    ax.fill_between(grid, low, high, color=line.get_color(), alpha=band_alpha, linewidth=0)
    return True


def plot_task(ax: Axes, task: str, runs: list[dict], paper: list[dict],
              baselines: dict[str, dict[str, float]], xmax: float | None = None,
              bins: int = 40) -> list[str]:
    """Draw one task's curves onto ax and return the legend labels drawn.

    Our methods: mean over seeds with a min-max band. The paper's Dreamer curve: dashed with a
    lighter band, cut to the same x range. D4PG and A3C: dotted horizontal lines at their final
    scores.
    """
    ours = [r for r in runs if r["task"] == task]
    if xmax is None:
        xmax = max((max(r["xs"]) for r in ours if r["xs"]), default=0.0)
    xmax = max(float(xmax), 1.0)  # A run evaluated only at step 0 still gets an axis.
    width, grid = xmax / bins, np.linspace(0.0, xmax, bins + 1)
    labels = []
    for method in sorted({r["method"] for r in ours}, key=lambda m: (m != DEFAULT_METHOD, m)):
        seeds = [r for r in ours if r["method"] == method]
        label = f"{method} ({len(seeds)} seed{'s' * (len(seeds) != 1)})"
        if draw_band(ax, grid, seeds, width, label, 0.25, linewidth=1.8):
            labels.append(label)
    reference = [r for r in paper if r["task"] == task]
    label = f"{PAPER_NAME} ({len(reference)} seeds)"
    if reference and draw_band(ax, grid, reference, width, label, 0.1, color="black",
                               linestyle="--", linewidth=1.4):
        labels.append(label)
    for key, (label, color) in BASELINES.items():
        if key in baselines.get(task, {}):
            ax.axhline(baselines[task][key], color=color, linestyle=":", linewidth=1.5,
                       label=label)
            labels.append(label)
    ax.set_xlim(0, xmax)
    ax.xaxis.set_major_formatter(FuncFormatter(steps_label))
    ax.set(xlabel="env steps", ylabel="eval return")
    ax.set_title(task, fontsize=10)
    ax.grid(alpha=0.3)
    if labels:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return labels


def save_figure(path: Path, tasks: list[str], runs: list[dict], paper: list[dict],
                baselines: dict, xmax: float | None, bins: int) -> Path:
    """One panel per task, four to a row."""
    cols = min(len(tasks), 4)
    rows = math.ceil(len(tasks) / cols)
    fig = Figure(figsize=(5 * cols, 3.5 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, task in zip(axes, tasks):
        plot_task(ax, task, runs, paper, baselines, xmax, bins)
    for ax in axes[len(tasks):]:
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--indir", nargs="+", required=True, help="logdirs or folders of logdirs")
    parser.add_argument("--outdir", required=True, help="where to write <task>.png and grid.png")
    parser.add_argument("--xmax", type=float, default=None,
                        help="x range in env steps (default: longest run)")
    parser.add_argument("--bins", type=int, default=40, help="number of step bins on the x axis")
    parser.add_argument("--method", default=None,
                        help="method name for all runs (default: from folders, else 'ours')")
    parser.add_argument("--scores", default=str(SCORES),
                        help="folder with dreamer.json and baselines.json")
    args = parser.parse_args(argv)
    if args.bins < 1:
        parser.error("--bins must be at least 1")
    return args


def main(argv: list[str] | None = None) -> list[Path]:
    """Write PLOTS/<task>.png per task and PLOTS/grid.png; return their paths."""
    args = parse_args(argv)
    runs = load_runs(args.indir, args.method)
    # Missing score files only cost the reference lines.
    scores = Path(args.scores)
    paper_file, baselines_file = scores / "dreamer.json", scores / "baselines.json"
    paper = load_paper(paper_file) if paper_file.is_file() else []
    baselines = load_baselines(baselines_file) if baselines_file.is_file() else {}
    if not paper_file.is_file():
        print(f"no paper scores at {paper_file}")
    tasks = sorted({r["task"] for r in runs})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    common, written = (runs, paper, baselines, args.xmax, args.bins), []
    for task in tasks:
        if task not in {r["task"] for r in paper}:
            print(f"no paper curve for {task}")
        name = re.sub(r"[^\w.-]", "_", task)  # Usable as a file name.
        written.append(save_figure(outdir / f"{name}.png", [task], *common))
    return written + [save_figure(outdir / "grid.png", tasks, *common)]


if __name__ == "__main__":
    main()
