"""What the world model and value head of a run think of simple action rules.

python benchmarks/imagination_probe.py --logdir LOGDIR [dreamer.py flags of the run]

From posterior states of replay chunks, imagines `horizon` steps with the
actor's actions and with fixed rules (0, +1, -1, uniform random, half the
actor's), and prints the model's mean reward per step and the bootstrap
value at the end. A saturated actor whose rule the model rates above
gentler ones points at model or value errors rather than at the actor.
"""

import functools
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
import tensorflow as tf

import dreamer
import tools
import wrappers


def rules(agent: dreamer.Dreamer, size: int) -> dict:
    actor = lambda state: agent.actor(agent.rssm.get_feat(state)).sample()
    const = lambda value: lambda state: value * tf.ones((state["deter"].shape[0], size))
    return {"actor": actor, "half actor": lambda state: 0.5 * actor(state),
            "constant 0": const(0.0), "constant +1": const(1.0), "constant -1": const(-1.0),
            "uniform random": lambda state: tf.random.uniform((state["deter"].shape[0], size),
                                                              -1, 1)}


def imagine(agent: dreamer.Dreamer, start: dict, rule, horizon: int) -> tuple[float, float]:
    state, rewards = start, []
    for _ in range(horizon):
        state = agent.rssm.img_step(state, rule(state))
        rewards.append(agent.reward(agent.rssm.get_feat(state)).mode())
    value = agent.value(agent.rssm.get_feat(state)).mode()
    return float(tf.reduce_mean(tf.stack(rewards))), float(tf.reduce_mean(value))


def main(argv: list[str] | None = None) -> None:
    config = dreamer.parse_config(argv)
    logdir = pathlib.Path(config.logdir)
    dreamer.set_precision(config.precision)
    env = wrappers.Parallel(functools.partial(
        wrappers.make_env, config.task, config.action_repeat, config.time_limit, obs=config.obs))
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    agent = dreamer.Dreamer(config, obs_space, act_space)
    if not dreamer.restore_checkpoint(agent, logdir / "checkpoint"):
        sys.exit(f"imagination_probe.py: error: no checkpoint in {logdir}")
    replay = tools.Replay(logdir / "episodes", cache=config.batch_size, seed=1)
    chunks = [replay.sample(config.batch_length) for _ in range(config.batch_size)]
    data = {k: tf.constant(np.stack([c[k] for c in chunks])) for k in chunks[0]}
    post, _ = agent.rssm.observe(agent.encoder(data[config.obs]), data["action"])
    start = {k: tf.reshape(v, [-1, v.shape[-1]]) for k, v in post.items()}
    print(f"step {int(agent.step.numpy())}; replay reward per step "
          f"{float(tf.reduce_mean(data['reward'])):.3f}")
    for name, rule in rules(agent, act_space["shape"][0]).items():
        reward, value = imagine(agent, start, rule, config.horizon)
        print(f"{name:15s} model reward per step {reward:.3f}, value after "
              f"{config.horizon} steps {value:.1f}")


if __name__ == "__main__":
    main()
