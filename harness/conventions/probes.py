"""The probes: run one framework's op on an input built so that its output shows a convention, and read it off.

Each probe takes the framework's op as a callable (see the `*_ops` modules), so the same reading serves every
framework, fwbench's canonical engine included, and the tests' NumPy stand-ins of each convention."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Refused(Exception):
    """The framework refuses the configuration (torch's padding="same" at stride 2): a finding, recorded as one."""


def readable(v: float, digits: int = 6) -> float:
    """v to `digits` significant digits: the float32 noise off a measured constant (0.1, not 0.100000001)."""
    return float(f"{float(v):.{digits}g}")


def nearest(value: float, candidates: dict[str, float], rtol: float = 1e-3) -> str:
    """The name of the candidate value equals to rtol, else "other: value"."""
    return next((name for name, want in candidates.items() if math.isclose(value, want, rel_tol=rtol)),
                f"other: {readable(value)}")


# Batch norm. The weight the batch statistic gets in the running one, as a function of momentum m.
MEANINGS = {"batch": lambda m: m, "running": lambda m: 1 - m}  # each its own inverse
PROBE_MOMENTUM = 0.25  # exact in binary, and 0.25 against 0.75 tells the meanings apart


def batchnorm(step) -> dict:
    """What momentum weights and its default, eps's default, and the batch variance the running one is fed.

    step(x, momentum) runs one training pass of a fresh layer (running mean 0, variance 1) on NCHW float32 x and
    returns (y, running_mean, running_var); momentum None is the framework's default."""
    # One channel holding 0 and 2: batch mean 1, so the new running mean is the weight of the batch;
    # biased variance 1, unbiased 2.
    x = np.array([0.0, 2.0], np.float32).reshape(2, 1, 1, 1)
    _, mean, _ = step(x, None)
    at_default = readable(mean[0])
    _, mean, var = step(x, PROBE_MOMENTUM)
    w = float(mean[0])
    meaning = nearest(w, {name: weight(PROBE_MOMENTUM) for name, weight in MEANINGS.items()})
    default = readable(MEANINGS[meaning](at_default)) if meaning in MEANINGS else None
    # running_var = (1 - w) * 1 + w * (the batch's variance)
    variance = nearest((float(var[0]) - (1 - w)) / w, {"biased": 1.0, "unbiased": 2.0})
    # One channel holding 1 -/+ d: the output is -/+ d / sqrt(d^2 + eps), so eps = d^2 (1 / y^2 - 1). With d^2
    # near eps's size, float32's rounding of y stays far below the answer.
    d = 2.0 ** -7
    y, _, _ = step(np.array([1 - d, 1 + d], np.float32).reshape(2, 1, 1, 1), None)
    eps = d * d * (1 / float(np.ravel(y)[1]) ** 2 - 1)
    return {"momentum_meaning": meaning, "momentum_default": default, "batch_weight_at_default": at_default,
            "eps_default": readable(eps, 3), "running_var": variance}


def avgpool(pool) -> dict:
    """The default stride, and whether a padded window's mean counts the zeros of the padding.

    pool(x, size, stride, padding) average-pools NCHW float32 x; stride None is the framework's default."""
    # 3 wide on 7 pixels: strides 1, 2 and 3 give 5, 3 and 2 outputs of different values.
    size, x = 3, np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7)
    y = pool(x, size, None, 0)
    stride = next((s for s in range(1, size + 1)
                   if y.shape == (want := _valid_mean(x, size, s)).shape and np.allclose(y, want)), None)
    try:
        # All ones, 3 wide at stride 1 with padding 1: the corner window holds four pixels and five zeros. Its
        # padding is what "same" gives too, so a framework that pads only that way (Keras) can run it.
        corner = float(np.ravel(pool(np.ones((1, 1, 2, 2), np.float32), 3, 1, 1))[0])
        pads = nearest(corner, {"counted": 4 / 9, "not counted": 1.0})
    except Refused as e:
        pads = f"refused: {e}"
    return {"default_stride": "size" if stride == size else str(stride), "count_include_pad": pads}


