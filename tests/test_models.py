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


def test_kl_with_free_nats(rssm):
    zeros, ones = tf.zeros((2, 3, 5)), tf.ones((2, 3, 5))
    post = dict(mean=zeros, std=ones, stoch=zeros, deter=tf.zeros((2, 3, 7)))
    prior = dict(mean=ones, std=ones, stoch=zeros, deter=tf.zeros((2, 3, 7)))
    div, loss = rssm.kl_loss(post, prior, free_nats=3.0)
    assert float(div) == pytest.approx(2.5)  # 5 dims x (1 - 0)^2 / 2.
    assert float(loss) == pytest.approx(3.0)  # Clipped from below.
    prior["mean"] = 2 * ones
    div, loss = rssm.kl_loss(post, prior, free_nats=3.0)
    assert float(div) == pytest.approx(10.0) and float(loss) == pytest.approx(10.0)


def test_prior_grad_trains_only_the_prior_below_free_nats(rssm):
    zeros, ones = tf.zeros((2, 3, 5)), tf.ones((2, 3, 5))
    deter = tf.zeros((2, 3, 7))
    post_mean, prior_mean = tf.Variable(zeros), tf.Variable(ones)

    def grads(free_nats, prior_grad):
        with tf.GradientTape() as tape:
            post = dict(mean=post_mean + 0, std=ones, stoch=zeros, deter=deter)
            prior = dict(mean=prior_mean + 0, std=ones, stoch=zeros, deter=deter)
            div, loss = rssm.kl_loss(post, prior, free_nats, prior_grad)
        return float(div), float(loss), tape.gradient(loss, [post_mean, prior_mean])

    # KL 2.5 below 3 free nats: the paper's loss has no gradient at all.
    _, loss, (d_post, d_prior) = grads(3.0, False)
    assert loss == pytest.approx(3.0)
    assert not np.any(d_post) and not np.any(d_prior)
    # With prior_grad the loss value stays clipped, the posterior stays free,
    # and the prior gets the KL's gradient: (prior - post) / std^2 / (B*T).
    div, loss, (d_post, d_prior) = grads(3.0, True)
    assert (div, loss) == (pytest.approx(2.5), pytest.approx(3.0))
    assert not np.any(d_post)
    np.testing.assert_allclose(d_prior, np.full((2, 3, 5), 1 / 6), rtol=1e-5)
    # Above free nats both forms are the paper's loss.
    for prior_grad in (False, True):
        div, loss, (d_post, d_prior) = grads(1.0, prior_grad)
        assert loss == pytest.approx(div)
        np.testing.assert_allclose(d_post, np.full((2, 3, 5), -1 / 6), rtol=1e-5)
        np.testing.assert_allclose(d_prior, np.full((2, 3, 5), 1 / 6), rtol=1e-5)


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


def outputs_and_gradients(layers, x):
    """Each layer's output and the gradients of a loss on it (weighting each
    output pixel differently, so that a shifted or flipped output changes
    every gradient) with respect to x, kernel and bias; the other layers
    take the first one's weights."""
    for layer in layers:
        layer(x)  # Builds the weights.
    layers[0].kernel.assign(tf.random.normal(layers[0].kernel.shape, seed=2))
    layers[0].bias.assign(tf.random.normal(layers[0].bias.shape, seed=3))
    results = []
    for layer in layers:
        for mine, theirs in zip(layer.weights, layers[0].weights):
            mine.assign(theirs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.reshape(tf.range(tf.size(y), dtype=tf.float32), y.shape))
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
    return results


@pytest.mark.parametrize("kernel, stride, size, filters", [(6, 2, 30, 3), (6, 3, 7, 2), (4, 2, 5, 4)])
def test_subpixel_deconv_is_the_transposed_conv_with_its_gradients(kernel, stride, size, filters):
    x = tf.random.normal((2, size, size, 5), seed=1)
    theirs, mine = outputs_and_gradients(
        [keras.layers.Conv2DTranspose(filters, kernel, stride, activation="relu"),
         models.SubpixelDeconv(filters, kernel, stride, activation="relu")], x)
    out = (size - 1) * stride + kernel
    assert theirs[0].shape == (2, out, out, filters)
    for want, got in zip(theirs, mine):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel, stride, size", [(4, 2, 6), (4, 2, 9), (3, 1, 5)])
def test_patch_grad_conv_is_the_conv_with_its_gradients(kernel, stride, size):
    x = tf.random.normal((2, size, size, 5), seed=1)
    theirs, mine = outputs_and_gradients(
        [keras.layers.Conv2D(7, kernel, stride, activation="relu"),
         models.PatchGradConv(7, kernel, stride, activation="relu")], x)
    out = (size - kernel) // stride + 1
    assert theirs[0].shape == (2, out, out, 7)
    for want, got in zip(theirs, mine):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


def test_subpixel_deconv_needs_a_kernel_that_is_a_multiple_of_the_stride():
    with pytest.raises(ValueError, match="multiple of the stride"):
        models.SubpixelDeconv(3, 5, 2)(tf.zeros((1, 4, 4, 2)))
