"""Dreamer: learning behaviors by latent imagination (Hafner et al., ICLR 2020).

python dreamer.py --logdir ./logdir/walker --task dmc_walker_walk

Read top to bottom: the configuration, the agent (world model, behavior
learning in imagination, acting), then the loop that collects experience,
trains and evaluates; the run's plumbing (checkpoints, devices) comes last.
"""

import argparse
import collections
import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import itertools
import json
import os
import pathlib
import random
import shutil
import sys
import threading
import time
import uuid

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "egl")
# TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with
# AVX-512 or AMX; they are faster on AVX2 CPUs too (benchmarks/RESULTS.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def quiet_stderr():
    """TensorFlow's C++ start-up logs ignore TF_CPP_MIN_LOG_LEVEL: silence the
    stderr file descriptor while it loads; Python errors still show."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


with quiet_stderr():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()  # Its device probe logs too.

import numpy as np
import yaml

import models
import plotting
import tools
import wrappers

# Configuration.

# One table of defaults, each a --flag: the paper's (PAPER.md; the authors'
# TF2 release where the two differ). Steps are env frames (agent steps x
# action repeat) everywhere.
DEFAULTS = dict(
    # General.
    logdir="", task="dmc_walker_walk", seed=0, steps=int(5e6), eval_every=int(1e4),
    eval_episodes=1, log_every=int(1e3), log_videos=True, precision=16,
    # Environment.
    action_repeat=2, time_limit=1000, prefill=5000, life_done=True, clip_rewards="none",
    grayscale=False,
    # Model.
    deter_size=200, stoch_size=30, num_units=400, cnn_depth=32, dense_act="elu",
    cnn_act="relu", decoder_std=1.0, reward_layers=2, value_layers=3, actor_layers=4,
    pcont=False, free_nats=3.0, kl_scale=1.0, pcont_scale=10.0,
    # Training.
    batch_size=50, batch_length=50, train_every=1000, train_steps=100, pretrain=100,
    model_lr=6e-4, value_lr=8e-5, actor_lr=8e-5, grad_clip=100.0, adam_eps=1e-7,
    # Behavior.
    discount=0.99, disclam=0.95, horizon=15, action_dist="tanh_normal", action_init_std=5.0,
    action_mean_scale=5.0, action_min_std=1e-4, expl="additive_gaussian", expl_amount=0.3,
    expl_decay=0, expl_min=0.0,
    # Not in the paper; these defaults leave the paper's agent as it is.
    obs="image",  # "state": the proprioceptive vector, for runs without pixels.
    state_symlog=False,  # Squashes large state dims (velocities) for encoder and decoder.
    render_fast=False,  # DMC without shadows, reflections, multisampling: other pixels, faster.
    shadow_size=0,  # MuJoCo's shadow map size; 0: the suite's own (2048); 1024 renders faster.
    envs=1,  # Env workers stepping in parallel while collecting.
    async_collect=False,  # Envs step in a thread during the gradient steps, at the paper's ratio.
    jit=False,  # XLA for the whole train step.
    jit_policy=True,  # XLA fuses the batch-1 policy step's many small ops.
    devices=0,  # GPUs that share each batch (0: all visible).
    max_nonfinite=100,  # Skipped non-finite steps in a row before the run stops.
)

# Applied by task prefix before --configs presets (PAPER: discrete actions).
DISCRETE = dict(
    action_repeat=4, time_limit=108000, pcont=True, horizon=10, kl_scale=0.1,
    clip_rewards="tanh", action_dist="onehot", expl="epsilon_greedy",
    expl_amount=0.4, expl_decay=200000, expl_min=0.1)
SUITES = dict(dmc={}, atari=DISCRETE, dmlab=DISCRETE)

# Smaller models for a few CPU cores (--configs NAME ...); RESULTS.md
# gives what each learned and how fast.
CPU_STATE = dict(batch_size=16, num_units=100, deter_size=100)
PRESETS = dict(
    cpu=dict(batch_size=16, num_units=200),
    cpu_state=CPU_STATE,
    # From state, each tuned on one task; neither's flags work on the other's
    # (RESULTS.md). A few dims (cartpole): a sharp decoder and fewer free nats
    # make small state errors cost.
    state_sharp=dict(CPU_STATE, obs="state", precision=32, decoder_std=0.03, free_nats=1.0,
                     action_dist="trunc_normal", action_min_std=0.1, value_lr=3e-4),
    # Many dims with large velocities (walker): squashed, and more gradient steps.
    state_symlog=dict(CPU_STATE, obs="state", precision=32, state_symlog=True, value_lr=3e-4,
                      train_steps=200),
    # Pixels, with no per-task flags. Not the paper's: a faster value model; a
    # truncated-Normal actor with a floor on its spread, whose samples stay off
    # the action bounds; frames without shadows, reflections or multisampling,
    # 2.5x cheaper in software rendering; batch 6, ahead of 12 per second of
    # world-model training (RESULTS.md), so a run takes about 2 h alone on an AVX2 CPU.
    cpu_image=dict(batch_size=6, num_units=200, cnn_depth=16, value_lr=3e-4,
                   action_dist="trunc_normal", action_min_std=0.1, render_fast=True),
    # Every phase of a run (prefill, training, evaluation, logging) in about a minute.
    debug=dict(
        render_fast=True, time_limit=200, prefill=800, train_every=500, train_steps=3, pretrain=3,
        eval_every=2000, log_every=500, batch_size=4, batch_length=10, horizon=5,
        deter_size=32, stoch_size=8, num_units=32, cnn_depth=4, precision=32),
)

CHOICES = dict(
    precision=(16, 32),
    obs=("image", "state"),
    action_dist=("tanh_normal", "trunc_normal", "onehot"),  # trunc_normal: not the paper's.
    expl=("additive_gaussian", "epsilon_greedy", "completely_random", "none"),
    clip_rewards=("none", "tanh"),
)


def fail(message: str, code: int = 2):
    """The one-line error of bad input or a full disk."""
    print(f"dreamer.py: error: {message}", file=sys.stderr)
    sys.exit(code)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        fail(f"{message} (see --help)")


def flag_type(default):
    if isinstance(default, bool):
        def parse_bool(x: str) -> bool:
            if x.lower() in ("true", "1", "yes"):
                return True
            if x.lower() in ("false", "0", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected True or False, got '{x}'")
        return parse_bool
    if isinstance(default, int):
        def parse_int(x: str) -> int:
            value = float(x)  # Accepts 5e6.
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"expected an integer, got '{x}'")
            return int(value)
        return parse_int
    return type(default)


def parse_config(argv: list[str] | None = None) -> argparse.Namespace:
    """Defaults, then the task's suite preset, then --configs in order, then
    the flags given explicitly."""
    parser = OneLineParser(description=__doc__, argument_default=argparse.SUPPRESS)
    parser.add_argument("--configs", nargs="+", default=[], choices=sorted(PRESETS))
    parser.add_argument("--summary", action="store_true", default=False,
                        help="print the summary of the run in --logdir and exit")
    parser.add_argument("--eval_only", action="store_true", default=False,
                        help="evaluate the newest checkpoint in --logdir, even while it "
                             "trains, writing only under --logdir/eval")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key}", type=flag_type(value), choices=CHOICES.get(key),
                            required=key == "logdir")
    explicit = vars(parser.parse_args(argv))
    modes = dict(summary=explicit.pop("summary"), eval_only=explicit.pop("eval_only"))
    presets = [PRESETS[name] for name in explicit.pop("configs")]
    task = explicit.get("task", DEFAULTS["task"])
    config = {**DEFAULTS, **SUITES.get(task.split("_", 1)[0], {})}
    for preset in presets:
        config.update(preset)
    saved = pathlib.Path(explicit["logdir"]).expanduser() / "config.yaml"
    if modes["eval_only"] and saved.exists():  # The models as the run built them.
        config.update({k: v for k, v in yaml.safe_load(saved.read_text()).items()
                       if k in DEFAULTS})
    config.update(explicit)
    config = argparse.Namespace(**config, **modes)
    try:
        wrappers.check_task(config.task)
        wrappers.check_obs(config.task, config.obs)
        check_values(config)
    except ValueError as e:
        parser.error(str(e))
    return config


def check_values(config: argparse.Namespace) -> None:
    positive = ("steps", "envs", "action_repeat", "time_limit", "batch_size",
                "batch_length", "horizon", "deter_size", "stoch_size", "num_units",
                "cnn_depth", "train_every", "eval_every", "eval_episodes", "log_every",
                "decoder_std")
    for key in positive:
        if getattr(config, key) <= 0:
            raise ValueError(f"--{key} must be positive, got {getattr(config, key)}")
    for key in ("devices", "shadow_size"):
        if getattr(config, key) < 0:
            raise ValueError(f"--{key} must be 0 (the default) or positive, "
                             f"got {getattr(config, key)}")
    if config.state_symlog and config.obs != "state":
        raise ValueError("--state_symlog applies to state vectors; add --obs state or drop it")
    if config.async_collect and config.train_steps <= 0:
        raise ValueError("--async_collect paces collection by the gradient steps: "
                         "--train_steps must be positive")
    if config.batch_length < 2:
        raise ValueError("--batch_length must be at least 2")
    if not 0 <= config.disclam <= 1 or not 0 < config.discount <= 1:
        raise ValueError("--disclam must be in [0, 1] and --discount in (0, 1]")


# The agent.


class Dreamer:
    """World model, actor and value model (PAPER), and the policy acting with
    them. With a multi-device `strategy` the variables are mirrored and each
    train step splits the batch across the replicas (see `distribute`)."""

    def __init__(self, config: argparse.Namespace, obs_space: dict, act_space: dict,
                 strategy: tf.distribute.Strategy | None = None):
        self.config = c = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self._key, self._act_space = c.obs, act_space  # Pixels (the paper) or --obs state.
        size = act_space["shape"][0]
        with self.strategy.scope():
            self._make_models(obs_space[self._key][0], size)
            self._build(obs_space, size)
            world = [self.encoder, self.rssm, self.decoder, self.reward] + (
                [self.pcont] if self.pcont else [])
            self.model_opt = Optimizer("model", world, c.model_lr, c.adam_eps, c.grad_clip)
            self.value_opt = Optimizer("value", [self.value], c.value_lr, c.adam_eps, c.grad_clip)
            self.actor_opt = Optimizer("actor", [self.actor], c.actor_lr, c.adam_eps, c.grad_clip)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        parts = dict(encoder=self.encoder, rssm=self.rssm, decoder=self.decoder,
                     reward=self.reward, value=self.value, actor=self.actor)
        if self.pcont:
            parts["pcont"] = self.pcont
        self.checkpoint = tf.train.Checkpoint(
            **parts, model_opt=self.model_opt.adam, value_opt=self.value_opt.adam,
            actor_opt=self.actor_opt.adam, step=self.step)
        self.saved = [v for part in parts.values() for v in part.variables] + [
            v for opt in (self.model_opt, self.value_opt, self.actor_opt)
            for v in opt.adam.variables] + [self.step]
        # Several workers (TF_CONFIG): the first is the chief, the only one that
        # writes checkpoints; each samples its replicas' share of the batch.
        resolver, replicas = self.strategy.cluster_resolver, self.strategy.num_replicas_in_sync
        self.chief = resolver is None or resolver.task_id == 0
        self._local = len(self.strategy.extended.worker_devices) if replicas > 1 else 1
        self.workers = replicas // self._local
        self.local_batch = c.batch_size // self.workers
        # No autograph: the steps branch on the config only, never on a tensor.
        self.train = tf.function(self._train_step, jit_compile=c.jit, autograph=False)
        self.open_loop = tf.function(functools.partial(open_loop_video, self), autograph=False)
        self._policy = tf.function(self._policy_step, jit_compile=c.jit_policy,
                                   reduce_retracing=True, autograph=False)

    def _make_models(self, shape: tuple, size: int) -> None:
        c = self.config
        # XLA compiles a loop once but an unrolled scan once per step; plain
        # graphs keep the unrolled scans (benchmarks/RESULTS.md).
        self.rssm = models.RSSM(c.stoch_size, c.deter_size, c.deter_size, c.dense_act,
                                unroll=not c.jit)
        if self._key == "image":
            self.encoder = models.ConvEncoder(c.cnn_depth, c.cnn_act)
            self.decoder = models.ConvDecoder(c.cnn_depth, c.cnn_act, shape, c.decoder_std)
        else:
            self.encoder = models.DenseEncoder(3, c.num_units, c.dense_act, c.state_symlog)
            self.decoder = models.DenseHead(shape, 3, c.num_units, c.dense_act,
                                            std=c.decoder_std, name="decoder")
        head = functools.partial(models.DenseHead, (), units=c.num_units, act=c.dense_act)
        self.reward = head(layers=c.reward_layers, name="reward")
        self.pcont = head(layers=3, dist="binary", name="pcont") if c.pcont else None
        self.value = head(layers=c.value_layers, name="value")
        self.actor = models.Actor(size, c.actor_layers, c.num_units, c.dense_act, c.action_dist,
                                  c.action_init_std, c.action_min_std, c.action_mean_scale)

    def _build(self, obs_space: dict, size: int) -> None:
        """Creates every variable up front, so optimizers and checkpoints see them."""
        shape, dtype = obs_space[self._key]
        obs = tf.zeros((1, 1) + tuple(shape), dtype)
        post, _ = self.rssm.observe(self.encoder(obs), tf.zeros((1, 1, size)))
        feat = self.rssm.get_feat(post)
        for head in (self.decoder, self.reward, self.value, self.actor, self.pcont):
            if head is not None:
                head(feat)

    # Learning (PAPER: the world model, then behavior in imagination).

    def _train_step(self, data: dict) -> dict:
        """One gradient step of all three optimizers on a batch; metrics are
        averaged over the replicas."""
        metrics = self.strategy.run(self._train, args=(data,))
        return {k: self.strategy.reduce("mean", v, axis=None) for k, v in metrics.items()}

    def _train(self, data: dict) -> dict:
        with tf.GradientTape() as model_tape:
            post, feat, model_loss, metrics = self.world_model_loss(data)
        with tf.GradientTape() as actor_tape:
            imag_feat = self.imagine_ahead(post)
            # One pass of the value model serves both losses: the actor's
            # gradient flows through it into imag_feat, the value loss's into
            # the value model's weights (its tape starts at imag_feat).
            with tf.GradientTape() as value_tape:
                actor_loss, value_loss, behavior = self.behavior_losses(imag_feat)
        metrics.update(**behavior, **self.model_opt(model_tape, model_loss))
        metrics.update(self.actor_opt(actor_tape, actor_loss))
        metrics.update(self.value_opt(value_tape, value_loss))
        dist = self.actor(tf.stop_gradient(feat))  # Diagnostics: a saturating actor.
        metrics["actor_ent"] = tf.reduce_mean(dist.entropy())
        if self.config.action_dist != "onehot":
            saturated = tf.cast(tf.abs(dist.sample()) > 0.99, tf.float32)
            metrics["action_saturation"] = tf.reduce_mean(saturated)
        return metrics

    def world_model_loss(self, data: dict):
        """kl_scale * max(free_nats, KL(posterior || prior)) minus the
        log-likelihoods of observation, reward and discount (PAPER: world-model
        loss). Returns the posterior, its features, the loss and metrics."""
        c = self.config
        post, prior = self.rssm.observe(self.encoder(data[self._key]), data["action"])
        feat = self.rssm.get_feat(post)
        reward = tf.tanh(data["reward"]) if c.clip_rewards == "tanh" else data["reward"]
        likes = {self._key: self.decoder(feat).log_prob(self.decoder_target(data)),
                 "reward": self.reward(feat).log_prob(reward)}
        if self.pcont:
            likes["pcont"] = c.pcont_scale * self.pcont(feat).log_prob(
                c.discount * data["discount"])
        likes = {k: tf.reduce_mean(v) for k, v in likes.items()}
        div = self.rssm.kl_divergence(post, prior)
        loss = c.kl_scale * tf.maximum(div, c.free_nats) - sum(likes.values())
        metrics = dict(model_loss=loss, div=div,
                       prior_ent=tf.reduce_mean(self.rssm.get_dist(prior).entropy()),
                       post_ent=tf.reduce_mean(self.rssm.get_dist(post).entropy()),
                       **{f"{k}_loss": -v for k, v in likes.items()})
        return post, feat, loss, metrics

    def decoder_target(self, data: dict):
        """What the decoder reconstructs: the observation as the encoder sees it."""
        if self._key == "image":
            return models.preprocess(data["image"])
        if self.config.state_symlog:
            return models.symlog(tf.cast(data["state"], tf.float32))
        return data["state"]

    def imagine_ahead(self, post: dict):
        """H prior steps from every posterior state, with actions sampled from
        the actor (PAPER: imagination). Returns the imagined features,
        time-major (H, B * T, feat)."""
        stop = -1 if self.pcont else None  # The last step could be terminal.
        start = {k: tf.stop_gradient(tf.reshape(v[:, :stop], [-1, v.shape[-1]]))
                 for k, v in post.items()}

        def step(prev, _):
            action = self.actor(tf.stop_gradient(self.rssm.get_feat(prev))).sample()
            return self.rssm.img_step(prev, action)

        states = tools.scan(step, tf.range(self.config.horizon), start, self.rssm.unroll)
        return self.rssm.get_feat(states)

    def behavior_losses(self, imag_feat):
        """Actor loss -mean(w * V_lambda), backpropagated through the imagined
        trajectories; value loss: the value model's log-likelihood of the
        stop-gradient V_lambda (PAPER: behavior learning)."""
        value = self.value(imag_feat)
        returns, weights = self.imagined_returns(imag_feat, value.mode())
        actor_loss = -tf.reduce_mean(weights * returns)
        value = value[:-1]  # The states that returns start from.
        value_loss = -tf.reduce_mean(weights * value.log_prob(tf.stop_gradient(returns)))
        return actor_loss, value_loss, dict(
            actor_loss=actor_loss, value_loss=value_loss, imag_return=tf.reduce_mean(returns),
            imag_value=tf.reduce_mean(value.mean()))

    def imagined_returns(self, imag_feat, value):
        """Lambda-returns of imagined trajectories, given the value of their
        states, and the weights w_t: the stop-gradient cumulative product of
        discounts (time-major, H - 1)."""
        c = self.config
        reward = self.reward(imag_feat).mode()
        if self.pcont:
            pcont = self.pcont(imag_feat).mean()
        else:
            pcont = c.discount * tf.ones_like(reward)
        returns = tools.lambda_return(reward[:-1], value[:-1], pcont[:-1], value[-1],
                                      c.disclam)
        weights = tf.math.cumprod(tf.concat([tf.ones_like(pcont[:1]), pcont[:-2]], 0), 0)
        return returns, tf.stop_gradient(weights)

    def distribute(self, batch: dict):
        """A batch of numpy arrays as the train step takes it: split across
        the replicas when there are several; each worker of a multi-worker run
        feeds its own replicas from its own replay (local_batch sequences)."""
        if self.strategy.num_replicas_in_sync == 1:
            return to_tensors(batch)
        size = self.config.batch_size // self.strategy.num_replicas_in_sync

        def split(context):
            start = size * (context.replica_id_in_sync_group % self._local)
            return to_tensors({k: v[start:start + size] for k, v in batch.items()})

        return self.strategy.experimental_distribute_values_from_function(split)

    # Acting.

    def policy(self, obs: dict, state, reset: np.ndarray, training: bool, step: int):
        """Actions for a batch of environments, sampled and explored in
        training, the actor's mode in evaluation; the latent state is zeroed
        where an episode restarts. Returns numpy actions and the new state."""
        if state is None:
            latent = self.rssm.initial(len(reset))
            state = (latent, tf.zeros((len(reset),) + self._act_space["shape"]))
        c = self.config
        amount = tools.schedule(step, c.expl_amount, c.expl_decay, c.expl_min)
        action, latent = self._policy(tf.constant(obs[self._key]), state[0], state[1],
                                      tf.constant(reset, tf.float32), training,
                                      tf.constant(amount, tf.float32))
        return action.numpy(), (latent, action)

    def _policy_step(self, obs, latent, action, reset, training: bool, amount):
        mask = 1.0 - reset[:, None]
        latent = {k: v * mask for k, v in latent.items()}
        latent, _ = self.rssm.obs_step(latent, action * mask, self.encoder(obs))
        dist = self.actor(self.rssm.get_feat(latent))
        if not training:
            return dist.mode(), latent
        return explore(dist.sample(), amount, self.config.expl, self._act_space), latent


def explore(action, amount, kind: str, act_space: dict):
    """Exploration noise of the training policy (PAPER: additive Gaussian for
    continuous actions, epsilon-greedy for discrete ones)."""
    batch, size = tf.shape(action)[0], action.shape[-1]
    if kind == "additive_gaussian":
        return tf.clip_by_value(action + amount * tf.random.normal(tf.shape(action)), -1, 1)
    if kind == "epsilon_greedy":
        pick = tf.random.uniform([batch]) < amount
        return tf.where(pick[:, None], random_actions(batch, size, True), action)
    if kind == "completely_random":
        return random_actions(batch, size, act_space["discrete"])
    return action


def random_actions(batch, size: int, discrete: bool):
    if discrete:
        return tf.one_hot(tf.random.uniform([batch], 0, size, tf.int32), size)
    return tf.random.uniform([batch, size], -1, 1)


def to_tensors(batch: dict) -> dict:
    """Numpy arrays to tensors on the default device (the GPU, if there is one)."""
    return {k: tf.identity(v) for k, v in batch.items()}


def open_loop_video(agent: Dreamer, data: dict, context: int = 5, sequences: int = 6):
    """Video of multi-step predictions (PAPER, figure of video predictions):
    the posterior sees `context` frames, then the prior imagines the rest
    from the recorded actions alone. Rows: truth, model, error shown as
    (model - truth + 1) / 2; sequences side by side. Returns uint8
    (time, 3 * height, sequences * width, channels)."""
    data = {k: v[:sequences] for k, v in data.items()}
    post_feat, prior_feat = open_loop_feat(agent, data, context)
    model = tf.concat([agent.decoder(post_feat).mode(), agent.decoder(prior_feat).mode()], 1)
    model += 0.5
    truth = models.preprocess(data["image"]) + 0.5
    video = tf.concat([truth, model, (model - truth + 1) / 2], 2)
    video = tf.transpose(video, [1, 2, 0, 3, 4])  # time, rows, sequences, width, c
    shape = tf.shape(video)
    video = tf.reshape(video, [shape[0], shape[1], shape[2] * shape[3], shape[4]])
    return tf.cast(tf.clip_by_value(video, 0, 1) * 255, tf.uint8)


def open_loop_feat(agent: Dreamer, data: dict, context: int):
    """Features of the posterior over the first `context` steps and of the
    prior that imagines the rest from the recorded actions alone."""
    post, _ = agent.rssm.observe(agent.encoder(data[agent.config.obs][:, :context]),
                                 data["action"][:, :context])
    last = {k: v[:, -1] for k, v in post.items()}
    prior = agent.rssm.imagine(data["action"][:, context:], last)
    return agent.rssm.get_feat(post), agent.rssm.get_feat(prior)


class Optimizer:
    """Adam over the trainable variables of some models only; clips the
    global gradient norm and skips steps whose gradients are not finite.
    Under float16 compute (GPUs) a dynamic loss scale keeps small gradients
    from underflowing: halved after a non-finite step, doubled after 1000
    finite ones in a row. Under a multi-device strategy the gradients are
    averaged over the replicas first, so clipping and skipping see the
    gradient of the whole batch, as on one device."""

    def __init__(self, name: str, parts: list, lr: float, eps: float, clip: float):
        self._name, self._parts, self._clip = name, parts, clip
        self.adam = keras.optimizers.Adam(lr, epsilon=eps, name=name)
        self.adam.build(self.variables)
        self._scaled = keras.mixed_precision.global_policy().compute_dtype == "float16"
        # Every replica computes the same update of these from all-reduced gradients.
        once = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.scale = tf.Variable(2.0**15 if self._scaled else 1.0, **once)
        self._finite_steps = tf.Variable(0, dtype=tf.int64, **once)

    @property
    def variables(self) -> list:
        return [v for part in self._parts for v in part.trainable_variables]

    def _apply(self, grads, variables) -> None:
        # Keras sums the replicas' gradients; these are already their mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self.adam.apply([g / replicas for g in grads], variables)

    def _apply_if(self, finite, grads, variables) -> None:
        """The update, skipped where `finite` is false. The condition runs in
        cross-replica context: a strategy cannot synchronize replicas (as the
        update does) inside a branch taken in replica context."""
        def cross_replica(strategy, finite, grads):
            finite = strategy.experimental_local_results(finite)[0]  # Same on every replica.
            tf.cond(finite, lambda: strategy.extended.call_for_each_replica(
                self._apply, args=(grads, variables)), lambda: None)

        tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, grads))

    def __call__(self, tape: tf.GradientTape, loss) -> dict:
        variables = self.variables
        if self._scaled:  # Seeding the backward pass with the scale scales the loss.
            grads = tape.gradient(loss, variables, output_gradients=self.scale)
            grads = [g / self.scale for g in grads]
        else:
            grads = tape.gradient(loss, variables)
        grads = tf.distribute.get_replica_context().all_reduce("mean", grads)
        grads, norm = tf.clip_by_global_norm(grads, self._clip)
        finite = tf.math.is_finite(norm)
        self._apply_if(finite, grads, variables)
        metrics = {f"{self._name}_grad_norm": norm,
                   f"{self._name}_nonfinite": 1.0 - tf.cast(finite, tf.float32)}
        if self._scaled:
            self._update_scale(finite)
            metrics[f"{self._name}_loss_scale"] = self.scale.value()
        return metrics

    def _update_scale(self, finite) -> None:
        grow = tf.logical_and(finite, self._finite_steps + 1 >= 1000)
        self._finite_steps.assign(tf.where(finite & ~grow, self._finite_steps + 1, 0))
        factor = tf.where(grow, 2.0, tf.where(finite, 1.0, 0.5))
        self.scale.assign(self.scale * factor)


# Collecting experience.


class Driver:
    """Steps a batch of environment workers with a policy and records
    episodes: the first step holds the reset observation with zero action and
    reward; action[t] is the action that led to obs[t]. A worker that dies is
    restarted and its partial episode dropped."""

    def __init__(self, envs: list, on_episode, on_step=None):
        self._envs = envs
        self._on_episode = on_episode
        self._on_step = on_step
        self._obs = [None] * len(envs)
        self._episodes = [None] * len(envs)
        self._state = None
        self._zero = np.zeros(envs[0].act_space["shape"], np.float32)
        self.restarts = 0

    def reset(self) -> None:
        """Starts every environment on a new episode with a fresh agent state."""
        self._obs = [None] * len(self._envs)
        self._state = None

    def __call__(self, policy, steps: int = 0, episodes: int = 0) -> int:
        """Runs until at least `steps` agent steps (summed over environments)
        and `episodes` finished episodes; returns the agent steps taken."""
        done_steps = done_episodes = 0
        while done_steps < steps or done_episodes < episodes:
            reset = self._reset_finished()
            obs = {k: np.stack([o[k] for o in self._obs]) for k in self._obs[0]}
            action, self._state = policy(obs, self._state, reset)
            promises = [env.step_async(a) for env, a in zip(self._envs, action)]
            for i, promise in enumerate(promises):
                try:
                    obs, _, done, info = promise()
                except wrappers.WorkerCrashed as e:
                    self._restart(i, e)
                    continue
                self._episodes[i].append(self._transition(obs, action[i], info["discount"]))
                self._obs[i] = obs
                if done:
                    self._on_episode({k: np.stack([t[k] for t in self._episodes[i]])
                                      for k in self._episodes[i][0]})
                    self._obs[i] = self._episodes[i] = None
                    done_episodes += 1
            done_steps += len(self._envs)
            if self._on_step:
                self._on_step(len(self._envs))
        return done_steps

    def _reset_finished(self) -> np.ndarray:
        reset = np.array([obs is None for obs in self._obs], np.float32)
        while any(obs is None for obs in self._obs):
            promises = {i: self._envs[i].reset_async()
                        for i, obs in enumerate(self._obs) if obs is None}
            for i, promise in promises.items():
                try:
                    self._obs[i] = promise()
                except wrappers.WorkerCrashed as e:
                    self._restart(i, e)
                    continue
                self._episodes[i] = [self._transition(self._obs[i], self._zero, 1.0)]
        return reset

    def _restart(self, index: int, error: Exception) -> None:
        print(f"{error} Restarting it; its episode in flight is dropped.", file=sys.stderr)
        self._envs[index].restart()
        self._obs[index] = self._episodes[index] = None
        self.restarts += 1

    @staticmethod
    def _transition(obs: dict, action, discount) -> dict:
        return {**obs, "action": np.asarray(action, np.float32),
                "discount": np.float32(discount)}


# The run (PAPER, algorithm 1): prefill, then alternate collecting
# train_every env steps and train_steps gradient steps; evaluate every
# eval_every env steps. --async_collect overlaps the two halves of a round.


def run(config, logdir: pathlib.Path, train_envs: list, test_envs: list,
        strategy: tf.distribute.Strategy | None = None) -> None:
    loop = Loop(config, logdir, train_envs, test_envs)
    if loop.step < config.prefill:
        loop.prefill()
    agent = Dreamer(config, train_envs[0].obs_space, train_envs[0].act_space, strategy)
    loop.start(agent)
    if config.async_collect:
        run_overlapped(loop)
    else:
        while True:
            if loop.should_eval(loop.step) or loop.step >= config.steps:
                loop.evaluate()
            if loop.step >= config.steps:
                break
            loop.collect(config.train_every)
            loop.train(config.train_steps)
            if loop.should_log(loop.step):
                loop.log()
    loop.progress.close()
    print(f"Done: {loop.step} env steps in {logdir}.")


def run_overlapped(loop: "Loop") -> None:
    """--async_collect: the same rounds, but each round's gradient steps run
    while a Collector steps the envs; evaluations and checkpoints come at the
    same round ends, with collection held there."""
    c = loop.config
    if loop.should_eval(loop.step) or loop.step >= c.steps:
        loop.evaluate()
    if loop.step >= c.steps:
        return
    collector = Collector(loop)
    try:
        for done in itertools.count(1):
            loop.train(c.train_steps, collector)
            if loop.should_log(loop.step):
                loop.log()
            last = collector.last_round is not None and done >= collector.last_round
            if last or done == collector.eval_round:
                loop.evaluate()
                if last:
                    break
                collector.resume()
    finally:
        collector.stop()


class Collector:
    """Steps the train envs in a background thread with the current weights
    while the main thread trains. Both count rounds since the start
    (train_every frames, train_steps gradient steps) and wait for each other:
    training never runs ahead of the frames collected, collection never more
    than one round ahead of training. Collection holds at a round end where
    the loop evaluates, and at --steps, so that evaluation and checkpoint see
    one step. An error in the thread is raised again in the main thread."""

    def __init__(self, loop: "Loop"):
        self._loop = loop
        self._every, self._steps = loop.config.train_every, loop.config.train_steps
        self.frames = self.trained = 0  # Env frames collected, gradient steps, since the start.
        self.eval_round = self.last_round = None  # Rounds that end with an evaluation.
        self._error: BaseException | None = None
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._collect, name="collector", daemon=True)
        self._thread.start()

    def _may_collect(self) -> bool:
        held = self.eval_round is not None or self.last_round is not None
        ahead = self.frames * self._steps >= (self.trained + self._steps) * self._every
        return self._stopped or not (held or ahead)

    def _collect(self) -> None:
        loop, policy = self._loop, self._loop.policy(True)
        try:
            while True:
                with self._changed:
                    self._changed.wait_for(self._may_collect)
                    if self._stopped:
                        return
                frames = loop.train_driver(policy, 1) * loop.config.action_repeat
                with self._changed:
                    self._add(frames)
                    self._changed.notify_all()
        except BaseException as e:  # noqa: BLE001 (raised again in the main thread)
            with self._changed:
                self._error = e
                self._changed.notify_all()

    def _add(self, frames: int) -> None:
        """Counts the frames; at a round end, asks the loop whether to
        evaluate there, as the loop without this thread does."""
        loop, before = self._loop, self.frames // self._every
        self.frames += frames
        loop.step += frames
        if loop.step >= loop.config.steps:  # The last round, whole or not, is trained.
            self.last_round = -(-self.frames // self._every)
        elif self.frames // self._every > before and loop.should_eval(loop.step):
            self.eval_round = self.frames // self._every

    def wait_to_train(self) -> None:
        """Blocks until the next gradient step is within the frames collected
        (or collection reached --steps and the round may end)."""
        with self._changed:
            self._changed.wait_for(lambda: self._error or self.last_round is not None or (
                (self.trained + 1) * self._every <= self.frames * self._steps))
            if self._error:
                raise self._error

    def step_trained(self) -> None:
        with self._changed:
            self.trained += 1
            self._changed.notify_all()

    def resume(self) -> None:
        """Lets collection go on past the round end it held at."""
        with self._changed:
            self.eval_round = None
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()


class Loop:
    """The state of a run: its step in env frames, replay, logger, env
    drivers and agent. It resumes from what the logdir holds."""

    def __init__(self, config, logdir: pathlib.Path, train_envs: list, test_envs: list):
        self.config, self.logdir = config, logdir
        self.logger = tools.Logger(logdir)
        self.replay = tools.Replay(logdir / "episodes", config.seed)
        stored = self.replay.steps * config.action_repeat
        records = tools.read_metrics(logdir)
        # Frames of episodes a killed run left unfinished still count: the
        # step never goes back behind what was logged.
        self.step = max([stored] + [m["step"] for m in records])
        print(f"Logdir {logdir}: {self.replay.episodes} episodes, {stored} env steps stored.")
        self.progress = tools.progress_bar(config.steps, self.step)
        # Wall-clock seconds, counted on across resumes.
        self._start = time.time() - max((m.get("wall_time", 0.0) for m in records), default=0.0)
        self.train_driver = Driver(train_envs, self._on_train_episode,
                                   lambda n: self.progress.update(n * config.action_repeat))
        self.test_driver = Driver(test_envs, self._on_test_episode)
        self.obs_space, self.act_space = train_envs[0].obs_space, train_envs[0].act_space
        self.checkpoints = logdir / "checkpoint"
        self._filmed = set()  # Steps whose evaluation has its first episode on video.
        self._nonfinite = 0  # Train steps skipped in a row.
        self._scores = collections.deque()  # Train episodes' return and length, not yet logged.
        self._last_log = (time.time(), self.step)

    def _on_train_episode(self, episode: dict) -> None:
        self.replay.add(tools.save_episode(self.logdir / "episodes", episode))
        # With --async_collect the Collector's thread runs this; the logger is
        # the main thread's alone.
        self._scores.append((episode["reward"].sum(),
                             (len(episode["reward"]) - 1) * self.config.action_repeat))

    def _write(self, step: int) -> None:
        while self._scores:
            score, length = self._scores.popleft()
            self.logger.scalar("train/return", score)
            self.logger.scalar("train/length", length)
        self.logger.write(step)

    def _on_test_episode(self, episode: dict) -> None:
        self.logger.scalar("test/return", episode["reward"].sum())
        self.logger.scalar("test/length", (len(episode["reward"]) - 1) * self.config.action_repeat)
        if self.config.log_videos and "image" in episode and self.step not in self._filmed:
            self._filmed.add(self.step)
            self.logger.video(self.step, "test/video", "test", episode["image"])

    def prefill(self) -> None:
        """Uniform random actions up to `prefill` env steps and at least one
        finished episode, which training needs."""
        c, act_space = self.config, self.act_space
        self.progress.set_description("prefill")
        print(f"Prefill with random actions to {c.prefill} env steps.")
        rng = np.random.default_rng(c.seed)

        def random_policy(obs, state, reset):
            return np.stack([wrappers.random_action(act_space, rng) for _ in reset]), None

        steps = -(-(c.prefill - self.step) // c.action_repeat)
        self.step += self.train_driver(random_policy, steps) * c.action_repeat
        while not self.replay.episodes:
            self.step += self.train_driver(random_policy, 1) * c.action_repeat
        self._write(self.step)

    def start(self, agent: Dreamer) -> None:
        """Restores the newest checkpoint, or pretrains a new agent."""
        c = self.config
        self.agent = agent
        self.spec = {**self.obs_space, "action": (self.act_space["shape"], np.float32),
                     "discount": ((), np.float32)}
        # Batches are sampled and placed on the device ahead of the step.
        self.batches = tools.sample_batches(self.replay, self.spec, agent.local_batch,
                                            c.batch_length, agent.distribute)
        resumed = False
        if agent.chief:
            self.checkpoints.mkdir(exist_ok=True)
            resumed = restore_checkpoint(agent, self.checkpoints)
        try:
            resumed, self.step = agree_workers(agent, resumed, self.step)
        except ValueError as e:
            fail(str(e))
        if resumed:
            print(f"Resumed from checkpoint at step {int(agent.step.numpy())}.")
        else:
            print(f"Pretrain for {c.pretrain} gradient steps.")
            self.train(c.pretrain)
        # A resumed run evaluated at its checkpoint already.
        self.should_eval = tools.Every(c.eval_every, int(agent.step.numpy()) if resumed else None)
        self.should_log = tools.Every(c.log_every)

    def policy(self, training: bool):
        return lambda obs, state, reset: self.agent.policy(obs, state, reset, training, self.step)

    def collect(self, frames: int) -> None:
        self.progress.set_description("collect")
        frames = min(frames, self.config.steps - self.step)
        repeat = self.config.action_repeat
        self.step += self.train_driver(self.policy(True), -(-frames // repeat)) * repeat

    def train(self, steps: int, collector: "Collector | None" = None) -> None:
        """Gradient steps on replayed batches, each within the frames the
        collector has collected if there is one; stops the run after
        max_nonfinite skipped (non-finite) steps in a row."""
        self.progress.set_description("train")
        for _ in range(steps):
            if collector:
                collector.wait_to_train()
            start = time.perf_counter()
            batch = next(self.batches)
            self.logger.scalar("train/data_wait_ms", (time.perf_counter() - start) * 1e3)
            metrics = {k: float(v) for k, v in self.agent.train(batch).items()}
            if collector:
                collector.step_trained()
            for name, value in metrics.items():
                self.logger.scalar(f"train/{name}", value)
            skipped = any(v for k, v in metrics.items() if k.endswith("_nonfinite"))
            self._nonfinite = self._nonfinite + 1 if skipped else 0
            if self._nonfinite >= self.config.max_nonfinite:
                self._write(self.step)
                sys.exit(f"dreamer.py: error: {self._nonfinite} train steps in a row had "
                         "non-finite losses or gradients and were skipped; stopping. The "
                         f"checkpoints in {self.checkpoints} hold the last good weights.")

    def evaluate(self) -> None:
        """Episodes with the actor's mode, then a checkpoint."""
        self.progress.set_description("eval")
        self.test_driver.reset()
        self.test_driver(self.policy(False), episodes=self.config.eval_episodes)
        self.logger.scalar("test/episodes", self.config.eval_episodes)
        if self.agent.chief:  # Its variables are mirrored: writing them takes no collective.
            save_checkpoint(self.agent, self.checkpoints, self.step)
        # Open-loop predictions with each evaluation, not each log line: at 5e6
        # steps a GIF per 1e3 steps would fill the logdir faster than the replay.
        if self.config.log_videos and self.config.obs == "image":
            data = self.replay.sample_batch(6, self.config.batch_length, self.spec)
            video = self.agent.open_loop(to_tensors(data)).numpy()
            self.logger.video(self.step, "agent/openl", "openl", video)
        self.logger.scalar("wall_time", time.time() - self._start)
        self._write(self.step)

    def log(self) -> None:
        # One reading of the step: with --async_collect the Collector counts on.
        now, step, (last_time, last_step) = time.time(), self.step, self._last_log
        self.logger.scalar("fps", (step - last_step) / (now - last_time))
        restarts = self.train_driver.restarts + self.test_driver.restarts
        self.logger.scalar("env_restarts", restarts)
        self.logger.scalar("wall_time", time.time() - self._start)
        self._last_log = (now, step)
        self._write(step)


