"""How often simple action rules reach a task's reward (environment only).

python benchmarks/exploration.py --task dmc_pendulum_swingup [--episodes 40] [--json out.json]

The world model can only learn a reward that the collected episodes hold. For
a continuous-action task this runs fixed rules from state observations (no
rendering, no TensorFlow) with the training run's action repeat and time
limit, and prints per rule the mean and largest return, the share of
episodes with any reward and the share of agent steps with a reward above
0.1. The rules stand for the agent's stages: uniform random (the prefill),
a random sign every step (the paper's tanh-Normal actor at its initial std
of 5), a constant sign (a saturated actor, as the tanh-Normal actor becomes
on cartpole and pendulum), and a random sign held for k agent steps.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import wrappers


def rules(size: int, rng: np.random.Generator) -> dict:
    def held(k: int):
        def rule(t: int, memory: dict):
            if t % k == 0:
                memory["sign"] = rng.choice([-1.0, 1.0], size)
            return memory["sign"]
        return rule
    return {"uniform random": lambda t, m: rng.uniform(-1, 1, size),
            "random sign per step": lambda t, m: rng.choice([-1.0, 1.0], size),
            "constant +1": lambda t, m: np.ones(size),
            "constant -1": lambda t, m: -np.ones(size),
            **{f"random sign held {k} steps": held(k) for k in (10, 25, 50)}}


def run(env, rule, episodes: int) -> dict:
    returns, rewarded, steps = [], 0, 0
    for _ in range(episodes):
        env.reset()
        total, done, t, memory = 0.0, False, 0, {}
        while not done:
            _, reward, done, _ = env.step(np.asarray(rule(t, memory), np.float32))
            total, t = total + reward, t + 1
            rewarded += reward > 0.1
        returns.append(total)
        steps += t
    return dict(mean=float(np.mean(returns)), max=float(np.max(returns)),
                episodes_with_reward=float(np.mean(np.array(returns) > 0)),
                rewarded_steps=rewarded / steps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="dmc_pendulum_swingup")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--action_repeat", type=int, default=2)
    parser.add_argument("--time_limit", type=int, default=1000, help="env frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        env = wrappers.make_env(args.task, args.action_repeat, args.time_limit, seed=args.seed,
                                obs="state")
    except ValueError as error:
        parser.error(str(error))
    if env.act_space["discrete"]:
        parser.error(f"{args.task} has discrete actions; these rules are for continuous ones")
    rng = np.random.default_rng(args.seed)
    results = {}
    print(f"{args.task}, {args.episodes} episodes per rule")
    print(f"{'rule':26s} {'mean':>6s} {'max':>6s} {'episodes rewarded':>18s} {'steps rewarded':>15s}")
    for name, rule in rules(env.act_space["shape"][0], rng).items():
        row = results[name] = run(env, rule, args.episodes)
        print(f"{name:26s} {row['mean']:6.1f} {row['max']:6.1f} "
              f"{row['episodes_with_reward']:18.0%} {row['rewarded_steps']:15.2%}", flush=True)
    env.close()
    if args.json:
        args.json.write_text(json.dumps(dict(task=args.task, episodes=args.episodes,
                                             rules=results), indent=1))


if __name__ == "__main__":
    main()
