import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import tools


def actor_dist(mean_raw, std_raw, init_std=5.0):
    x = tf.concat([tf.constant(mean_raw, tf.float32), tf.constant(std_raw, tf.float32)], -1)
    return models.tanh_normal(x, init_std, 1e-4, 5.0)


def test_tanh_normal_log_prob_is_change_of_variables():
    mean_raw = np.array([[0.3, -1.0], [2.0, 0.1]])
    std_raw = np.array([[0.0, 0.5], [-1.0, 0.2]])
    dist = actor_dist(mean_raw, std_raw)
    action = np.array([[0.5, -0.2], [0.9, 0.0]])
    mean = 5 * np.tanh(mean_raw / 5)
    std = np.log1p(np.exp(std_raw + np.log(np.exp(5.0) - 1))) + 1e-4
    x = np.arctanh(action)
    normal = -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    want = (normal - np.log(1 - action ** 2)).sum(-1)
    got = dist.log_prob(tf.constant(action, tf.float32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_tanh_normal_mode_per_batch_element():
    tf.random.set_seed(0)
    # Two batch elements with opposite means and a small std: a mode picked
    # over the whole batch instead of per element would give one sign to both.
    mean_raw = np.array([[1.0, -0.5], [-1.0, 0.5]])
    dist = actor_dist(mean_raw, np.full((2, 2), -30.0), init_std=0.05)
    mode = dist.mode().numpy()
    assert mode.shape == (2, 2)
    np.testing.assert_allclose(mode, np.tanh(5 * np.tanh(mean_raw / 5)), atol=0.05)
    entropy = dist.entropy().numpy()
    assert entropy.shape == (2,) and np.isfinite(entropy).all()


def test_trunc_normal_mode_bounds_and_gradient_at_the_bound():
    mean_raw = tf.Variable([[3.0, -0.4]])  # tanh(3) = 0.995: near the bound.
    with tf.GradientTape() as tape:
        dist = models.trunc_normal(tf.concat([mean_raw, tf.zeros((1, 2))], -1), 0.1)
        sample = dist.sample(1000, seed=1)
        loss = tf.reduce_mean(sample)
    np.testing.assert_allclose(dist.mode().numpy(), np.tanh([[3.0, -0.4]]), rtol=1e-6)
    assert np.abs(sample.numpy()).max() <= 1.0
    assert dist.entropy().shape == (1,) and np.isfinite(dist.log_prob(sample).numpy()).all()
    # The return's gradient reaches the mean even with most samples near +1
    # (a tanh-Normal's would be close to zero there).
    grad = tape.gradient(loss, mean_raw).numpy()
    assert grad[0, 0] > 1e-3 and grad[0, 1] > 1e-2


def test_saturated_samples_have_finite_log_prob():
    dist = actor_dist(np.zeros((64, 6)), np.zeros((64, 6)))  # std 5: many |a| = 1.
    sample = dist.sample(10)
    assert np.isfinite(dist.log_prob(sample).numpy()).all()


def test_onehot_straight_through():
    logits = tf.Variable([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    weights = tf.constant([1.0, 2.0, 3.0])
    with tf.GradientTape() as tape:
        sample = tools.OneHotDist(logits=logits).sample()
        loss = tf.reduce_sum(sample * weights)
    sample = sample.numpy()
    np.testing.assert_array_equal(sample.sum(-1), [1, 1])
    assert set(np.unique(sample)) <= {0.0, 1.0}
    grad = tape.gradient(loss, logits).numpy()
    assert np.abs(grad).sum() > 0
    mode = tools.OneHotDist(logits=logits).mode().numpy()
    np.testing.assert_array_equal(mode[0], [0, 0, 1])
    # Exactly one-hot, whatever the probabilities (1 + p - p can round off 1).
    many = tools.OneHotDist(logits=tf.random.normal((1000, 18), seed=4)).sample().numpy()
    assert set(np.unique(many)) == {0.0, 1.0} and (many.sum(-1) == 1).all()


@pytest.fixture(scope="module")
def rssm():
    layer = models.RSSM(stoch=5, deter=7, hidden=9)
    return layer


def test_rssm_shapes(rssm):
    batch, time, embed_size, action_size = 3, 4, 11, 2
    embed = tf.random.normal((batch, time, embed_size))
    action = tf.random.normal((batch, time, action_size))
    post, prior = rssm.observe(embed, action)
    for state in (post, prior):
        assert state["stoch"].shape == (batch, time, 5)
        assert state["mean"].shape == (batch, time, 5)
        assert state["deter"].shape == (batch, time, 7)
        assert (state["std"].numpy() > 0.1).all()
    assert rssm.get_feat(post).shape == (batch, time, 12)
    imagined = rssm.imagine(action)
    assert imagined["stoch"].shape == (batch, time, 5)
    state = rssm.initial(batch)
    post_step, prior_step = rssm.obs_step(state, action[:, 0], embed[:, 0])
    assert post_step["deter"].shape == (batch, 7)
    # Posterior and prior share the deterministic state of a step.
    np.testing.assert_allclose(post_step["deter"], prior_step["deter"])
    assert rssm.img_step(state, action[:, 0])["stoch"].shape == (batch, 5)


def test_kl_divergence_sums_dims_and_averages_batch_and_time(rssm):
    zeros, ones = tf.zeros((2, 3, 5)), tf.ones((2, 3, 5))
    post = dict(mean=zeros, std=ones, stoch=zeros, deter=tf.zeros((2, 3, 7)))
    prior = dict(mean=ones, std=ones, stoch=zeros, deter=tf.zeros((2, 3, 7)))
    assert float(rssm.kl_divergence(post, prior)) == pytest.approx(2.5)  # 5 x (1 - 0)^2 / 2.
    prior["mean"] = tf.concat([ones[:1], 2 * ones[1:]], 0)  # 2.5 and 10 nats.
    assert float(rssm.kl_divergence(post, prior)) == pytest.approx(6.25)


def test_encoder_decoder_shapes():
    encoder, decoder = models.ConvEncoder(4), models.ConvDecoder(4)
    image = tf.zeros((2, 3, 64, 64, 3), tf.uint8)
    embed = encoder(image)
    assert embed.shape == (2, 3, 32 * 4)
    dist = decoder(tf.zeros((2, 3, 10)))
    assert dist.mean().shape == (2, 3, 64, 64, 3)
    assert dist.log_prob(tf.zeros((2, 3, 64, 64, 3))).shape == (2, 3)


def test_vector_deconv_is_the_transposed_conv_on_a_1x1_input():
    deconv = keras.layers.Conv2DTranspose(7, 5, 2, activation="relu")
    vector = models.VectorDeconv(7, 5, "relu")
    x = tf.random.normal((3, 11))
    deconv(tf.reshape(x, (3, 1, 1, 11)))  # Builds the weights of both.
    vector(x)
    # Conv2DTranspose kernel: (k, k, filters, in) -> dense kernel (in, k * k * filters).
    kernel = tf.transpose(deconv.kernel, (3, 0, 1, 2))
    vector.matmul.kernel.assign(tf.reshape(kernel, (11, 5 * 5 * 7)))
    deconv.bias.assign(tf.random.normal((7,)))
    vector.bias.assign(deconv.bias)
    want = deconv(tf.reshape(x, (3, 1, 1, 11)))
    np.testing.assert_allclose(vector(x).numpy(), want.numpy(), atol=1e-5)
    assert want.shape == (3, 5, 5, 7)


def test_vector_deconv_starts_as_the_transposed_conv():
    """Same Glorot range as Conv2DTranspose's (k, k, filters, in) kernel,
    not a Dense layer's (in, k * k * filters) one, which is 2.6x wider here."""
    deconv = keras.layers.Conv2DTranspose(128, 5, 2)
    vector = models.VectorDeconv(128, 5)
    deconv(tf.zeros((1, 1, 1, 1024)))
    vector(tf.zeros((1, 1024)))
    want, got = np.std(deconv.kernel.numpy()), np.std(vector.matmul.kernel.numpy())
    assert got == pytest.approx(want, rel=0.02)
    assert np.abs(vector.matmul.kernel.numpy()).max() <= np.sqrt(6 / (25 * (1024 + 128)))