def main(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    if config.summary:
        print(summarize(pathlib.Path(config.logdir)))
        return
    if config.eval_only:
        evaluate_checkpoint(config)
        return
    try:
        strategy = make_strategy(config)
    except ValueError as e:
        fail(str(e))
    logdir = prepare_logdir(config)
    lock = lock_logdir(logdir)  # noqa: F841 (held until exit)
    tools.remove_temporaries(logdir)  # Left by a killed run; the lock says none is live.
    random.seed(config.seed)
    np.random.seed(config.seed)
    tf.random.set_seed(config.seed)
    config.precision = set_precision(config.precision)  # config.yaml records what runs.

    train_envs = make_envs(config, config.envs, config.seed, train=True)
    test_envs = make_envs(config, 1, config.seed + 1000, train=False)
    try:
        fit_action_space(config, train_envs[0].act_space)
        tools.atomic_write(logdir / "config.yaml",
                           yaml.safe_dump({k: getattr(config, k) for k in DEFAULTS},
                                          sort_keys=False).encode())
        run(config, logdir, train_envs, test_envs, strategy)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        fail(f"disk full writing {e.filename or logdir}; the last checkpoint and all "
             "complete episodes are intact: free space and rerun the same command to resume.",
             code=1)
    finally:
        for env in train_envs + test_envs:
            env.close()
    print(summarize(logdir))


def evaluate_checkpoint(config: argparse.Namespace) -> None:
    """--eval_only: eval_episodes episodes with the actor's mode from the
    newest readable checkpoint; prints their mean and std and writes
    eval/<step>.json and the first episode as eval/<step>.gif. It takes no
    lock and writes nothing else, so the run may go on training meanwhile."""
    logdir = pathlib.Path(config.logdir).expanduser()
    if not list((logdir / "checkpoint").glob("[0-9]*")):
        fail(f"no checkpoint in {logdir / 'checkpoint'}; train first (checkpoints are "
             "written at each evaluation)")
    set_precision(config.precision)
    tf.random.set_seed(config.seed)
    [env] = make_envs(config, 1, config.seed + 1000, train=False)
    try:
        agent = Dreamer(config, env.obs_space, env.act_space)
        if not restore_checkpoint(agent, logdir / "checkpoint", keep_damaged=True):
            fail(f"no readable checkpoint in {logdir / 'checkpoint'}")
        step, episodes = int(agent.step.numpy()), []
        policy = lambda obs, state, reset: agent.policy(obs, state, reset, False, step)
        Driver([env], episodes.append)(policy, episodes=config.eval_episodes)
    finally:
        env.close()
    returns = [float(episode["reward"].sum()) for episode in episodes]
    result = dict(step=step, returns=returns, mean=float(np.mean(returns)),
                  std=float(np.std(returns)))
    (logdir / "eval").mkdir(exist_ok=True)
    tools.atomic_write(logdir / "eval" / f"{step}.json", json.dumps(result).encode())
    if "image" in episodes[0]:
        tools.atomic_write(logdir / "eval" / f"{step}.gif", tools.encode_gif(episodes[0]["image"]))
    print(f"Checkpoint at step {step}: return {result['mean']:.1f} +- {result['std']:.1f} "
          f"over {len(returns)} episodes (actor mode); wrote {logdir / 'eval'}/{step}.*")


def summarize(logdir: pathlib.Path) -> str:
    """Final and best eval return, env steps, wall-clock time, where videos
    and plots are; draws the plot against the paper's curve."""
    metrics = tools.read_metrics(logdir)
    if not metrics:
        return f"No metrics in {logdir} yet."
    evals = [(m["step"], m["test/return"]) for m in metrics if "test/return" in m]
    hours = max((m.get("wall_time", 0) for m in metrics), default=0) / 3600
    lines = [f"Run {logdir}: {metrics[-1]['step']} env steps, {hours:.2f} h wall-clock."]
    if evals:
        best = max(evals, key=lambda e: e[1])
        lines.append(f"Eval return: final {evals[-1][1]:.1f} (step {evals[-1][0]}), "
                     f"best {best[1]:.1f} (step {best[0]}), {len(evals)} evaluations.")
        with contextlib.redirect_stdout(io.StringIO()):
            plots = plotting.main(["--indir", str(logdir), "--outdir", str(logdir / "plots")])
        lines.append(f"Plots: {', '.join(str(p) for p in plots)}")
    videos = logdir / "videos"
    if videos.exists():
        lines.append(f"Videos: {videos}/ (test_<step>.gif, openl_<step>.gif)")
    return "\n".join(lines)


# The run's plumbing: logdir, checkpoints, environments, devices, precision.


def lock_logdir(logdir: pathlib.Path):
    """An exclusive lock, so that two runs never write into one logdir."""
    # Append mode: a refused run must not even truncate the file.
    handle = open(logdir / ".lock", "a")  # noqa: SIM115 (held until the process exits)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"{logdir} is in use by another run")
    return handle


def prepare_logdir(config: argparse.Namespace) -> pathlib.Path:
    logdir = pathlib.Path(config.logdir).expanduser()
    try:
        (logdir / "episodes").mkdir(parents=True, exist_ok=True)
        probe = logdir / f".probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        fail(f"cannot write to {logdir}: {e.strerror}")
    return logdir


def save_checkpoint(agent: Dreamer, directory: pathlib.Path, step: int, keep: int = 2):
    """checkpoint/<step>/: written under a temporary name, then renamed."""
    agent.step.assign(step)
    tmp = directory / f".tmp-{uuid.uuid4().hex}"
    agent.checkpoint.write(str(tmp / "ckpt"))
    target = directory / f"{step:012d}"
    if target.exists():  # Move the old one aside first: a directory rename needs a free name.
        old = directory / f".tmp-{uuid.uuid4().hex}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)
    for old in sorted(directory.glob("[0-9]*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(agent: Dreamer, directory: pathlib.Path,
                       keep_damaged: bool = False) -> bool:
    """Loads the newest checkpoint that reads completely; older ones are the
    fallback for one that is damaged (or, being read beside a live run, was
    just pruned)."""
    for path in sorted(directory.glob("[0-9]*"), reverse=True):
        try:
            agent.checkpoint.read(str(path / "ckpt")).assert_existing_objects_matched()
            return True
        except Exception as e:  # noqa: BLE001 (a damaged checkpoint must not stop the run)
            if keep_damaged:
                continue
            # Kept for inspection under a name that is neither loaded nor pruned.
            print(f"Skipping unreadable checkpoint {path.name}: {type(e).__name__}; "
                  f"moved to corrupt-{path.name}", file=sys.stderr)
            os.replace(path, path.with_name(f"corrupt-{path.name}"))
    return False


def env_ctor(config: argparse.Namespace, train: bool) -> functools.partial:
    """The configured env's constructor, to be given a seed; a lost life ends
    an Atari episode in training only."""
    return functools.partial(
        wrappers.make_env, config.task, config.action_repeat, config.time_limit,
        render_fast=config.render_fast, life_done=config.life_done and train,
        grayscale=config.grayscale, obs=config.obs, shadow_size=config.shadow_size or None)


def make_envs(config: argparse.Namespace, count: int, seed: int, train: bool) -> list:
    """Environment workers, seeded seed, seed + 1, ..."""
    ctor = env_ctor(config, train)
    return [wrappers.Parallel(functools.partial(ctor, seed=seed + i)) for i in range(count)]


def fit_action_space(config: argparse.Namespace, act_space: dict) -> None:
    """Gymnasium tasks reveal their action space only once built: a discrete
    one gets the one-hot actor and epsilon-greedy exploration."""
    if act_space["discrete"] and config.action_dist != "onehot":
        print("Discrete actions: using --action_dist onehot --expl epsilon_greedy.")
        config.action_dist = "onehot"
        if config.expl == "additive_gaussian":
            config.expl = "epsilon_greedy"
    elif not act_space["discrete"] and config.action_dist == "onehot":
        fail(f"--action_dist onehot needs a discrete action space; {config.task} has "
             "continuous actions.")


def agree_workers(agent: Dreamer, resumed: bool, step: int) -> tuple[bool, int]:
    """The workers of a multi-worker run start alike: each takes the
    chief's variables and whether it resumed (only the chief reads
    checkpoints) and the largest step of any, so that all run the same
    train steps and meet at every collective. Returns (resumed, step);
    raises ValueError where the workers' flags differ."""
    if agent.workers == 1:
        return resumed, step
    replicas = agent.strategy.num_replicas_in_sync
    # Flags that differ would part the workers' loops: they would wait for
    # each other's gradient steps forever.
    flags = {k: getattr(agent.config, k) for k in DEFAULTS if k not in ("logdir", "seed")}
    digest = int(hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:12],
                 16)

    def from_chief():
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group
        # float64 holds float32 values and int64 counters exactly: one sum carries the
        # chief's values (the others send zeros) and each replica's step and digest.
        mine = tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in agent.saved]
                         + [tf.constant([float(resumed)], tf.float64)], 0)
        mine = tf.where(tf.equal(replica, 0), mine, tf.zeros_like(mine))
        slot = tf.one_hot(replica, replicas, dtype=tf.float64)
        return context.all_reduce("sum", tf.concat([mine, step * slot, digest * slot], 0))

    total = tf.function(lambda: agent.strategy.run(from_chief), autograph=False)()
    total = agent.strategy.experimental_local_results(total)[0]
    *values, resumed, steps, digests = tf.split(
        total, [int(np.prod(v.shape)) for v in agent.saved] + [1, replicas, replicas])
    if len(set(digests.numpy())) > 1:
        raise ValueError("the workers were started with different flags; only --logdir "
                         "and --seed may differ between them")
    for variable, value in zip(agent.saved, values):
        variable.assign(tf.reshape(tf.cast(value, variable.dtype), variable.shape))
    return bool(resumed), int(tf.reduce_max(steps))


