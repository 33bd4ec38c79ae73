"""The engine's new layers by hand: "same" padding, average pooling, batch norm's statistics, dropout's masks."""
import numpy as np
import pytest

from fwbench import models
from fwbench.backends.engine import Tensor, avgpool2d, batchnorm, conv2d, dropout, norm
from fwbench.backends.engine.norm import channel_sum
from fwbench.backends.engine.layout import to_canonical, to_engine
from fwbench.backends.numpy_backend import NumpyBackend
from fwbench.models.params import dropout_masks, init_buffers, init_params
from specs import FRESH, batch


def spec_of(*layers, input_=(2, 5, 4), classes=3):
    return models.parse({"name": "t", "input": list(input_), "classes": classes,
                         "layers": [*layers, {"type": "flatten"}, {"type": "dense", "units": classes}]})


@pytest.mark.parametrize("n, k, s, want", [(7, 4, 2, (1, 2)), (6, 4, 2, (1, 1)), (5, 3, 1, (1, 1)), (4, 2, 1, (0, 1)),
                                           (5, 1, 2, (0, 0)), (3, 5, 1, (2, 2))])
def test_same_padding_follows_the_tensorflow_rule(n, k, s, want):
    spec = spec_of({"type": "conv2d", "out_channels": 1, "kernel_size": k, "stride": s, "padding": "same"},
                   input_=(1, n, n))
    assert spec.shapes[0] == (1, -(-n // s), -(-n // s))
    assert spec.layers[0].pads((1, n, n)) == (*want, *want)


def test_same_padding_equals_explicit_asymmetric_zeros():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 4, 4)), rng.standard_normal(4)
    got = to_canonical(conv2d(Tensor(to_engine(x)), Tensor(w), Tensor(b), 2, (1, 2, 1, 1)).data)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (1, 1)))
    want = to_canonical(conv2d(Tensor(to_engine(xp)), Tensor(w), Tensor(b), 2, 0).data)
    assert got.shape == (2, 4, 4, 3) and np.array_equal(got, want)


def test_average_pool_by_hand():
    x = np.arange(2 * 1 * 4 * 5, dtype=np.float64).reshape(2, 4, 5, 1)  # NHWC, one channel
    t = Tensor(x, requires_grad=True)
    out = avgpool2d(t, 2)
    assert out.shape == (2, 2, 2, 1)
    assert out.data[0, 0, 0, 0] == (0 + 1 + 5 + 6) / 4
    out.backward()
    assert t.grad[0, :, :4, 0].tolist() == [[0.25] * 4] * 4 and t.grad[0, :, 4, 0].tolist() == [0] * 4
    overlapping = avgpool2d(Tensor(x, requires_grad=True), 3, 1)
    assert overlapping.shape == (2, 2, 3, 1) and overlapping.data[1, 1, 2, 0] == x[1, 1:4, 2:5, 0].mean()


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 1), (3, 2), (2, 3), (1, 2)])
def test_average_pool_equals_the_window_loop(size, stride):
    # Computed separably (rows, then columns): the same means and gradients, overlapping, gapped and cut windows.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 8, 6))
    r = rng.standard_normal((2, (9 - size) // stride + 1, (8 - size) // stride + 1, 6))
    t = Tensor(x, requires_grad=True)
    out = avgpool2d(t, size, stride)
    (out * Tensor(r)).sum().backward()
    want, dx = np.zeros(r.shape), np.zeros(x.shape)
    for i, j in np.ndindex(*r.shape[1:3]):
        rows, cols = slice(i * stride, i * stride + size), slice(j * stride, j * stride + size)
        want[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
        dx[:, rows, cols] += r[:, i, j, None, None] / size ** 2
    np.testing.assert_allclose(out.data, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(t.grad, dx, rtol=1e-13, atol=1e-15)


def test_batchnorm_trains_on_the_batch_and_updates_with_the_unbiased_variance():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 2, 5)) * 3 + 1
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    running = (np.full(3, 0.5), np.full(3, 2.0))
    y = to_canonical(batchnorm(Tensor(to_engine(x)), Tensor(np.ones(3)), Tensor(np.zeros(3)), 1e-5, running, True,
                               0.1).data)
    assert np.allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5))
    assert np.allclose(running[0], 0.9 * 0.5 + 0.1 * mean)
    assert np.allclose(running[1], 0.9 * 2.0 + 0.1 * x.var(axis=(0, 2, 3), ddof=1))
    frozen = to_canonical(batchnorm(Tensor(to_engine(x)), Tensor(np.ones(3)), Tensor(np.zeros(3)), 1e-5, running,
                                    False).data)
    assert np.allclose(frozen, (x - running[0][:, None, None]) / np.sqrt(running[1][:, None, None] + 1e-5))
    with pytest.raises(ValueError, match="more than one value per channel"):
        batchnorm(Tensor(to_engine(x[:1, :, :1, :1])), Tensor(np.ones(3)), Tensor(np.zeros(3)), 1e-5, running, True)


def test_channel_sums_keep_float32_near_float64_on_many_values():
    rng = np.random.default_rng(2)
    x = (rng.random((64, 20, 20, 8)) + 10).astype(np.float32)  # all positive: a running sum's rounding piles up
    exact = x.astype(np.float64).sum(axis=(0, 1, 2))
    assert np.max(np.abs(channel_sum(x) - exact) / exact) < 1e-6
    assert np.max(np.abs(channel_sum(x[:, ::2]) - x[:, ::2].astype(np.float64).sum(axis=(0, 1, 2))) / exact) < 1e-6
    features = x.reshape(64, -1)[:, :5]
    assert np.allclose(channel_sum(features), features.astype(np.float64).sum(axis=0), rtol=1e-6)


