"""What the world model, value head and actor of a run have learned.

python benchmarks/imagination_probe.py --logdir LOGDIR [dreamer.py flags of the run]

From posterior states of replay chunks it prints:
- the model's mean reward per step and the bootstrap value after `horizon`
  imagined steps under the actor and under fixed rules (0, +1, -1, uniform
  random, half the actor's): a saturated actor whose rule the model rates
  above gentler ones points at model or value errors;
- open-loop accuracy: RMSE of the decoded observation and of the reward
  when the prior imagines from recorded actions after 5 observed steps;
- where the replay's reward is sparse (a few rewarded episodes), whether
  the reward head sees it (its mean on every rewarded step against the
  truth, and a linear probe of the states) and whether the value carries it
  back (the value head before each first reward against the return that
  followed);
- for cartpole tasks from state, how often the actor's action and the
  model's gradient of the imagined return with respect to the first action
  have the sign of a linear controller that balances the real task (found
  by random search over gains: 999.97 of 1000 on one episode), over the
  replay states with the pole near upright, and, per 10 stored episodes in
  the order they were collected, how long the pole stayed up.
"""

import functools
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import dreamer  # noqa: I001 (first: it sets up TensorFlow's environment before it loads)

import numpy as np
import tensorflow as tf

import tools
import wrappers

# u = clip(K . (cart position, sin angle, cart velocity, angular velocity)).
CARTPOLE_GAIN = np.array([1.421, 7.261, 0.844, 2.330], np.float32)
CONTEXT = 5


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


def open_loop_rmse(agent: dreamer.Dreamer, data: dict, key: str, horizon: int) -> dict:
    """RMSE per imagined step of the decoded observation (per dimension for
    state vectors) and of the reward, after CONTEXT observed steps."""
    data = {k: v[:, :CONTEXT + horizon] for k, v in data.items()}
    _, feat = dreamer.open_loop_feat(agent, data, CONTEXT)
    steps = feat.shape[1]
    truth = agent.decoder_target({key: data[key][:, CONTEXT:CONTEXT + steps]})
    error = (agent.decoder(feat).mode() - truth).numpy()
    axes = (0,) if key == "state" else (0, 2, 3, 4)
    reward = agent.reward(feat).mode().numpy() - data["reward"][:, CONTEXT:CONTEXT + steps]
    return dict(obs=np.sqrt(np.mean(error ** 2, axis=axes)),
                reward=np.sqrt(np.mean(np.asarray(reward) ** 2, axis=0)),
                obs_std=np.std(truth.numpy().reshape(-1, truth.shape[-1]), 0),
                reward_std=float(np.std(data["reward"])))


def reward_fit(agent: dreamer.Dreamer, directory: pathlib.Path, key: str, discount: float,
               before: int = 15) -> dict | None:
    """The reward and value heads on the posterior states of whole stored
    episodes that hold a reward above 0.1. Reward: its mean prediction on the
    rewarded steps and on the others, against the truth, and whether the
    states carry it at all: a ridge regression from the features, fit on
    every other such episode and scored (correlation) on the rest. Value:
    its mean over the `before` steps ahead of each episode's first reward,
    against the discounted return that followed there. None where fewer
    than two episodes have a reward."""
    true, pred, feats, values, ahead = [], [], [], [], []
    for path in tools.list_episodes(directory):
        episode = tools.load_episode(path)
        reward = episode["reward"]
        if not (reward > 0.1).any():
            continue
        data = {k: tf.constant(episode[k][None]) for k in (key, "action")}
        post, _ = agent.rssm.observe(agent.encoder(data[key]), data["action"])
        feat = agent.rssm.get_feat(post)
        pred.append(agent.reward(feat).mode().numpy()[0])
        feats.append(feat.numpy()[0])
        true.append(reward)
        # With lambda 1 and no bootstrap: the discounted return that followed.
        togo = tools.lambda_return(tf.constant(reward), tf.zeros_like(reward), discount,
                                   tf.constant(0.0), 1.0).numpy()
        first = int(np.argmax(reward > 0.1))
        steps = slice(max(0, first - before), first)
        values.append(agent.value(feat).mode().numpy()[0][steps])
        ahead.append(togo[steps])
    if len(true) < 2:
        return None
    fit = lambda parts: (np.concatenate(parts[0::2]), np.concatenate(parts[1::2]))
    (x_fit, x_test), (y_fit, y_test) = fit(feats), fit(true)
    x_fit = np.c_[x_fit, np.ones(len(x_fit))]
    weights = np.linalg.solve(x_fit.T @ x_fit + np.eye(x_fit.shape[1]), x_fit.T @ y_fit)
    probe = np.c_[x_test, np.ones(len(x_test))] @ weights
    episodes, (true, pred) = len(true), (np.concatenate(true), np.concatenate(pred))
    hit = true > 0.1
    return dict(episodes=episodes, steps=int(hit.sum()), true=float(true[hit].mean()),
                pred=float(pred[hit].mean()), pred_other=float(pred[~hit].mean()),
                corr=float(np.corrcoef(true, pred)[0, 1]),
                probe=float(np.corrcoef(y_test, probe)[0, 1]),
                value_ahead=float(np.concatenate(values).mean()),
                return_ahead=float(np.concatenate(ahead).mean()))


