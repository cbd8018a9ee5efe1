"""The Python half of benchmarks/gpu.sh, the prepared GPU check.

python benchmarks/gpu_check.py probe --out probe.json      TensorFlow on the GPU, cuDNN, XLA
python benchmarks/gpu_check.py egl --out egl.json          MuJoCo rendering through EGL
python benchmarks/gpu_check.py speed --out speed.json [--precision 32 16] [--matmul]
    [--policy] [dreamer.py flags, e.g. --jit True]        speed.py's GPU rows
python benchmarks/gpu_check.py choose --speed A.json B.json --train-seconds S
                                                           the fastest measured training flags
python benchmarks/gpu_check.py summary --out summary.json --metrics metrics.jsonl ...

Every JSON file is rewritten after each row, so that a run stopped at its time
limit still leaves what it measured (and which row it was in).
"""

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The flags that make a walker run faster without changing what it learns:
# two env workers (collection 1.44x on the H200) and no GIFs.
TRAIN_FLAGS = ["--envs", "2", "--log_videos", "False"]
# A train step compiled by XLA is chosen only if its first call (the
# compilation) takes at most this share of the training time left.
JIT_COMPILE_SHARE = 0.25


def write_json(path: str | pathlib.Path, data: dict) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n")
    tmp.replace(path)


def read_json(path: str | pathlib.Path | None) -> dict | None:
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, TypeError, ValueError):
        return None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# Checks.