def test_batchnorm_in_float32_follows_float64_on_an_offset_batch():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 12, 12, 4)) * 0.1 + 50).astype(np.float32)  # the mean dwarfs the spread
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for dtype in (np.float32, np.float64):
        t = Tensor(x.astype(dtype), requires_grad=True)
        gamma, beta = Tensor(np.full(4, 1.5, dtype), requires_grad=True), Tensor(np.zeros(4, dtype), requires_grad=True)
        out = batchnorm(t, gamma, beta, 1e-5, (np.zeros(4, dtype), np.ones(4, dtype)), True)
        out._backward(g.astype(dtype))
        results.append((out.data, t.grad, gamma.grad))
    for single, double in zip(*results):
        assert np.linalg.norm(single - double) / np.linalg.norm(double) < 1e-5


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(7, 3, 4, 5), (7, 5)])
def test_batchnorm_in_chunks_equals_one_chunk_and_the_formula(monkeypatch, shape, training):
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal(shape) * 2 + 3, rng.standard_normal(shape)
    c, axes = shape[-1], tuple(range(len(shape) - 1))
    running = (rng.standard_normal(c), rng.random(c) + 0.5)

    def run():
        t = Tensor(x.copy(), requires_grad=True)
        gamma = Tensor(np.linspace(0.5, 2, c), requires_grad=True)
        beta = Tensor(np.linspace(-1, 1, c), requires_grad=True)
        out = batchnorm(t, gamma, beta, 1e-5, tuple(r.copy() for r in running), training)
        out._backward(g)
        return out.data, t.grad, gamma.grad, beta.grad
    whole = run()
    monkeypatch.setattr(norm, "CHUNK_BYTES", 2 * x[0].nbytes + 8)  # chunks of 2 images, and a last one of 1
    assert [s.stop - s.start for s in norm.chunks(x.reshape(len(x), -1))] == [2, 2, 2, 1]
    for got, want in zip(run(), whole):
        np.testing.assert_array_equal(got, want)
    # A first mean 0.25 off leaves a shift that the second pass must fold in exactly: the result may not change.
    first = norm.channel_sum
    monkeypatch.setattr(norm, "channel_sum", lambda a, across=None: first(a) + 0.25 * (a.size // a.shape[-1]))
    for got, want in zip(run(), whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    mean, var = (x.mean(axis=axes), x.var(axis=axes)) if training else running
    xhat = (x - mean) / np.sqrt(var + 1e-5)
    gamma, m = np.linspace(0.5, 2, c), x.size // c
    dx = gamma / np.sqrt(var + 1e-5) * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes) if training else g)
    for got, want in zip(whole, (xhat * gamma + np.linspace(-1, 1, c), dx, (g * xhat).sum(axis=axes),
                                 g.sum(axis=axes))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * m)


def test_dropout_scales_the_kept_units_and_passes_their_gradient():
    x = Tensor(np.full((2, 3), 2.0), requires_grad=True)
    keep = np.array([[True, False, True], [False, False, True]])
    out = dropout(x, keep, 0.75)
    assert out.data.tolist() == [[8.0, 0.0, 8.0], [0.0, 0.0, 8.0]]
    out.sum().backward()
    assert x.grad.tolist() == [[4.0, 0.0, 4.0], [0.0, 0.0, 4.0]]


def test_harness_masks_are_a_function_of_seed_step_and_layer():
    a, b = dropout_masks(FRESH, 0, 3, 5), dropout_masks(FRESH, 0, 3, 5)
    assert sorted(a) == ["11.mask", "4.mask"] and a["4.mask"].shape == (5, 5, 3, 2) and a["4.mask"].dtype == bool
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["4.mask"], dropout_masks(FRESH, 0, 4, 5)["4.mask"])
    assert not np.array_equal(a["4.mask"], dropout_masks(FRESH, 1, 3, 5)["4.mask"])
    kept = np.mean([dropout_masks(FRESH, 0, s, 64)["11.mask"].mean() for s in range(20)])
    assert abs(kept - 0.5) < 0.03


def test_the_backend_separates_training_evaluation_and_buffer_updates():
    x, y = batch(FRESH, n=6)
    model = NumpyBackend(FRESH, init_params(FRESH, 0, "float64"), dtype="float64")
    start = model.get_buffers()
    assert {k: v.tolist() for k, v in start.items()} == {
        k: v.tolist() for k, v in init_buffers(FRESH, "float64").items()}
    model.set_masks(dropout_masks(FRESH, 0, 0, 6))
    first = model.loss_and_grads(x, y)
    assert all(np.array_equal(model.get_buffers()[k], start[k]) for k in start)  # loss_and_grads leaves them
    assert model.loss_and_grads(x, y)[0] == first[0]  # the same masks, the same loss
    logits = model.forward(x)
    assert np.array_equal(model.forward(x), logits)  # evaluation draws nothing
    from fwbench.backends.base import OptimizerConfig
    model.init_optimizer(OptimizerConfig("sgd", lr=0.0))
    model.train_step(model.prepare_batch(x, y))
    moved = model.get_buffers()
    assert not np.allclose(moved["1.running_mean"], 0) and not np.allclose(moved["9.running_var"], 1)
    assert not np.array_equal(model.forward(x), logits)  # evaluation reads the running statistics
    model.set_buffers(start)
    assert np.array_equal(model.forward(x), logits)
    model.set_masks(None)
    assert model.loss_and_grads(x, y)[0] != first[0]  # its own draws now
    with pytest.raises(ValueError, match="dropout masks do not match"):
        model.set_masks({"4.mask": np.ones((6, 5, 3, 2), bool)})
