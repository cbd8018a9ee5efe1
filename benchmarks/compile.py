"""Compile and step time of the train step: the scans unrolled or as loops,
each as a plain graph and under XLA.

python benchmarks/compile.py [--batch 50 50] [--steps 3] [--timeout 600] [--precision 32]
    [--model image|state] [--forms unrolled loop] [--jit False True] [--alternate ROUNDS]
    [extra dreamer.py flags]

Each combination runs in a fresh process: the trace (tf.function builds the
graph), the first call (graph optimization or XLA compilation, then one step)
and the median of `--steps` more calls. A combination not done after
`--timeout` seconds is stopped, its unfinished phase reported as "> the
seconds it ran". Prints a table and writes the numbers to a JSON file.
dreamer.py picks the loop under --jit True and unrolled scans otherwise;
this script forces each form. With --alternate, the plain-graph steps of
both forms instead, in one process and called in turn, so that load from
other processes falls on both alike.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

START = time.perf_counter()
ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs=2, default=[50, 50],
                        metavar=("SIZE", "LENGTH"))
    parser.add_argument("--steps", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds a combination may take before it is stopped")
    parser.add_argument("--precision", type=int, choices=(16, 32), default=32)
    parser.add_argument("--model", choices=("image", "state"), default="image",
                        help="state: the learning runs' cartpole step (speed.py's MODELS)")
    parser.add_argument("--forms", nargs="+", choices=("unrolled", "loop"),
                        default=["unrolled", "loop"])
    parser.add_argument("--jit", nargs="+", choices=("False", "True"), default=["False", "True"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/compile.json"))
    parser.add_argument("--alternate", type=int, metavar="ROUNDS",
                        help="instead: the plain-graph step of both forms in one process, "
                             "called in turn for ROUNDS rounds (robust to a machine's load)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # form, jit: one run.
    return parser.parse_known_args(argv)


def measure(form: str, jit: str, args: argparse.Namespace, extra: list[str]) -> dict:
    """One combination, in this process."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed  # Imports dreamer, which sets up TensorFlow's environment.

    batch, length = args.batch
    agent = speed.build_agent([*extra, "--jit", jit], args.precision, batch, length, args.model)
    agent.rssm.unroll = form == "unrolled"
    data = speed.synthetic_batch(batch, length, args.model)
    result = dict(form=form, jit=jit == "True", batch=[batch, length], model=args.model,
                  precision=agent.config.precision)
    start = time.perf_counter()
    agent.train.get_concrete_function(data)
    result["trace_s"] = time.perf_counter() - start
    # Each phase is reported as it ends: a run stopped at the timeout still
    # tells what it finished, and when its unfinished phase began.
    report(result)
    start = time.perf_counter()
    agent.train(data)["model_loss"].numpy()
    result["first_call_s"] = time.perf_counter() - start
    report(result)
    times = speed.timed(lambda: agent.train(data)["model_loss"].numpy(), args.steps, 0)
    result.update(step_s=speed.summary(times), times_s=times)
    return result


def report(result: dict) -> None:
    print(json.dumps(dict(result, reported_after_s=time.perf_counter() - START)), flush=True)


def alternate(args: argparse.Namespace, extra: list[str]) -> dict:
    """Both forms' plain-graph steps, one call of each per round, so that
    load from other processes falls on both alike."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed

    batch, length = args.batch
    agent = speed.build_agent([*extra, "--jit", "False"], args.precision, batch, length,
                              args.model)
    data = speed.synthetic_batch(batch, length, args.model)
    steps, first = {}, {}
    for form in args.forms:
        agent.rssm.unroll = form == "unrolled"  # Read while tracing only.
        steps[form] = speed.tf.function(agent._train_step, autograph=False)
        start = time.perf_counter()
        steps[form](data)["model_loss"].numpy()  # Trace, graph optimization, one step.
        first[form] = time.perf_counter() - start
    times = {form: [] for form in steps}
    for _ in range(args.alternate):
        for form, step in steps.items():
            start = time.perf_counter()
            step(data)["model_loss"].numpy()
            times[form].append(time.perf_counter() - start)
    return dict(batch=[batch, length], model=args.model, precision=agent.config.precision,
                first_call_with_trace_s=first, times_s=times,
                median_s={form: statistics.median(t) for form, t in times.items()},
                min_s={form: min(t) for form, t in times.items()})


def run_child(form: str, jit: str, args: argparse.Namespace, extra: list[str]) -> dict:
    argv = [sys.executable, __file__, "--child", form, jit, "--batch", *map(str, args.batch),
            "--steps", str(args.steps), "--precision", str(args.precision),
            "--model", args.model, *extra]
    start = time.perf_counter()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout,
                             check=False, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        lines = (e.stdout or b"").decode().strip().splitlines()
        done = json.loads(lines[-1]) if lines else dict(reported_after_s=0.0)
        # The unfinished phase ran from the last report to the timeout.
        return dict(done, form=form, jit=jit == "True", batch=args.batch, timed_out=True,
                    timeout_s=args.timeout,
                    unfinished_over_s=args.timeout - done["reported_after_s"])
    if out.returncode:
        return dict(form=form, jit=jit == "True", batch=args.batch,
                    error=out.stderr.strip().splitlines()[-1:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def row(r: dict) -> str:
    what = f"{r['form']:<8}  {'XLA' if r['jit'] else 'graph':<5}"
    if "error" in r:
        return f"{what}  error: {r['error']}"
    over = f"> {r.get('unfinished_over_s', 0):.0f}"
    trace = f"{r['trace_s']:.1f}" if "trace_s" in r else over
    first = f"{r['first_call_s']:.1f}" if "first_call_s" in r else over
    first = "-" if "trace_s" not in r else first
    step = f"{r['step_s']['median']:.3f}" if "step_s" in r else over
    step = "-" if "first_call_s" not in r else step
    return f"{what}  {trace:>10}  {first:>10}  {step:>10}"


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child, args, extra)))
        return
    results = dict(cpu=speed_machine(), loadavg_start=os.getloadavg(), extra_flags=extra)
    if args.alternate:
        results.update(alternate(args, extra))
        for form in results["median_s"]:
            print(f"{form:<8}  graph  first call {results['first_call_with_trace_s'][form]:.1f} s "
                  f"(with the trace), step median {results['median_s'][form]:.3f} s, "
                  f"min {results['min_s'][form]:.3f} s over {args.alternate} alternating calls")
    else:
        results.update(steps=args.steps, runs=[])
        print(f"{'form':<8}  {'mode':<5}  {'trace s':>10}  {'first s':>10}  {'step s':>10}",
              flush=True)
        for jit in args.jit:
            for form in args.forms:
                results["runs"].append(run_child(form, jit, args, extra))
                print(row(results["runs"][-1]), flush=True)
    results["loadavg_end"] = os.getloadavg()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load average (1 min) at start, end: {results['loadavg_start'][0]:.1f}, "
          f"{results['loadavg_end'][0]:.1f} on {os.cpu_count()} cores\nWrote {out}")


def speed_machine() -> str:
    info = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    return next((line.split(":", 1)[1].strip() for line in info if "model name" in line),
                "unknown")


if __name__ == "__main__":
    main()
