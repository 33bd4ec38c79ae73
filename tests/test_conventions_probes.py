"""`fwbench conventions`'s probes, each against NumPy stand-ins of both conventions, and the drift of a convention."""
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fwbench.harness.conventions import canonical, drift, probes
from fwbench.harness.conventions.probes import Refused


# Stand-ins: each a NumPy implementation of one convention, written from its definition, not from the probes.

def bn_with(meaning: str, default: float, unbiased: bool, eps: float):
    """One training pass of a fresh batch norm whose momentum m weights the batch or the running value."""
    def step(x, momentum):
        m = default if momentum is None else momentum
        w = m if meaning == "batch" else 1 - m
        x = x.astype(np.float64)
        count = x.size // x.shape[1]
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        y = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + eps)
        batch_var = var * count / (count - 1) if unbiased else var
        return y, w * mean, (1 - w) + w * batch_var
    return step


def pool_with(default_stride, counts_pads: bool):
    """Average pooling with a default stride (an int, or "size") and count_include_pad."""
    def pool(x, size, stride, padding):
        s = stride or (size if default_stride == "size" else default_stride)
        pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))

        def sums(a):
            return sliding_window_view(np.pad(a, pad), (size, size), axis=(2, 3))[:, :, ::s, ::s].sum(axis=(4, 5))
        return sums(x) / (size * size if counts_pads else sums(np.ones_like(x)))
    return pool