def cartpole_agreement(agent: dreamer.Dreamer, data: dict, start: dict, horizon: int) -> dict:
    """Sign agreement with the balancing controller where the pole is near
    upright (cos > 0.95): of the actor's mode and of d(imagined return)/d(a_0)."""
    state = data["state"].numpy().reshape(-1, 5)  # x, cos, sin, x velocity, angle velocity.
    upright = state[:, 1] > 0.95
    control = np.clip(state[:, [0, 2, 3, 4]] @ CARTPOLE_GAIN, -1, 1)
    actor = agent.actor(agent.rssm.get_feat(start)).mode().numpy()[:, 0]
    first = tf.Variable(tf.zeros((len(state), 1)))
    with tf.GradientTape() as tape:
        latent = agent.rssm.img_step(start, first)
        feats = [agent.rssm.get_feat(latent)]
        for _ in range(horizon - 1):
            latent = agent.rssm.img_step(latent, agent.actor(feats[-1]).mode())
            feats.append(agent.rssm.get_feat(latent))
        feat = tf.stack(feats, 0)
        returns, _ = agent.imagined_returns(feat, agent.value(feat).mode())
        total = tf.reduce_sum(returns[0])
    grad = tape.gradient(total, first).numpy()[:, 0]
    agree = lambda x: float(np.mean(np.sign(x[upright]) == np.sign(control[upright])))
    return dict(upright=float(upright.mean()), actor=agree(actor), gradient=agree(grad))


def cartpole_balance_times(directory: pathlib.Path, group: int = 10) -> list[dict]:
    """Per `group` stored episodes, in the order they were collected: the
    median agent step at which the pole first fell (cos < 0.5; the episode's
    length if it never did) and the mean fraction of steps upright (cos > 0.9).
    A balancing policy raises the first; a swing-up after a fall, only the
    second."""
    falls, upright = [], []
    for path in tools.list_episodes(directory):
        cos = tools.load_episode(path)["state"][:, 1]
        falls.append(int(np.argmax(cos < 0.5)) if (cos < 0.5).any() else len(cos))
        upright.append(float(np.mean(cos > 0.9)))
    return [dict(episodes=(start + 1, min(start + group, len(falls))),
                 first_fall=float(np.median(falls[start:start + group])),
                 upright=float(np.mean(upright[start:start + group])))
            for start in range(0, len(falls), group)]


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
    replay = tools.Replay(logdir / "episodes", seed=1)
    data = {k: tf.constant(v) for k, v in replay.sample_batch(64, config.batch_length).items()}
    post, _ = agent.rssm.observe(agent.encoder(data[config.obs]), data["action"])
    start = {k: tf.reshape(v, [-1, v.shape[-1]]) for k, v in post.items()}
    print(f"step {int(agent.step.numpy())}; replay reward per step "
          f"{float(tf.reduce_mean(data['reward'])):.3f}")
    for name, rule in rules(agent, act_space["shape"][0]).items():
        reward, value = imagine(agent, start, rule, config.horizon)
        print(f"{name:15s} model reward per step {reward:.3f}, value after "
              f"{config.horizon} steps {value:.1f}")
    rmse = open_loop_rmse(agent, data, config.obs, config.horizon)
    np.set_printoptions(precision=3, suppress=True)
    print(f"open loop after {CONTEXT} observed steps; data std {rmse['obs_std']}, "
          f"reward std {rmse['reward_std']:.3f}")
    for t in sorted({0, 4, 9, len(rmse["reward"]) - 1}):
        print(f"  step {t + 1:2d}: observation RMSE {rmse['obs'][t]}, "
              f"reward RMSE {rmse['reward'][t]:.3f}")
    fit = reward_fit(agent, logdir / "episodes", config.obs, config.discount)
    if fit is None:
        print("fewer than two stored episodes have a reward above 0.1")
    else:
        print(f"rewarded steps (reward > 0.1) in {fit['episodes']} episodes: {fit['steps']}, "
              f"true mean {fit['true']:.3f}, reward head {fit['pred']:.3f} there and "
              f"{fit['pred_other']:.3f} elsewhere; correlation {fit['corr']:.2f}, of a linear "
              f"probe of the states on held-out episodes {fit['probe']:.2f}")
        print(f"value head over the 15 steps before each first reward {fit['value_ahead']:.1f}, "
              f"discounted return that followed {fit['return_ahead']:.1f}")
    if config.task.startswith("dmc_cartpole") and config.obs == "state":
        agree = cartpole_agreement(agent, data, start, config.horizon)
        print(f"pole near upright in {agree['upright']:.1%} of replay states; sign agreement "
              f"with a balancing controller there: actor {agree['actor']:.1%}, model "
              f"gradient of the imagined return {agree['gradient']:.1%}")
        for row in cartpole_balance_times(logdir / "episodes"):
            print(f"episodes {row['episodes'][0]}-{row['episodes'][1]}: pole first fell at "
                  f"agent step {row['first_fall']:.0f} (median), upright {row['upright']:.0%} "
                  "of steps")


if __name__ == "__main__":
    main()
