"""Speed of the Dreamer implementation on this machine, against the targets.

python benchmarks/speed.py [--quick] [--out benchmarks/results/speed.json]
    [--precision 16|32 ...] [extra dreamer.py flags, e.g. --jit True]

Measures seconds per gradient step (batch 50x50 and 16x50, and the state
step of the learning benchmark: cartpole, `--obs state --configs cpu_state`), the
time each step waits for data when the replay's sampler feeds it, policy
latency (batch 1), the environment step with and without fast rendering, collection
frames/s with one and two env workers, and this machine's matmul GFLOP/s, of
which the gradient step's achieved FLOP rate is given as a fraction. Prints a
table and writes every number to a JSON file. Timings on a shared machine are
noisy: compare ratios taken within one run rather than numbers across runs.
"""

import argparse
import datetime
import functools
import json
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dreamer  # noqa: I001 (first: it sets up TensorFlow's environment before it loads)

import keras
import numpy as np
import tensorflow as tf

import tools
import wrappers

# (comparison, bound, unit); each is checked against a median.
TARGETS = dict(
    grad_50x50=("<=", 2.0, "s"), grad_16x50=("<=", 0.65, "s"), policy=("<=", 1.0, "ms"),
    env_step=("<=", 15.0, "ms"), env_step_fast=("<=", 4.0, "ms"),
    envs_ratio=(">=", 1.3, "x"))

FULL = dict(warmup=2, grad_reps=5, policy_calls=300, env_steps=200, collect_steps=300,
            matmul_n=4096, matmul_reps=5)
QUICK = dict(warmup=1, grad_reps=3, policy_calls=100, env_steps=50, collect_steps=60,
             matmul_n=2048, matmul_reps=3)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and only the 16x50 gradient step")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/speed.json"))
    parser.add_argument("--precision", type=int, nargs="+", choices=(16, 32),
                        default=[16, 32],
                        help="precisions for the 50x50 step; the first one is used "
                             "for 16x50, the policy and the targets")
    parser.add_argument("--trace", help="write a profile of the first image step here, "
                        "for TensorBoard's profile tab (tensorboard --logdir DIR)")
    return parser.parse_known_args(argv)