def _valid_mean(x: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Mean over each VALID size x size window of NCHW x, `stride` apart."""
    return sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride].mean(axis=(4, 5))


# "same" cases, name -> (kernel, stride): on 5 pixels both need an odd total padding of 1.
SAME_CASES = {"k2 s1": (2, 1), "k2 s2": (2, 2)}


def same_padding(conv) -> dict:
    """Per case, the "same" padding as [top, bottom, left, right] and which side got the odd pixel.

    conv(x, w, stride) correlates NCHW float32 x (one channel) with the (k, k) kernel w under "same" padding."""
    n, found = 5, {}
    x = (1 + np.arange(n * n, dtype=np.float32)).reshape(1, 1, n, n)  # every pixel its own nonzero value
    for case, (k, s) in SAME_CASES.items():
        w = np.zeros((k, k), np.float32)
        w[0, 0] = 1  # the window's first tap alone: out[i, j] = padded x[i s, j s]
        try:
            y = conv(x, w, s)
        except Refused as e:
            found[case] = {"refused": str(e)}
            continue
        # out[1, 1] = x[s - top, s - left], and the output size gives the total padding.
        row, col = divmod(round(float(y[0, 0, 1, 1])) - 1, n)
        (top, left), totals = (s - row, s - col), [(m - 1) * s + k - n for m in y.shape[2:]]
        pads = [top, totals[0] - top, left, totals[1] - left]
        side = "end" if pads[1] > pads[0] else "start" if pads[0] > pads[1] else "none"
        found[case] = {"pads": pads, "odd_pixel": side}
    return found


# Adam's first step from zero moments at lr 1, as the size of the update for a gradient g > 0 (betas 0.9, 0.999):
# mhat = g and vhat = g^2, so the placements differ only in where eps enters.
ADAM_PLACEMENTS = {
    "mhat / (sqrt(vhat) + eps)": lambda g, eps: g / (g + eps),
    "mhat / sqrt(vhat + eps)": lambda g, eps: g / math.sqrt(g * g + eps),
    # Kingma and Ba's "efficient version" (TF1's and Keras's): eps added before the correction of v.
    "lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)": lambda g, eps: g / (g + eps / math.sqrt(1 - 0.999)),
}


def adam(step) -> dict:
    """Where eps enters the update and its default; eps_root's default and place, or "no such option".

    step(g, **options) is one Adam step at lr 1 from p = 0 with the float32 gradient g, returning the change in p;
    the options eps and eps_root override the defaults, and one the framework lacks raises Refused."""
    g = 1e-2
    u = -step(g, eps=g)  # eps = g: where the placements are furthest apart
    placement = next((name for name, f in ADAM_PLACEMENTS.items() if math.isclose(u, f(g, g), rel_tol=1e-4)),
                     f"other: {readable(u)}")
    eps = None
    if placement in ADAM_PLACEMENTS:
        tiny = 1e-8  # a gradient of eps's size, whose update depends on eps
        eps = readable(_solve(ADAM_PLACEMENTS[placement], tiny, -step(tiny)), 3)
    try:
        # With eps 0 and eps_root g^2 inside the sqrt, the update is g / sqrt(2 g^2).
        inside = math.isclose(-step(g, eps=0.0, eps_root=g * g), 1 / math.sqrt(2), rel_tol=1e-4)
    except Refused:
        return {"placement": placement, "eps_default": eps, "eps_root_default": None, "eps_root": "no such option"}
    # With eps 0 the update is g / sqrt(g^2 + eps_root), against an explicit eps_root 0 rather than 1: the float32
    # bias correction alone moves it by 1e-5 (optax's 1 - 0.999 rounds to 0.000999987).
    u, u0 = -step(g, eps=0.0), -step(g, eps=0.0, eps_root=0.0)
    root = readable(g * g * ((u0 / u) ** 2 - 1), 3)
    return {"placement": placement, "eps_default": eps, "eps_root_default": root,
            "eps_root": "inside the sqrt" if inside else "elsewhere"}


def _solve(update, g: float, u: float) -> float:
    """The eps > 0 with update(g, eps) = u, update falling as eps grows: bisection on log10(eps) in [-30, 2]."""
    lo, hi = -30.0, 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if update(g, 10 ** mid) > u else (lo, mid)
    return 10 ** lo


# SGD with momentum m, two steps from p = 0 with gradient 1 at the learning rates 1 then 0.5: the second update
# tells whether the learning rate multiplies the buffer (torch: v = m v + g; p -= lr v) or enters it (Keras:
# v = m v - lr g; p += v). The two rules agree while the learning rate stays fixed.
SGD_MOMENTUM, SGD_LRS = 0.9, (1.0, 0.5)
# The second update for each rule (gradient 1): -lr2 (m + 1), and -(m lr1 + lr2).
SGD_PLACEMENTS = {"outside the buffer": -SGD_LRS[1] * (SGD_MOMENTUM + 1),
                  "inside the buffer": -(SGD_MOMENTUM * SGD_LRS[0] + SGD_LRS[1])}


def sgd(step) -> dict:
    """Where the learning rate sits in SGD with momentum: outside the velocity buffer or inside it.

    step(lrs, g, momentum) runs len(lrs) steps of SGD with momentum from p = 0, the learning rate set to lrs[i]
    before step i and the float32 gradient g each time, and returns p after each step."""
    p = [float(v) for v in step(list(SGD_LRS), 1.0, SGD_MOMENTUM)]
    update = p[1] - p[0]
    return {"learning_rate": nearest(update, SGD_PLACEMENTS), "second_update": readable(update)}


# The kurtosis E[z^4] / E[z^2]^2 (not the excess) of each distribution an initialiser draws from; the truncated
# normal is cut at 2 standard deviations, as JAX's truncated_normal initialisers are.
KURTOSIS = {"uniform": 1.8, "truncated normal": 2.366, "normal": 3.0}
FAN_INS = {"dense": (64, 256), "conv": (36, 144)}  # two each, 4 apart; conv's are 3 x 3 x channels
UNITS = 4096  # outputs, so that the bias too is a large sample
FEW_UNITS = 256  # outputs of a third layer, at the larger fan-in: a scale that follows fan_out shows
RECEPTIVE = {"dense": 1, "conv": 9}  # a conv's fan_out is 3 x 3 x its outputs
# What a scale can follow, as a function of (fan_in, fan_out): PyTorch's and LeCun's fan_in, Glorot's sum.
FANS = {"fan_in": lambda fan_in, fan_out: fan_in, "fan_in + fan_out": lambda fan_in, fan_out: fan_in + fan_out}


def init(draw) -> dict:
    """For each default initialiser, its distribution and scale as std (or bound) * fan^exponent.

    draw(kind, fan_in, units) -> (weight, bias) of a fresh layer at its defaults: "dense", or a 3 x 3 "conv"."""
    found = {}
    for kind, (small, large) in FAN_INS.items():
        shapes = [(small, UNITS), (large, UNITS), (large, FEW_UNITS)]
        fans = [(fan_in, units * RECEPTIVE[kind]) for fan_in, units in shapes]
        drawn = [draw(kind, fan_in, units) for fan_in, units in shapes]
        found[f"{kind}_weight"] = _distribution(fans, [np.asarray(w) for w, _ in drawn])
        found[f"{kind}_bias"] = _distribution(fans, [np.asarray(b) for _, b in drawn])
    return found


def _distribution(fans: list[tuple[int, int]], samples: list[np.ndarray]) -> dict:
    """The family of the second sample, the fan its scale follows, and that scale as c * fan^exponent.

    samples[i] was drawn at fans[i] = (fan_in, fan_out); the fan is the one of FANS on whose log the samples'
    log std lies straightest, the exponent that line's slope."""
    if not samples[1].any():
        return {"distribution": "zeros"}
    samples = [s.astype(np.float64) for s in samples]
    log_std = np.log([s.std() for s in samples])
    fits = {name: np.polyfit(np.log([fan(*f) for f in fans]), log_std, 1, full=True) for name, fan in FANS.items()}
    # A residual of 0 comes back as an empty array: a perfect fit.
    fan = min(fits, key=lambda name: float(np.sum(fits[name][1])))
    e = round(float(fits[fan][0][0]) * 10) / 10  # a power of the fan: sampling noise off it
    if e == 0:  # a fixed scale, which every fan fits as well
        fan = "none"
    b, at = samples[1], (FANS[fan](*fans[1]) if fan in FANS else 1)
    z = (b - b.mean()) / b.std()
    kurtosis = float(np.mean(z ** 4))
    family = min(KURTOSIS, key=lambda name: abs(KURTOSIS[name] - kurtosis))
    return {"distribution": family, "fan": fan, "fan_exponent": e, "std": readable(b.std() * at ** -e, 3),
            "bound": readable(np.abs(b).max() * at ** -e, 3), "kurtosis": round(kurtosis, 2)}


def dropout(drop) -> dict:
    """Whether kept units are scaled by 1 / (1 - rate), and how the masks are seeded.

    drop(x, rate, seed, calls) -> `calls` training-mode outputs in a row after seeding with seed; seed None seeds
    nothing, and raises Refused where the framework cannot run unseeded."""
    x, rate = np.ones((1, 1, 100, 200), np.float32), 0.5
    first, second = (np.asarray(y) for y in drop(x, rate, 0, 2))
    again = np.asarray(drop(x, rate, 0, 1)[0])
    scale = readable(first[first != 0].mean())
    try:
        drop(x, rate, None, 1)
        unseeded = "runs"
    except Refused as e:
        unseeded = f"refused: {e}"
    return {"kept_scale": scale, "scaling": nearest(scale, {"inverted": 1 / (1 - rate), "not inverted": 1.0}),
            "dropped_fraction": round(float(np.mean(first == 0)), 3),
            "reseeding_repeats": bool(np.array_equal(first, again)),
            "consecutive_calls_differ": not np.array_equal(first, second), "unseeded": unseeded}