def make_strategy(config: argparse.Namespace) -> tf.distribute.Strategy:
    """MirroredStrategy over the first --devices visible GPUs (0: all), or
    over the CPU's logical devices where there is no GPU; a single device
    runs without one. With TF_CONFIG set, the workers it names form one
    MultiWorkerMirroredStrategy (README: several machines)."""
    if "TF_CONFIG" in os.environ:
        check_tf_config(os.environ["TF_CONFIG"], config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        devices = (tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU"))
        if config.devices > len(devices):
            raise ValueError(f"--devices {config.devices}, but only {len(devices)} "
                             f"{devices[0].device_type} device(s) are visible")
        devices = devices[:config.devices or len(devices)]
        if len(devices) == 1:
            return tf.distribute.get_strategy()
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch_size {config.batch_size} does not split evenly across "
                         f"{replicas} devices")
    if config.jit and replicas > 1:
        raise ValueError("--jit True works on a single device only: pass --devices 1")
    return strategy


def check_tf_config(text: str, config: argparse.Namespace) -> None:
    """TF_CONFIG as dreamer.py runs it: every machine under cluster.worker,
    the first of them the chief, and this machine's index among them."""
    try:
        tf_config = json.loads(text)
        workers, task = tf_config["cluster"]["worker"], tf_config["task"]
        index, jobs = task["index"], sorted(tf_config["cluster"])
    except (ValueError, KeyError, TypeError):
        raise ValueError('TF_CONFIG must be JSON like {"cluster": {"worker": ["host0:port", '
                         '"host1:port"]}, "task": {"type": "worker", "index": 0}}') from None
    if jobs != ["worker"] or task.get("type") != "worker":
        raise ValueError(f"TF_CONFIG: list every machine under cluster.worker only (the first "
                         f"is the chief), got jobs {jobs} and task type {task.get('type')!r}")
    if not isinstance(index, int) or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG: task index {index!r} is not one of the {len(workers)} "
                         "workers' (0 to workers - 1)")
    if config.devices:
        raise ValueError("--devices does not apply with TF_CONFIG: each worker uses all the "
                         "GPUs it sees (limit them with CUDA_VISIBLE_DEVICES)")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX);
    elsewhere TensorFlow emulates it, many times slower than float32."""
    try:
        flags = set(pathlib.Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def set_precision(precision: int) -> int:
    """Mixed precision keeps variables in float32: float16 compute with loss
    scaling on GPUs, bfloat16 on CPUs that have it, float32 on other CPUs.
    Returns the precision the run computes in."""
    policy = "float32"
    if precision == 16:
        if tf.config.list_physical_devices("GPU"):
            policy = "mixed_float16"
        elif cpu_has_bf16():
            policy = "mixed_bfloat16"
        else:
            print("--precision 16: this CPU has no bfloat16 instructions (AVX512-BF16 or "
                  "AMX), which TensorFlow would emulate several times slower than float32; "
                  "computing in float32.")
    keras.mixed_precision.set_dtype_policy(policy)
    return 32 if policy == "float32" else 16


if __name__ == "__main__":
    main()