def timed(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    """Seconds of each of `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], scale: float = 1.0) -> dict:
    return dict(median=statistics.median(times) * scale, min=min(times) * scale,
                count=len(times))


# This machine's compute.


def machine() -> dict:
    info = dict(line.split(":", 1) for line in
                pathlib.Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    # AMX / AVX512-BF16 decide whether bfloat16 is faster than float32 here.
    extensions = sorted(f for f in info.get("flags", "").split()
                        if f.startswith(("amx", "avx512_bf16")))
    return dict(cpu=info.get("model name", "unknown"), cores=os.cpu_count(),
                bf16_extensions=extensions,
                python=platform.python_version(), tensorflow=tf.__version__,
                keras=keras.__version__)


def matmul_gflops(dtype: tf.DType, n: int, reps: int) -> dict:
    """GFLOP/s of an n x n matmul in a tf.function: the practical peak that
    the gradient step is compared with."""
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    # Reducing the whole product keeps it from being pruned and costs n^2 adds.
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    times = timed(lambda: matmul(a, b).numpy(), reps, warmup=1)
    flops = 2 * n ** 3
    return dict(n=n, gflops_median=flops / statistics.median(times) / 1e9,
                gflops_best=flops / min(times) / 1e9)


# The gradient step.


def act_space(actions: int) -> dict:
    return {"shape": (actions,), "discrete": False,
            "low": -np.ones(actions, np.float32), "high": np.ones(actions, np.float32)}


# name: (obs space, act space, dreamer.py flags) of walker from pixels and
# cartpole from state. The spaces are declared rather than asked of an
# environment, since one cannot be built in this process (TensorFlow and Mesa
# crash together).
MODELS = {
    "image": ({"image": ((64, 64, 3), np.uint8)}, act_space(6), []),
    "state": ({"state": ((5,), np.float32)}, act_space(1),
              ["--obs", "state", "--configs", "cpu_state"]),
}


def synthetic_batch(batch: int, length: int, model: str, seed: int = 0) -> dict:
    """Random data of the model's shapes (numpy), batch-major."""
    rng = np.random.default_rng(seed)
    obs_space, act, _ = MODELS[model]
    [(key, (shape, dtype))] = obs_space.items()
    obs = (rng.integers(0, 256, (batch, length, *shape)) if dtype == np.uint8
           else rng.normal(size=(batch, length, *shape)))
    actions = rng.uniform(-1, 1, (batch, length, *act["shape"]))
    return {key: obs.astype(dtype), "action": actions.astype(np.float32),
            "reward": rng.normal(size=(batch, length)).astype(np.float32),
            "discount": np.ones((batch, length), np.float32)}


def build_agent(extra: list[str], precision: int, batch: int = 50, length: int = 50,
                model: str = "image") -> dreamer.Dreamer:
    """A fresh agent; the dtype policy must be set before its layers exist."""
    keras.backend.clear_session()
    obs_space, act, flags = MODELS[model]
    config = dreamer.parse_config(
        ["--logdir", "/tmp/unused", *flags, *extra, "--precision", str(precision),
         "--batch_size", str(batch), "--batch_length", str(length)])
    dreamer.set_precision(config.precision)
    return dreamer.Dreamer(config, obs_space, act)


def op_flops(op: tf.Operation) -> int:
    """Multiply-adds x 2 of the dense and conv ops, from their static shapes."""
    if op.type not in ("MatMul", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"):
        return 0
    out = op.outputs[0].shape
    if op.type == "MatMul":
        a = op.inputs[0].shape
        return 2 * (a[0] if op.get_attr("transpose_a") else a[1]) * out.num_elements()
    if op.type == "Conv2D":  # Kernel (kh, kw, in, out).
        kernel = op.inputs[1].shape
    else:  # Both backprops pair every conv output with a kh x kw x in window.
        kernel = out if op.type == "Conv2DBackpropFilter" else op.inputs[1].shape
        out = op.inputs[2].shape
    return 2 * out.num_elements() * kernel[0] * kernel[1] * kernel[2]


def step_flops(agent: dreamer.Dreamer, batch: dict) -> dict:
    """FLOPs of one gradient step: the forward and backward ops of the traced
    graph, exactly as TensorFlow will run them (the tf.cond-wrapped Adam
    updates, elementwise and negligible, are not counted). Traces the step
    first, so that its first call is timed without the trace."""
    graph = agent.train.get_concrete_function(batch).graph
    if not agent.rssm.unroll:
        # A loop's body is a function outside the graph's op list: count the
        # unrolled form of the same step, which runs the same ops.
        agent.rssm.unroll = True
        try:
            plain = tf.function(agent._train_step, autograph=False)
            graph = plain.get_concrete_function(batch).graph
        finally:
            agent.rssm.unroll = False
    by_type = {}
    for op in graph.get_operations():
        by_type[op.type] = by_type.get(op.type, 0) + op_flops(op)
    return dict(
        flops=float(sum(by_type.values())),
        flops_method="graph_op_shapes: 2 x multiply-adds of every MatMul, Conv2D, "
                     "Conv2DBackpropInput and Conv2DBackpropFilter op in "
                     "agent.train's traced graph (forward + backward), from static shapes",
        flops_by_op={k: float(v) for k, v in by_type.items() if v})


def grad_step(extra: list[str], precision: int, batch: int, length: int,
              settings: dict, model: str = "image",
              trace: str | None = None) -> tuple[dict, dreamer.Dreamer]:
    agent = build_agent(extra, precision, batch, length, model)
    data = dreamer.to_tensors(synthetic_batch(batch, length, model))
    result = dict(batch=[batch, length], precision=precision, model=model,
                  dtype_policy=keras.mixed_precision.global_policy().name,  # What ran.
                  **step_flops(agent, data))
    start = time.perf_counter()
    agent.train(data)["model_loss"].numpy()  # The first call optimizes the graph.
    result["first_call_s"] = time.perf_counter() - start
    times = timed(lambda: agent.train(data)["model_loss"].numpy(), settings["grad_reps"],
                  settings["warmup"] - 1)
    result.update(seconds=summary(times), times_s=times)
    result["achieved_gflops"] = result["flops"] / result["seconds"]["median"] / 1e9
    result["replay_fed"] = replay_fed(agent, batch, length, model, settings)
    if trace:  # TensorBoard's profile tab shows where the step's time goes.
        tf.profiler.experimental.start(trace)
        agent.train(data)["model_loss"].numpy()
        tf.profiler.experimental.stop()
    return result, agent


def replay_fed(agent: dreamer.Dreamer, batch: int, length: int, model: str,
               settings: dict) -> dict:
    """The step fed as in training, by the replay's sampler thread from episodes on
    disk: milliseconds each step waits for its batch (zero when the sampler keeps
    ahead) and seconds per step, waiting included."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="speed-replay-"))
    try:
        for seed in range(4):  # Random frames: the codec's worst case.
            episode = {k: v[0] for k, v in synthetic_batch(1, 2 * length, model, seed).items()}
            tools.save_episode(directory, episode)
        replay = tools.Replay(directory)
        spec = {k: (v.shape[1:], v.dtype) for k, v in episode.items()}
        batches = tools.sample_batches(replay, spec, batch, length, agent.distribute)
        waits, steps = [], []
        for rep in range(settings["warmup"] + settings["grad_reps"]):
            start = time.perf_counter()
            data = next(batches)
            fed = time.perf_counter()
            agent.train(data)["model_loss"].numpy()
            if rep >= settings["warmup"]:
                waits.append(fed - start)
                steps.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return dict(wait_ms=summary(waits, 1e3), seconds=summary(steps))


def policy_latency(agent: dreamer.Dreamer, calls: int) -> dict:
    """Batch-1 acting as in collection: the latent state carried over."""
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (1, 64, 64, 3), np.uint8)}
    state, reset = None, np.ones(1, np.float32)

    def act():
        nonlocal state, reset
        _, state = agent.policy(obs, state, reset, training=True, step=0)
        reset = np.zeros(1, np.float32)

    return summary(timed(act, calls, warmup=20), scale=1e3)


# Environments (always in spawned workers: never build a DMC env here).


def env_ctor(config: argparse.Namespace, render_fast: bool, seed: int = 0):
    """The training env of the run, with render_fast as given."""
    config = argparse.Namespace(**{**vars(config), "render_fast": render_fast})
    return functools.partial(dreamer.env_ctor(config, train=True), seed=seed)


def step_or_reset(env: wrappers.Parallel, rng: np.random.Generator):
    """A promise for one random step; an episode that ends restarts at once,
    so every timed step is valid whatever the time limit."""
    promise = env.step_async(wrappers.random_action(env.act_space, rng))

    def wait():
        if promise()[2]:
            env.reset()

    return wait


def env_step_time(config: argparse.Namespace, render_fast: bool, steps: int) -> dict:
    """env.step through the worker's pipe. The in-worker time is estimated as
    that minus the round trip of an empty Parallel.call (a timing helper
    defined here could not run in the child, which never imports __main__)."""
    env = wrappers.Parallel(env_ctor(config, render_fast))
    try:
        env.reset()
        rng = np.random.default_rng(0)
        step = summary(timed(lambda: step_or_reset(env, rng)(), steps, warmup=5), scale=1e3)
        trip = summary(timed(lambda: env.call(wrappers.imported, "numpy"), steps,
                             warmup=5), scale=1e3)
    finally:
        env.close()
    return dict(step_ms=step, ipc_roundtrip_ms=trip,
                in_worker_estimate_ms=step["median"] - trip["median"])


def collection_fps(config: argparse.Namespace, count: int, steps: int) -> dict:
    """Frames/s of `count` workers stepped concurrently with random actions."""
    envs = [wrappers.Parallel(env_ctor(config, config.render_fast, seed))
            for seed in range(count)]
    rng = np.random.default_rng(0)
    try:
        for promise in [env.reset_async() for env in envs]:
            promise()

        def step_all():  # All workers step at once, as the Driver has them.
            for wait in [step_or_reset(env, rng) for env in envs]:
                wait()

        seconds = sum(timed(step_all, steps, warmup=5))
    finally:
        for env in envs:
            env.close()
    frames = steps * config.action_repeat * count
    return dict(envs=count, agent_steps=steps * count, seconds=seconds, fps=frames / seconds)


# Report.


def check(name: str, value: float) -> tuple[str, str]:
    """The target as text and whether the value meets it."""
    comparison, bound, unit = TARGETS[name]
    met = value <= bound if comparison == "<=" else value >= bound
    return f"{comparison} {bound:g} {unit}", "yes" if met else "NO"


def table_rows(results: dict, first: int) -> list[tuple[str, str, str, str]]:
    """(what, value, target, met) for the table, medians first."""
    rows = []
    for mm in results["matmul"].values():
        rows.append((f"matmul {mm['dtype']} {mm['n']}^2 GFLOP/s (median, best)",
                     f"{mm['gflops_median']:.0f}, {mm['gflops_best']:.0f}", "-", ""))
    for g in results["grad_step"]:
        name = "x".join(map(str, g["batch"]))
        # Targets hold for images at the project's (first) precision; the rest is context.
        target = (check(f"grad_{name}", g["seconds"]["median"])
                  if g["precision"] == first and g["model"] == "image" else ("-", ""))
        name += " state" if g["model"] == "state" else ""
        rows.append((f"grad step {name} p{g['precision']} ({g['dtype_policy']}) s (median, min)",
                     f"{g['seconds']['median']:.3f}, {g['seconds']['min']:.3f}", *target))
        fed = g["replay_fed"]
        rows.append(("  fed by the replay: data wait ms, step s (medians)",
                     f"{fed['wait_ms']['median']:.1f}, {fed['seconds']['median']:.3f}",
                     "0 ms", "yes" if fed["wait_ms"]["median"] < 1 else "NO"))
        rows.append((f"  GFLOP/step, GFLOP/s, fraction of matmul {g['peak_dtype']}",
                     (f"{g['flops'] / 1e9:.0f}, {g['achieved_gflops']:.0f}, "
                      f"{g['fraction_of_matmul']:.2f}"), "-", ""))
    p = results["policy_ms"]
    rows.append(("policy step batch 1 ms (median, min)",
                 f"{p['median']:.2f}, {p['min']:.2f}", *check("policy", p["median"])))
    for key, target in (("render_fast=False", "env_step"), ("render_fast=True", "env_step_fast")):
        e = results["env_step"][key]
        rows.append((f"env step {key} ms, IPC incl. (median, min)",
                     f"{e['step_ms']['median']:.2f}, {e['step_ms']['min']:.2f}",
                     *check(target, e["step_ms"]["median"])))
        rows.append(("  in worker (estimate), IPC round trip ms",
                     f"{e['in_worker_estimate_ms']:.2f}, {e['ipc_roundtrip_ms']['median']:.3f}",
                     "-", ""))
    c = results["collection"]
    rows.append(("collection frames/s envs 1, envs 2",
                 f"{c['envs_1']['fps']:.0f}, {c['envs_2']['fps']:.0f}", "-", ""))
    rows.append(("collection envs 2 vs 1", f"{c['ratio']:.2f}x",
                 *check("envs_ratio", c["ratio"])))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  {'value':>18}  {'target':<10}  met")
    for what, value, target, met in rows:
        print(f"{what:<{width}}  {value:>18}  {target:<10}  {met}")


def run(args: argparse.Namespace, extra: list[str]) -> dict:
    settings = QUICK if args.quick else FULL
    config = dreamer.parse_config(["--logdir", "/tmp/unused", *extra])
    first = args.precision[0]
    results = dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   machine=machine(), quick=args.quick, extra_flags=extra,
                   settings=settings, loadavg_start=os.getloadavg(),
                   targets={k: " ".join(map(str, v)) for k, v in TARGETS.items()})
    print("Matmul peaks.", flush=True)
    results["matmul"] = {
        name: dict(dtype=name, **matmul_gflops(dtype, settings["matmul_n"],
                                               settings["matmul_reps"]))
        for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16))}
    rows = [] if args.quick else [(50, 50, p, "image") for p in args.precision]
    # The state step of the learning runs, then the image one whose agent
    # serves the policy test.
    rows += [(16, 50, first, "state"), (16, 50, first, "image")]
    results["grad_step"] = []
    for batch, length, precision, model in rows:
        print(f"Gradient step {batch}x{length} {model} precision {precision}.", flush=True)
        # The first image row, the one the targets are about, is traced.
        first_image = model == "image" and not any(
            g["model"] == "image" for g in results["grad_step"])
        trace = args.trace if first_image else None
        result, agent = grad_step(extra, precision, batch, length, settings, model, trace)
        # Mixed float16 (GPUs) is compared with the bfloat16 rate, of the same width.
        result["peak_dtype"] = "float32" if result["dtype_policy"] == "float32" else "bfloat16"
        peak = results["matmul"][result["peak_dtype"]]["gflops_median"]
        result["fraction_of_matmul"] = result["achieved_gflops"] / peak
        results["grad_step"].append(result)
        print(f"  median {result['seconds']['median']:.3f} s, "
              f"{result['achieved_gflops']:.0f} GFLOP/s", flush=True)
    print("Policy latency.", flush=True)
    results["policy_ms"] = policy_latency(agent, settings["policy_calls"])
    print(f"  median {results['policy_ms']['median']:.2f} ms", flush=True)
    del agent
    print("Environment steps.", flush=True)
    results["env_step"] = {f"render_fast={fast}": env_step_time(config, fast,
                                                                settings["env_steps"])
                           for fast in (False, True)}
    print("Collection.", flush=True)
    collect = {f"envs_{n}": collection_fps(config, n, settings["collect_steps"])
               for n in (1, 2)}
    collect["ratio"] = collect["envs_2"]["fps"] / collect["envs_1"]["fps"]
    collect["render_fast"] = config.render_fast
    results["collection"] = collect
    # Load from other processes is the main source of noise: judge by it.
    results["loadavg_end"] = os.getloadavg()
    results["table"] = table_rows(results, first)
    return results


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    results = run(args, extra)
    print_table(results["table"])
    start, end = results["loadavg_start"][0], results["loadavg_end"][0]
    print(f"load average (1 min) at start, end: {start:.1f}, {end:.1f} "
          f"on {os.cpu_count()} cores")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nWrote {out}")


if __name__ == "__main__":
    main()