def probe(args: argparse.Namespace) -> int:
    """TensorFlow sees the GPU; a matmul (cuBLAS), a conv (cuDNN) and an
    XLA-compiled function (ptxas, libdevice) run on it and agree with the CPU."""
    import numpy as np

    start = time.perf_counter()
    import tensorflow as tf

    info = dict(date=now(), tensorflow=tf.__version__,
                import_s=time.perf_counter() - start, xla_ok=False)
    build = tf.sysconfig.get_build_info()
    info["built_for"] = {k: build.get(k) for k in ("cuda_version", "cudnn_version")}
    gpus = tf.config.list_physical_devices("GPU")
    info["gpus"] = [g.name for g in gpus]
    if not gpus and args.device == "GPU":
        write_json(args.out, info)
        print("probe: TensorFlow sees no GPU: look for the libraries it could not load above",
              file=sys.stderr)
        return 1
    info["device"] = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    device = f"/{args.device}:0"
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(512, 256)), rng.normal(size=(256, 128))
    image, kernel = rng.normal(size=(4, 16, 16, 8)), rng.normal(size=(3, 3, 8, 16))
    with tf.device("/CPU:0"):
        conv_cpu = tf.nn.conv2d(tf.constant(image, tf.float32), tf.constant(kernel, tf.float32),
                                1, "SAME").numpy().astype(np.float64)
    with tf.device(device):
        product = tf.matmul(tf.constant(a, tf.float32), tf.constant(b, tf.float32))
        conv = tf.nn.conv2d(tf.constant(image, tf.float32), tf.constant(kernel, tf.float32),
                            1, "SAME")
        half = tf.matmul(tf.constant(a, tf.float16), tf.constant(b, tf.float16))
    info["on_device"] = product.device.endswith(device[1:]) and conv.device.endswith(device[1:])

    def error(x, ref):
        return float(np.linalg.norm(np.asarray(x, np.float64) - ref) / np.linalg.norm(ref))

    # TF32 matmuls and float16 land near 1e-3; a wrong library far above.
    info["errors"] = dict(matmul=error(product, a @ b), conv=error(conv, conv_cpu),
                          matmul_float16=error(half, a @ b))
    ok = info["on_device"] and max(info["errors"].values()) < 2e-2
    try:
        fn = tf.function(lambda x, w: tf.nn.softplus(tf.matmul(x, w)) * 2.0, jit_compile=True)
        start = time.perf_counter()
        with tf.device(device):
            out = fn(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()
        info["xla_compile_s"] = time.perf_counter() - start
        info["errors"]["xla"] = error(out, np.logaddexp(0, a @ b) * 2.0)
        info["xla_ok"] = info["errors"]["xla"] < 2e-2
    except Exception as e:  # noqa: BLE001 (any failure of XLA is reported, not fatal)
        info["xla_error"] = f"{type(e).__name__}: {e}"[:2000]
    write_json(args.out, info)
    print(f"probe: {info['device'].get('device_name')} (compute capability "
          f"{info['device'].get('compute_capability')}), TensorFlow {tf.__version__} "
          f"built for CUDA {info['built_for']['cuda_version']}, cuDNN "
          f"{info['built_for']['cudnn_version']}; errors "
          + ", ".join(f"{k} {v:.1e}" for k, v in info["errors"].items())
          + f"; XLA {'works' if info['xla_ok'] else 'FAILS: ' + info.get('xla_error', '')}")
    return 0 if ok else 1


def egl(args: argparse.Namespace) -> int:
    """A walker renders through EGL; which GL renderer it got, and how fast."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import numpy as np
    from dm_control import suite
    from OpenGL import GL

    env = suite.load("walker", "walk", task_kwargs={"random": 0})
    env.reset()
    action = np.zeros(env.action_spec().shape)
    times = []
    for _ in range(60):
        env.step(action)
        start = time.perf_counter()
        frame = env.physics.render(64, 64, camera_id=0)
        times.append(time.perf_counter() - start)
    with env.physics.contexts.gl.make_current() as ctx:
        renderer = ctx.call(GL.glGetString, GL.GL_RENDERER)
    info = dict(date=now(), renderer=renderer.decode() if renderer else None,
                render_ms=statistics.median(times[10:]) * 1e3, frame_mean=float(frame.mean()))
    write_json(args.out, info)
    print(f"egl: renderer {info['renderer']}, {info['render_ms']:.2f} ms per 64x64 frame")
    return 0 if frame.any() else 1


# Speed rows.


def wait_for(path: str | None) -> float:
    """Seconds spent waiting for `path` to exist (gpu.sh creates it when the
    other process's timings are over)."""
    start = time.perf_counter()
    while path and not os.path.exists(path):
        time.sleep(0.2)
    return time.perf_counter() - start


def grad_step(speed, extra: list[str], precision: int, batch: int, length: int,
              settings: dict, hold: str | None) -> tuple[dict, object]:
    """speed.grad_step, with a wait for `hold` between the first call (the
    graph's optimization, or XLA's compilation) and the timed calls, so that
    a compilation may overlap other work but the timings do not."""
    agent = speed.build_agent(extra, precision, batch, length)
    data = speed.synthetic_batch(batch, length, "image")
    result = dict(batch=[batch, length], precision=precision, model="image",
                  dtype_policy=speed.keras.mixed_precision.global_policy().name,
                  **speed.step_flops(agent, data))
    start = time.perf_counter()
    agent.train(data)["model_loss"].numpy()
    result["first_call_s"] = time.perf_counter() - start
    print(f"  first call {result['first_call_s']:.1f} s", flush=True)
    result["held_s"] = wait_for(hold)
    times = speed.timed(lambda: agent.train(data)["model_loss"].numpy(),
                        settings["grad_reps"], settings["warmup"] - 1)
    result.update(seconds=speed.summary(times), times_s=times)
    result["achieved_gflops"] = result["flops"] / result["seconds"]["median"] / 1e9
    return result, agent


def speed_rows(args: argparse.Namespace, extra: list[str]) -> int:
    """speed.py's GPU rows: matmul peaks, the paper-size (50 x 50) gradient
    step at each precision, the batch-1 policy step."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed  # It imports dreamer.py, which sets up TensorFlow.

    tf = speed.tf
    settings = dict(speed.QUICK if args.quick else speed.FULL)
    gpus = tf.config.list_physical_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    results = dict(date=now(), machine=speed.machine(), gpu=device.get("device_name"),
                   extra_flags=extra, settings=settings, note=args.note, matmul={},
                   grad_step=[], in_progress=None)

    def begin(row: str) -> None:
        results["in_progress"] = dict(row=row, started=time.time())
        write_json(args.out, results)
        print(f"[{now()}] {row}", flush=True)

    if args.matmul:
        for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
            begin(f"matmul {name}")
            results["matmul"][name] = dict(dtype=name, **speed.matmul_gflops(
                dtype, settings["matmul_n"], settings["matmul_reps"]))
    agent = None
    for precision in args.precision:
        batch, length = args.batch
        begin(f"gradient step {batch}x{length} precision {precision} {' '.join(extra)}".strip())
        result, built = grad_step(speed, extra, precision, batch, length, settings, args.hold)
        agent = built  # The policy row uses the last one, as speed.py does.
        result["peak_dtype"] = "float32" if result["dtype_policy"] == "float32" else "bfloat16"
        peak = results["matmul"].get(result["peak_dtype"], {}).get("gflops_median")
        result["fraction_of_matmul"] = result["achieved_gflops"] / peak if peak else None
        results["grad_step"].append(result)
        print(f"  median {result['seconds']['median']:.4f} s (waited {result['held_s']:.0f} s "
              "for the timings)", flush=True)
    if args.policy and agent is not None:
        begin("policy step batch 1")
        results["policy_ms"] = speed.policy_latency(agent, settings["policy_calls"])
        results["policy_precision"] = args.precision[-1]
        print(f"  median {results['policy_ms']['median']:.2f} ms", flush=True)
    results["in_progress"] = None
    write_json(args.out, results)
    return 0


def jit_of(flags: list[str]) -> bool:
    """Whether dreamer.py flags turn XLA on for the train step."""
    for i, flag in enumerate(flags[:-1]):
        if flag == "--jit":
            return flags[i + 1].lower() in ("true", "1", "yes")
    return False


def step_rows(paths: list[str]) -> list[dict]:
    """The finished image gradient steps of the speed files (50 x 50 unless
    --batch said otherwise), and the unfinished one of each, if any."""
    rows = []
    for path in paths:
        data = read_json(path)
        if not data:
            continue
        jit = jit_of(data.get("extra_flags", []))
        for g in data.get("grad_step", []):
            if g.get("model", "image") == "image":
                rows.append(dict(precision=g["precision"], jit=jit, done=True, batch=g["batch"],
                                 median_s=g["seconds"]["median"], min_s=g["seconds"]["min"],
                                 first_call_s=g["first_call_s"],
                                 dtype_policy=g.get("dtype_policy")))
        if data.get("in_progress"):
            rows.append(dict(row=data["in_progress"]["row"], jit=jit, done=False,
                             started=data["in_progress"]["started"]))
    return rows


def choose(args: argparse.Namespace) -> int:
    """Prints the training flags: the precision and --jit of the fastest
    measured step; XLA only if its compilation fits the time left."""
    measured = step_rows(args.speed)
    rows = [r for r in measured if r["done"]]
    limit = JIT_COMPILE_SHARE * args.train_seconds
    eligible = [r for r in rows if not r["jit"] or r["first_call_s"] <= limit]
    best = min(eligible, key=lambda r: r["median_s"]) if eligible else None
    # Without measurements: float32 (TF32), the faster on the H200 (RESULTS.md).
    precision, jit = (best["precision"], best["jit"]) if best else (32, False)
    flags = ["--precision", str(precision), "--jit", str(jit), *TRAIN_FLAGS]
    if not args.xla_ok:
        flags += ["--jit_policy", "False"]
    why = dict(rows=measured, chosen=best, compile_limit_s=limit, flags=flags,
               rule="fastest median 50x50 step; with XLA only if its first call "
                    f"<= {JIT_COMPILE_SHARE} x the training seconds left")
    if args.why:
        write_json(args.why, why)
    print(" ".join(flags))
    return 0


# Summary.


def read_metrics(path: str | None) -> list[dict]:
    records = []
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except (OSError, TypeError):
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def throughput(metrics: list[dict]) -> dict:
    """Env steps (frames) per hour from the log records' fps. The first
    record spans prefill, building the agent and pretraining, so the steady
    rate is the median of the later ones; an interval with an evaluation
    in it is slower and counted too."""
    logs = [m for m in metrics if "fps" in m]
    result = dict(log_records=len(logs), last_step=max((m["step"] for m in metrics), default=0))
    steady = [m["fps"] for m in logs[1:]]
    if steady:
        fps = statistics.median(steady)
        result.update(fps_median=fps, env_steps_per_hour=fps * 3600,
                      hours_per_1e6_env_steps=1e6 / (fps * 3600), fps_intervals=len(steady))
    timed = [m for m in logs if "wall_time" in m]
    if len(timed) >= 2 and timed[-1]["wall_time"] > timed[0]["wall_time"]:
        rate = ((timed[-1]["step"] - timed[0]["step"])
                / (timed[-1]["wall_time"] - timed[0]["wall_time"]))
        result["env_steps_per_hour_overall"] = rate * 3600
        result["overall_span_steps"] = [timed[0]["step"], timed[-1]["step"]]
    result["eval_returns"] = [[m["step"], m["test/return"]] for m in metrics
                              if "test/return" in m]
    result["train_returns"] = [[m["step"], m["train/return"]] for m in metrics
                               if "train/return" in m][-5:]
    return result


def read_stages(path: str | None) -> dict:
    """name -> [seconds, end time] from gpu.sh's stages file."""
    stages = {}
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except (OSError, TypeError):
        return stages
    for line in lines:
        parts = line.split()
        if len(parts) >= 2:
            stages[parts[0]] = [int(parts[1]), *(int(p) for p in parts[2:3])]
    return stages


def code_version() -> dict:
    """The commit, where the tree has git, and the git blob ids of the code,
    which `git log --find-object=ID` finds wherever it does not."""
    version = {}
    try:
        version["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version["commit"] = None
    for name in ("dreamer.py", "models.py", "tools.py", "wrappers.py"):
        data = (ROOT / name).read_bytes()
        version[name] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return version


def summary(args: argparse.Namespace) -> int:
    stages = read_stages(args.stages)
    speed_end = {0: stages.get("speed_nojit", [0, 0])[-1],
                 1: stages.get("speed_jit", [0, 0])[-1]}
    rows = step_rows(args.speed)
    for r in rows:  # How long an unfinished row ran before its time was up.
        if not r["done"] and speed_end[int(r["jit"])]:
            r["ran_s"] = speed_end[int(r["jit"])] - r["started"]
    files = [read_json(p) or {} for p in args.speed]
    probe_info, choice = read_json(args.probe) or {}, read_json(args.choice) or {}
    out = dict(
        date=now(), card=args.card, minutes=args.minutes, code=code_version(),
        tensorflow=probe_info.get("tensorflow"), built_for=probe_info.get("built_for"),
        device=probe_info.get("device"), probe_errors=probe_info.get("errors"),
        xla_ok=probe_info.get("xla_ok"), xla_error=probe_info.get("xla_error"),
        egl=read_json(args.egl), stages=stages,
        matmul={k: v.get("gflops_median") for f in files for k, v in f.get("matmul", {}).items()},
        grad_step=rows, policy_ms=(files[0].get("policy_ms") if files else None),
        train_flags=args.train_flags.split(), choice=choice.get("chosen"),
        training=throughput(read_metrics(args.metrics)))
    write_json(args.out, out)
    print(f"\nGPU check, {out['card']}, {out['date']}")
    for r in rows:
        what = f"grad step {'x'.join(map(str, r.get('batch', [])))} p{r.get('precision', '?')}"
        what += f" jit {r['jit']}"
        if r["done"]:
            print(f"  {what}: median {r['median_s']:.4f} s (min {r['min_s']:.4f}), "
                  f"first call {r['first_call_s']:.1f} s")
        else:
            ran = f"{r['ran_s']:.0f} s" if "ran_s" in r else "its time limit"
            print(f"  {r['row']} (jit {r['jit']}): unfinished after {ran}")
    if out["policy_ms"]:
        print(f"  policy step: median {out['policy_ms']['median']:.2f} ms")
    t = out["training"]
    print(f"  training ({' '.join(out['train_flags'])}): {t['last_step']} env steps; "
          + (f"{t['env_steps_per_hour']:.0f} env steps/h ({t['hours_per_1e6_env_steps']:.2f} h "
             f"per 1e6) over {t['fps_intervals']} log intervals"
             if "env_steps_per_hour" in t else "too short for a rate"))
    print(f"  eval returns: {t['eval_returns']}")
    print(f"  stages (s): {' '.join(f'{k} {v[0]}' for k, v in stages.items())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("probe", "egl"):
        commands.add_parser(name).add_argument("--out", required=True)
    commands.choices["probe"].add_argument(
        "--device", choices=("GPU", "CPU"), default="GPU", help="CPU: to try the probe itself")
    p = commands.add_parser("speed")
    p.add_argument("--out", required=True)
    p.add_argument("--precision", type=int, nargs="+", choices=(16, 32), default=[32, 16])
    p.add_argument("--matmul", action="store_true", help="the float32 and bfloat16 peaks too")
    p.add_argument("--policy", action="store_true", help="the batch-1 policy step too")
    p.add_argument("--batch", type=int, nargs=2, default=[50, 50], metavar=("SIZE", "LENGTH"),
                   help="the gradient step's batch (the paper's: 50 50)")
    p.add_argument("--quick", action="store_true", help="speed.py's quick repetitions")
    p.add_argument("--hold", help="before each step's timed calls, wait for this file")
    p.add_argument("--note", help="a line about the conditions, kept in the JSON")
    p = commands.add_parser("choose")
    p.add_argument("--speed", nargs="+", default=[])
    p.add_argument("--train-seconds", type=float, required=True)
    p.add_argument("--xla-ok", type=int, default=1)
    p.add_argument("--why", help="write the rows and the choice here")
    p = commands.add_parser("summary")
    p.add_argument("--out", required=True)
    p.add_argument("--card", default="unknown")
    p.add_argument("--minutes", type=float)
    p.add_argument("--metrics")
    p.add_argument("--speed", nargs="+", default=[])
    for name in ("--probe", "--egl", "--choice", "--stages"):
        p.add_argument(name)
    p.add_argument("--train-flags", default="")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "speed":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    commands = dict(probe=probe, egl=egl, choose=choose, summary=summary)
    if args.command == "speed":
        return speed_rows(args, extra)
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
