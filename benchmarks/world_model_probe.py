"""How soon the world model sees small moving objects (cartpole's pole and
cart, pendulum's rod) in pixels: trains the world model alone on episodes of
uniform random actions and prints, every --every gradient steps, the
reconstruction error on held-out episodes over the pixels that move and over
the rest.

python benchmarks/world_model_probe.py --data DIR --out FILE.jsonl --probe_steps 2000 \
    --every 100 -- --task dmc_cartpole_balance --configs cpu_image [dreamer.py flags]

DIR/train holds --episodes training episodes and DIR/test --test_episodes
held-out ones; missing ones are collected first (seeds apart), so variants
that share DIR train on the same data. Moving pixels: those that differ from
the test episode's per-pixel median by more than 0.1 (of the 0-1 range) in
some channel. Columns: the RMSE there of the posterior's reconstruction
("post"), of the prior imagining `horizon` steps from the recorded actions
after 5 observed steps ("open loop"), and of the median frame, a model that
draws no moving object ("no object").
"""

import argparse
import functools
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import dreamer  # noqa: I001 (first: it sets up TensorFlow's environment before it loads)

import numpy as np
import tensorflow as tf
from matplotlib import image

import models
import tools
import wrappers

CONTEXT = 5


def collect(config, directory: pathlib.Path, episodes: int, seed: int) -> None:
    """Tops `directory` up to `episodes` episodes of uniform random actions."""
    directory.mkdir(parents=True, exist_ok=True)
    missing = episodes - len(tools.list_episodes(directory))
    if missing <= 0:
        return
    env = wrappers.Parallel(functools.partial(dreamer.env_ctor(config, train=True),
                                              seed=seed + len(tools.list_episodes(directory))))
    rng = np.random.default_rng(seed)
    try:
        driver = dreamer.Driver([env], lambda episode: tools.save_episode(directory, episode))
        policy = lambda obs, state, reset: (
            np.stack([wrappers.random_action(env.act_space, rng) for _ in reset]), None)
        driver(policy, episodes=missing)
    finally:
        env.close()


def held_out_chunks(directory: pathlib.Path, length: int) -> tuple[dict, np.ndarray]:
    """Every held-out episode cut into chunks of `length` steps, and the mask
    of moving pixels (chunk, time, height, width, 1)."""
    chunks, masks = [], []
    for path in tools.list_episodes(directory):
        episode = tools.load_episode(path)
        image = episode["image"].astype(np.float32) / 255
        moving = (np.abs(image - np.median(image, 0)) > 0.1).any(-1, keepdims=True)
        for start in range(0, len(image) - length + 1, length):
            chunks.append({k: v[start:start + length] for k, v in episode.items()})
            masks.append(moving[start:start + length])
    batch = {k: np.stack([c[k] for c in chunks]) for k in chunks[0]}
    return batch, np.stack(masks)


def rmse(error: np.ndarray, mask: np.ndarray) -> float:
    """Over the masked pixels, all channels."""
    return float(np.sqrt(np.sum(error ** 2 * mask) / (3 * np.sum(mask))))


def evaluate(agent: dreamer.Dreamer, data: dict, moving: np.ndarray, horizon: int,
             frames: pathlib.Path | None = None) -> dict:
    truth = models.preprocess(data["image"]).numpy()
    post, _ = agent.rssm.observe(agent.encoder(data["image"]), data["action"])
    post_model = agent.decoder(agent.rssm.get_feat(post)).mode().numpy()
    short = {k: v[:, :CONTEXT + horizon] for k, v in data.items()}
    _, prior_feat = dreamer.open_loop_feat(agent, short, CONTEXT)
    open_model = agent.decoder(prior_feat).mode().numpy()
    post_error = post_model - truth
    open_error = open_model - truth[:, CONTEXT:CONTEXT + horizon]
    if frames:  # Rows: truth, posterior, open loop; the 5th imagined step of 8 chunks.
        t = CONTEXT + 4
        rows = [np.concatenate(list(x[:8, i]), 1) for x, i in
                ((truth, t), (post_model, t), (open_model, 4))]
        image.imsave(frames, np.clip(np.concatenate(rows, 0) + 0.5, 0, 1))
    median = np.median(truth.reshape(-1, *truth.shape[2:]), 0) - truth
    still = ~moving
    return dict(post_moving=rmse(post_error, moving), post_still=rmse(post_error, still),
                open_moving=rmse(open_error, moving[:, CONTEXT:CONTEXT + horizon]),
                no_object=rmse(median, moving), moving_share=float(moving.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--test_episodes", type=int, default=2)
    parser.add_argument("--probe_steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--frames", type=pathlib.Path, default=None,
                        help="writes FRAMES_<step>.png at these steps: truth, posterior, open loop")
    parser.add_argument("--frames_at", type=int, nargs="*", default=[])
    args, rest = parser.parse_known_args()
    rest = [x for x in rest if x != "--"]
    config = dreamer.parse_config(["--logdir", str(args.data), *rest])
    tf.random.set_seed(config.seed)
    np.random.seed(config.seed)
    config.precision = dreamer.set_precision(config.precision)
    collect(config, args.data / "train", args.episodes, seed=0)
    collect(config, args.data / "test", args.test_episodes, seed=10_000)

    env = wrappers.Parallel(functools.partial(dreamer.env_ctor(config, train=True), seed=0))
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    agent = dreamer.Dreamer(config, obs_space, act_space)
    replay = tools.Replay(args.data / "train", seed=config.seed)
    spec = {k: v for k, v in tools.Stored(tools.list_episodes(args.data / "train")[0]).spec.items()
            if k in ("image", "action", "reward", "discount")}
    test, moving = held_out_chunks(args.data / "test", config.batch_length)
    test = {k: tf.constant(v) for k, v in test.items() if k in spec}

    def model_step(data):
        with tf.GradientTape() as tape:
            _, _, loss, metrics = agent.world_model_loss(data)
        metrics.update(agent.model_opt(tape, loss))
        return metrics

    step_fn = tf.function(model_step, autograph=False)
    flags = " ".join(rest)
    print(f"{flags}: {replay.steps} training steps in {replay.episodes} episodes")
    print("grad steps | wall s | image loss | div | post moving | post still | "
          "open loop moving | no object")
    train_s, metrics = 0.0, {}
    with args.out.open("a") as out:
        for step in range(args.probe_steps + 1):
            frames = args.frames and step in args.frames_at and pathlib.Path(
                f"{args.frames}_{step}.png")
            if step % args.every == 0 or frames:
                row = dict(flags=flags, grad_steps=step, wall_s=round(train_s, 1),
                           **{k: float(metrics.get(k, np.nan)) for k in ("image_loss", "div")},
                           **evaluate(agent, test, moving, config.horizon, frames))
                print(f"{step} | {train_s:.0f} | {row['image_loss']:.1f} | {row['div']:.2f} | "
                      f"{row['post_moving']:.4f} | {row['post_still']:.4f} | "
                      f"{row['open_moving']:.4f} | {row['no_object']:.4f}", flush=True)
                out.write(json.dumps(row) + "\n")
                out.flush()
            if step == args.probe_steps:
                break
            batch = dreamer.to_tensors(replay.sample_batch(
                config.batch_size, config.batch_length, spec))
            start = time.perf_counter()
            metrics = step_fn(batch)
            metrics = {k: v.numpy() for k, v in metrics.items()}
            train_s += time.perf_counter() - start


if __name__ == "__main__":
    main()
