"""Keras 3 models of Dreamer: RSSM, conv encoder and decoder, dense heads, actor.

Tensors are batch-major (batch, time, ...) unless a docstring says otherwise.
Layers compute in the global Keras dtype policy (bfloat16 or float16 under
mixed precision); every distribution is built from float32 tensors.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import tools

tfd = tfp.distributions
f32 = tf.float32


def swap(x):
    """Batch-major <-> time-major."""
    return tf.experimental.numpy.swapaxes(x, 0, 1)


def dense(units: int, act: str | None = None, name: str | None = None):
    return keras.layers.Dense(units, activation=act, name=name)


def mlp(layers: list, x):
    """Dense layers on the last axis, the leading axes flattened: on a 2D
    input TensorFlow's CPU kernels fuse matmul, bias and activation into one
    op; a 3D input goes through tensordot and runs them as three."""
    lead = tf.shape(x)[:-1]
    x = tf.reshape(x, [-1, x.shape[-1]])
    for layer in layers:
        x = layer(x)
    return tf.reshape(x, tf.concat([lead, [x.shape[-1]]], 0))


class RSSM(keras.layers.Layer):
    """Recurrent state-space model: state = (deter h_t, stoch z_t)."""

    def __init__(self, stoch: int = 30, deter: int = 200, hidden: int = 200, act="elu",
                 unroll: bool = True):
        super().__init__()
        self._stoch, self._deter = stoch, deter
        self.unroll = unroll  # The form of its scans over time (tools.scan).
        self.img_in = dense(hidden, act, "img_in")
        self.cell = keras.layers.GRUCell(deter, name="gru")
        self.img_out = dense(hidden, act, "img_out")
        self.img_dist = dense(2 * stoch, None, "img_dist")
        self.obs_out = dense(hidden, act, "obs_out")
        self.obs_dist = dense(2 * stoch, None, "obs_dist")

    def initial(self, batch_size: int) -> dict:
        zeros = lambda n: tf.zeros([batch_size, n], f32)
        return dict(mean=zeros(self._stoch), std=zeros(self._stoch),
                    stoch=zeros(self._stoch), deter=zeros(self._deter))

    def observe(self, embed, action, state: dict | None = None):
        """Posterior and prior states for a batch of sequences; action[t] is
        the action that led to the observation embedded in embed[t]."""
        if state is None:
            state = self.initial(tf.shape(action)[0])
        post, prior = tools.scan(
            lambda prev, inputs: self.obs_step(prev[0], *inputs),
            (swap(action), swap(embed)), (state, state), self.unroll)
        return tf.nest.map_structure(swap, post), tf.nest.map_structure(swap, prior)

    def imagine(self, action, state: dict | None = None) -> dict:
        """Prior states from recorded actions alone (open loop)."""
        if state is None:
            state = self.initial(tf.shape(action)[0])
        prior = tools.scan(self.img_step, swap(action), state, self.unroll)
        return tf.nest.map_structure(swap, prior)

    def obs_step(self, prev_state: dict, prev_action, embed):
        """Posterior q(z_t | h_t, o_t) on top of the prior step."""
        prior = self.img_step(prev_state, prev_action)
        x = tf.concat([prior["deter"], tf.cast(embed, f32)], -1)
        stats = self.obs_dist(self.obs_out(x))
        return self._state(stats, prior["deter"]), prior

    def img_step(self, prev_state: dict, prev_action) -> dict:
        """Prior p(z_t | h_t), h_t = GRU(h_{t-1}, z_{t-1}, a_{t-1})."""
        x = tf.concat([prev_state["stoch"], tf.cast(prev_action, f32)], -1)
        x = self.img_in(x)
        deter, _ = self.cell(x, [prev_state["deter"]])
        stats = self.img_dist(self.img_out(deter))
        return self._state(stats, tf.cast(deter, f32))

    def _state(self, stats, deter) -> dict:
        mean, std = tf.split(tf.cast(stats, f32), 2, -1)
        std = tf.nn.softplus(std) + 0.1
        stoch = mean + std * tf.random.normal(tf.shape(mean))
        return dict(mean=mean, std=std, stoch=stoch, deter=deter)

    def get_feat(self, state: dict):
        return tf.concat([state["stoch"], state["deter"]], -1)

    def get_dist(self, state: dict) -> tfd.Distribution:
        return tfd.Independent(tfd.Normal(state["mean"], state["std"]), 1)

    def kl_divergence(self, post: dict, prior: dict):
        """KL(posterior || prior), summed over the latent dims, averaged over
        batch and time."""
        return tf.reduce_mean(tfd.kl_divergence(self.get_dist(post), self.get_dist(prior)))


class ConvEncoder(keras.layers.Layer):
    """64x64x3 uint8 images -> 1024 features (four k4 s2 valid convs)."""

    def __init__(self, depth: int = 32, act="relu"):
        super().__init__()
        self.convs = [keras.layers.Conv2D(m * depth, 4, 2, activation=act) for m in (1, 2, 4, 8)]

    def call(self, image):
        x = preprocess(image, self.compute_dtype)
        shape = tf.shape(x)
        x = tf.reshape(x, tf.concat([[-1], shape[-3:]], 0))
        for conv in self.convs:
            x = conv(x)
        return tf.reshape(x, tf.concat([shape[:-3], [np.prod(x.shape[1:])]], 0))


class DenseEncoder(keras.layers.Layer):
    """A state vector -> features (--obs state); with `symlog`, of the vector
    as the decoder reconstructs it."""

    def __init__(self, layers: int = 3, units: int = 400, act="elu", symlog: bool = False):
        super().__init__()
        self.hidden = [dense(units, act) for _ in range(layers)]
        self.symlog = symlog

    def call(self, state):
        x = symlog(tf.cast(state, f32)) if self.symlog else state
        return mlp(self.hidden, tf.cast(x, self.compute_dtype))


class ConvDecoder(keras.layers.Layer):
    """Feature -> Normal(mean image, std) over 64x64x3 (PAPER: decoder, std 1)."""

    def __init__(self, depth: int = 32, act="relu", shape=(64, 64, 3), std: float = 1.0):
        super().__init__()
        self._shape, self._std = tuple(shape), std
        self.linear = dense(32 * depth, None, "linear")
        self.deconvs = [
            VectorDeconv(4 * depth, 5, act),
            keras.layers.Conv2DTranspose(2 * depth, 5, 2, activation=act),
            keras.layers.Conv2DTranspose(depth, 6, 2, activation=act),
            keras.layers.Conv2DTranspose(shape[-1], 6, 2),
        ]

    def call(self, feat) -> tfd.Distribution:
        batch = tf.shape(feat)[:-1]
        x = self.linear(tf.reshape(feat, [-1, feat.shape[-1]]))
        for deconv in self.deconvs:
            x = deconv(x)
        mean = tf.reshape(tf.cast(x, f32), tf.concat([batch, self._shape], 0))
        return tfd.Independent(tfd.Normal(mean, self._std), len(self._shape))


class VectorDeconv(keras.layers.Layer):
    """Conv2DTranspose(filters, kernel) on a 1x1 input (the decoder's first
    layer) as one matmul: each output pixel is a linear map of the input
    vector. Weights start as the transposed conv's would."""

    def __init__(self, filters: int, kernel: int, act="relu"):
        super().__init__()
        self._filters, self._kernel = filters, kernel
        self.act = keras.activations.get(act)
        self.matmul = keras.layers.Dense(kernel * kernel * filters, use_bias=False,
                                         kernel_initializer=self._glorot)

    def _glorot(self, shape, dtype=None):
        """Glorot uniform with the transposed conv's fans, kernel^2 * (inputs + filters)."""
        limit = np.sqrt(6 / (self._kernel**2 * shape[0] + shape[1]))
        return keras.initializers.RandomUniform(-limit, limit)(shape, dtype)

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self._filters,), initializer="zeros", name="bias")

    def call(self, x):
        x = tf.reshape(self.matmul(x), [-1, self._kernel, self._kernel, self._filters])
        return self.act(x + tf.cast(self.bias, x.dtype))