def conv_with(odd_at: str, refuse_strided: bool = False):
    """A one-channel "same" convolution whose odd padding pixel goes at the start or the end."""
    def conv(x, w, stride):
        if refuse_strided and stride > 1:
            raise Refused("not for strided convolutions")
        k, n = w.shape[0], x.shape[2]
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        before = total // 2 if odd_at == "end" else total - total // 2
        pad = ((0, 0), (0, 0), (before, total - before), (before, total - before))
        windows = sliding_window_view(np.pad(x, pad), (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        return np.einsum("ncijab,ab->ncij", windows, w)
    return conv


def adam_with(placement: str, eps: float = 1e-8, eps_root: float | None = None):
    """One Adam step at lr 1 from p = 0, eps placed "outside" or "inside" the sqrt, or "hat" (in lr's correction)."""
    def step(g, **options):
        if "eps_root" in options and eps_root is None:
            raise Refused("no eps_root")
        e, r = options.get("eps", eps), options.get("eps_root", eps_root or 0.0)
        b1, b2 = 0.9, 0.999
        m, v = (1 - b1) * g, (1 - b2) * g * g
        mhat, vhat = m / (1 - b1), v / (1 - b2)
        if placement == "outside":
            return -mhat / (math.sqrt(vhat + r) + e)
        if placement == "inside":
            return -mhat / math.sqrt(vhat + e)
        return -math.sqrt(1 - b2) / (1 - b1) * m / (math.sqrt(v) + e)
    return step


def draw_with(weight: tuple, bias: tuple, fan: str = "fan_in"):
    """Fresh layers whose weight and bias are drawn by (kind, c): scale c / sqrt(fan), or ("zeros", 0).

    fan is "fan_in", "sum" (Glorot's fan_in + fan_out, a 3 x 3 conv's fan_out 9 x its outputs) or "none" (c)."""
    rng = np.random.default_rng(0)

    def sample(rule, fans, shape):
        kind, c = rule
        s, size = c / math.sqrt({"fan_in": fans[0], "sum": sum(fans), "none": 1}[fan]), math.prod(shape)
        if kind == "zeros":
            return np.zeros(shape)
        if kind == "uniform":
            return rng.uniform(-s, s, shape)
        z = rng.normal(size=4 * size)
        if kind == "normal":
            return s * z[:size].reshape(shape)
        return s / 0.87962566 * z[np.abs(z) < 2][:size].reshape(shape)  # truncated at 2 sigma, std rescaled to s

    def draw(kind, fan_in, units):
        fans = (fan_in, units * (9 if kind == "conv" else 1))
        return sample(weight, fans, (units, fan_in)), sample(bias, fans, (units,))
    return draw


def sgd_with(lr_inside: bool):
    """SGD with momentum: v = m v + g, p -= lr v (torch), or v = m v - lr g, p += v (Keras)."""
    def step(lrs, g, momentum):
        p, v, out = 0.0, 0.0, []
        for lr in lrs:
            if lr_inside:
                v = momentum * v - lr * g
                p += v
            else:
                v = momentum * v + g
                p -= lr * v
            out.append(p)
        return out
    return step


def drop_with(inverted: bool, keyed: bool):
    """Dropout from a generator that runs on between calls, or from a key that each call reuses."""
    unseeded = np.random.default_rng(1)

    def drop(x, rate, seed, calls):
        if seed is None and keyed:
            raise Refused("needs a key")
        rng, out = unseeded if seed is None else np.random.default_rng(seed), []
        for _ in range(calls):
            rng = np.random.default_rng(seed) if keyed else rng
            out.append(x * (rng.random(x.shape) >= rate) / ((1 - rate) if inverted else 1))
        return out
    return drop


@pytest.mark.parametrize("meaning, default, unbiased, eps", [
    ("batch", 0.1, True, 1e-5), ("running", 0.99, False, 1e-3), ("batch", 0.2, False, 1e-4),
    ("running", 0.9, True, 1e-5)])
def test_batchnorm_probe_reads_meaning_default_eps_and_variance(meaning, default, unbiased, eps):
    found = probes.batchnorm(bn_with(meaning, default, unbiased, eps))
    assert found == {"momentum_meaning": meaning, "momentum_default": default,
                     "batch_weight_at_default": default if meaning == "batch" else pytest.approx(1 - default),
                     "eps_default": eps, "running_var": "unbiased" if unbiased else "biased"}


@pytest.mark.parametrize("default_stride, counts_pads, stride_read, pads_read", [
    ("size", True, "size", "counted"), (1, False, "1", "not counted"), (2, True, "2", "counted")])
def test_avgpool_probe_reads_default_stride_and_count_include_pad(default_stride, counts_pads, stride_read,
                                                                   pads_read):
    found = probes.avgpool(pool_with(default_stride, counts_pads))
    assert found == {"default_stride": stride_read, "count_include_pad": pads_read}


def test_avgpool_probe_records_a_refused_padding():
    def valid_only(x, size, stride, padding):
        if padding:
            raise Refused("VALID windows only")
        return pool_with("size", True)(x, size, stride, 0)
    assert probes.avgpool(valid_only)["count_include_pad"] == "refused: VALID windows only"


@pytest.mark.parametrize("odd_at, pads", [("end", [0, 1, 0, 1]), ("start", [1, 0, 1, 0])])
def test_same_padding_probe_finds_the_odd_pixel(odd_at, pads):
    found = probes.same_padding(conv_with(odd_at))
    assert found == {case: {"pads": pads, "odd_pixel": odd_at} for case in probes.SAME_CASES}


def test_same_padding_probe_records_a_refusal():
    found = probes.same_padding(conv_with("end", refuse_strided=True))
    assert found["k2 s1"]["odd_pixel"] == "end"
    assert found["k2 s2"] == {"refused": "not for strided convolutions"}


@pytest.mark.parametrize("fake, placement, eps, eps_root", [
    (adam_with("outside", 1e-8, 0.0), "mhat / (sqrt(vhat) + eps)", 1e-8, (0.0, "inside the sqrt")),
    (adam_with("outside", 1e-7), "mhat / (sqrt(vhat) + eps)", 1e-7, (None, "no such option")),
    (adam_with("inside", 1e-8), "mhat / sqrt(vhat + eps)", 1e-8, (None, "no such option")),
    (adam_with("hat", 1e-7), "lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)", 1e-7,
     (None, "no such option"))])
def test_adam_probe_tells_the_eps_placements_apart(fake, placement, eps, eps_root):
    found = probes.adam(fake)
    assert (found["placement"], found["eps_default"]) == (placement, eps)
    assert (found["eps_root_default"], found["eps_root"]) == eps_root


@pytest.mark.parametrize("weight, bias, fan, want_weight, want_bias, want_fan", [
    (("uniform", 1.0), ("uniform", 1.0), "fan_in", ("uniform", 1.0), ("uniform", 1.0), "fan_in"),
    (("truncated", 1.0), ("zeros", 0), "fan_in", ("truncated normal", 1.0), ("zeros", None), "fan_in"),
    (("normal", 2.0), ("zeros", 0), "fan_in", ("normal", 2.0), ("zeros", None), "fan_in"),
    (("uniform", math.sqrt(6)), ("zeros", 0), "sum", ("uniform", math.sqrt(6)), ("zeros", None), "fan_in + fan_out"),
    (("normal", 0.05), ("uniform", 0.05), "none", ("normal", 0.05), ("uniform", 0.05), "none")])
def test_init_probe_reads_distribution_and_fan_scaling(weight, bias, fan, want_weight, want_bias, want_fan):
    found = probes.init(draw_with(weight, bias, fan))
    for key, (distribution, c) in [("dense_weight", want_weight), ("dense_bias", want_bias),
                                   ("conv_weight", want_weight), ("conv_bias", want_bias)]:
        assert found[key]["distribution"] == distribution
        if c is not None:
            assert (found[key]["fan"], found[key]["fan_exponent"]) == (want_fan, 0.0 if fan == "none" else -0.5)
            scale = found[key]["bound" if distribution == "uniform" else "std"]
            assert scale == pytest.approx(c, rel=0.02)


@pytest.mark.parametrize("lr_inside, where, update", [(False, "outside the buffer", -0.95),
                                                      (True, "inside the buffer", -1.4)])
def test_sgd_probe_tells_where_the_learning_rate_sits(lr_inside, where, update):
    assert probes.sgd(sgd_with(lr_inside)) == {"learning_rate": where, "second_update": update}


@pytest.mark.parametrize("inverted, keyed", [(True, False), (False, True)])
def test_dropout_probe_reads_scaling_and_seeding(inverted, keyed):
    found = probes.dropout(drop_with(inverted, keyed))
    assert found["scaling"] == ("inverted" if inverted else "not inverted")
    assert found["kept_scale"] == (2.0 if inverted else 1.0)
    assert found["dropped_fraction"] == pytest.approx(0.5, abs=0.01)
    assert found["reseeding_repeats"] is True
    assert found["consecutive_calls_differ"] is (not keyed)
    assert found["unseeded"] == ("refused: needs a key" if keyed else "runs")


def test_probes_read_fwbench_canonical_semantics():
    assert probes.batchnorm(canonical.batchnorm) == {
        "momentum_meaning": "batch", "momentum_default": 0.1, "batch_weight_at_default": 0.1, "eps_default": 1e-5,
        "running_var": "unbiased"}
    assert probes.avgpool(canonical.avgpool) == {"default_stride": "size",
                                                 "count_include_pad": "refused: avgpool2d has VALID windows only"}
    assert probes.same_padding(canonical.conv) == {c: {"pads": [0, 1, 0, 1], "odd_pixel": "end"}
                                                   for c in probes.SAME_CASES}
    assert probes.adam(canonical.adam) == {"placement": "mhat / (sqrt(vhat) + eps)", "eps_default": 1e-8,
                                           "eps_root_default": None, "eps_root": "no such option"}
    assert probes.sgd(canonical.sgd) == {"learning_rate": "outside the buffer", "second_update": -0.95}
    init = probes.init(canonical.init)
    assert {k: (v["distribution"], v["fan"], v["fan_exponent"], v["bound"]) for k, v in init.items()} == {
        k: ("uniform", "fan_in", -0.5, pytest.approx(1.0, abs=0.01)) for k in init}
    found = probes.dropout(canonical.dropout)
    assert (found["scaling"], found["reseeding_repeats"], found["consecutive_calls_differ"]) == ("inverted", True, True)
    assert found["unseeded"].startswith("refused: ")


def test_drift_is_zero_against_itself_and_sees_a_biased_variance():
    class Biased:
        """The canonical rule but for the running variance, updated with the biased batch variance."""
        BN_SETTINGS = {"canonical": None, "biased": "biased"}

        @staticmethod
        def running_stats(weight, bias, batches, momentum):
            mean, var = canonical.running_stats(weight, bias, batches, None)
            if momentum is None:
                return mean, var
            n = batches[0].shape[0] * (batches[0].shape[2] - 2) * (batches[0].shape[3] - 2)  # values per channel
            # Running variance is linear in the batch variances, and each biased one is (n-1)/n the unbiased one;
            # the start value 1 keeps a weight 0.9^100.
            return mean, 0.9 ** drift.STEPS + (var - 0.9 ** drift.STEPS) * (n - 1) / n
    rows = {r["setting"]: r for r in drift.batchnorm_drift(Biased)}
    # The stand-in gets the batches in float32, as a framework does: only their rounding is left.
    assert max(rows["canonical"]["running_mean"], rows["canonical"]["running_var"]) < 1e-6
    assert rows["biased"]["running_mean"] < 1e-6
    assert rows["biased"]["running_var"] == pytest.approx(1 / drift.VALUES_PER_CHANNEL, rel=0.05)
    assert drift.adam_drift(canonical)["parameters"] == 0.0