class DenseHead(keras.layers.Layer):
    """MLP on the feature: Normal(mean, std) or Bernoulli. The name (reward,
    value, ...) scopes its ops, so that profiles tell the heads apart."""

    def __init__(self, shape=(), layers: int = 2, units: int = 400, act="elu",
                 dist: str = "normal", std: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self._shape, self._dist, self._std = tuple(shape), dist, std
        self.hidden = [dense(units, act) for _ in range(layers)]
        self.out = dense(int(np.prod(self._shape)))

    def call(self, feat) -> tfd.Distribution:
        x = tf.cast(mlp([*self.hidden, self.out], feat), f32)
        x = tf.reshape(x, tf.concat([tf.shape(feat)[:-1], self._shape], 0))
        if self._dist == "normal":
            return tfd.Independent(tfd.Normal(x, self._std), len(self._shape))
        if self._dist == "binary":
            return tfd.Independent(tfd.Bernoulli(logits=x, dtype=f32), len(self._shape))
        raise ValueError(f"Unknown head distribution '{self._dist}'.")


class Actor(keras.layers.Layer):
    """Action model: tanh-transformed Normal (continuous) or one-hot
    categorical with straight-through samples (discrete)."""

    def __init__(self, size: int, layers: int = 4, units: int = 400, act="elu",
                 dist: str = "tanh_normal", init_std: float = 5.0,
                 min_std: float = 1e-4, mean_scale: float = 5.0):
        super().__init__()
        self._size, self._dist = size, dist
        self._init_std, self._min_std, self._mean_scale = init_std, min_std, mean_scale
        self.hidden = [dense(units, act) for _ in range(layers)]
        out = size if dist == "onehot" else 2 * size
        self.out = dense(out)

    def call(self, feat):
        x = tf.cast(mlp([*self.hidden, self.out], feat), f32)
        if self._dist == "tanh_normal":
            return tanh_normal(x, self._init_std, self._min_std, self._mean_scale)
        if self._dist == "trunc_normal":
            return trunc_normal(x, self._min_std)
        if self._dist == "onehot":
            return tools.OneHotDist(logits=x, dtype=f32)
        raise ValueError(f"Unknown action distribution '{self._dist}'.")


def tanh_normal(x, init_std: float, min_std: float, mean_scale: float) -> tools.SampleDist:
    """Mean squashed to +-mean_scale and std offset so that the initial std is
    init_std: both keep the tanh away from saturation early in training."""
    mean, std = tf.split(x, 2, -1)
    mean = mean_scale * tf.tanh(mean / mean_scale)
    raw_init_std = np.log(np.exp(init_std) - 1)
    std = tf.nn.softplus(std + raw_init_std) + min_std
    # Tanh outside Independent: the bijector then caches the pre-image of its
    # samples, so log_prob of a saturated sample (|a| = 1 in float32) stays finite.
    dist = tfd.Independent(tfd.Normal(mean, std), 1)
    return tools.SampleDist(tfd.TransformedDistribution(dist, tfp.bijectors.Tanh()))


def trunc_normal(x, min_std: float) -> tfd.Distribution:
    """Normal truncated to [-1, 1] (not in the paper; later Dreamer versions):
    unlike the tanh-Normal, a sample at a bound still passes the return's
    gradient to the mean, and the mode is the mean itself. Std in
    (min_std, 2 + min_std)."""
    mean, std = tf.split(x, 2, -1)
    std = 2 * tf.sigmoid(std / 2) + min_std
    return tfd.Independent(tfd.TruncatedNormal(tf.tanh(mean), std, -1.0, 1.0), 1)


def preprocess(image, dtype="float32"):
    """uint8 pixels -> [-0.5, 0.5]: the only place images are scaled."""
    return tf.cast(tf.cast(image, f32) / 255.0 - 0.5, dtype)


def symlog(x):
    """sign(x) log(1 + |x|): near the identity around 0, logarithmic beyond,
    so that velocities of 1-10 do not outweigh the other state dims in a
    unit-variance decoder's loss (--state_symlog)."""
    return tf.sign(x) * tf.math.log1p(tf.abs(x))
