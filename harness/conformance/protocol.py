"""Rows about the protocol itself: class methods, the canonical round trip, repeatability, devices."""
from __future__ import annotations

import numpy as np

from fwbench.backends.base import BackendError
from fwbench.harness.agreement.agree import grad_tol
from fwbench.harness.conformance.cases import batch_of, layer_of, params_of, spec_of
from fwbench.harness.conformance.context import Context, Outcome, cast
from fwbench.backends.messages import first_line
from fwbench.harness.conformance.layers import instance
from fwbench.harness.conformance.measure import rel_error

BOGUS_DEVICE = "no-such-device"


def protocol(ctx: Context) -> Outcome:
    """version() is a non-empty string, devices() a list of names holding the device, pin_numerics() a dict."""
    problems = []
    for what, call, ok in [
        ("version()", ctx.cls.version, lambda v: isinstance(v, str) and v.strip()),
        ("devices()", ctx.cls.devices, lambda v: isinstance(v, list | tuple) and all(isinstance(d, str) for d in v)
         and ctx.device in v),
        ("pin_numerics()", ctx.cls.pin_numerics, lambda v: isinstance(v, dict)),
    ]:
        try:
            value = call()
        except Exception as e:
            problems.append(f"{what} raised {type(e).__name__}: {first_line(e)}")
            continue
        if not ok(value):
            problems.append(f"{what} returned {value!r}")
    if problems:
        return Outcome(None, None, "; ".join(problems), "fail")
    return Outcome(None, None, f"version {ctx.cls.version()!r}, devices {list(ctx.cls.devices())}")


def round_trip(ctx: Context) -> Outcome:
    """get_params returns exactly what the model was built with, and what set_params put in; as copies."""
    spec, start = spec_of("round trip"), cast(params_of("round trip"), ctx.dtype)
    backend = ctx.build(spec, start)
    # New values unlike the first (sign flipped, shifted), so an ignored set_params cannot pass.
    other = cast({k: 0.01 - 0.5 * v for k, v in start.items()}, ctx.dtype)
    return exchange(spec, ctx.dtype, backend.get_params, backend.set_params, start, other)


def exchange(spec, dtype: str, get, put, start: dict, other: dict, what: str = "parameters") -> Outcome:
    """get() is exactly start, then after put(other) exactly other; what get() returned first is a copy."""
    first = get()
    problems = differences(spec, first, start, "after construction", what)
    put(other)
    problems += differences(spec, get(), other, f"after set_{what}", what)
    if not problems and any(not np.array_equal(first[k], start[k]) for k in start):
        problems.append(("arrays", float("inf"), f"returned by get_{what} changed with set_{what}; return copies"))
    return exact(problems, f"{len(start)} tensors exact, {dtype}, in both directions")


def exact(problems: list[tuple[str, float, str]], passed: str) -> Outcome:
    """A row that allows no difference at all: passed when there are no problems, else the worst first."""
    if not problems:
        return Outcome(0.0, 0.0, passed)
    problems.sort(key=lambda p: -p[1])
    return Outcome(problems[0][1], 0.0, "; ".join(f"{label} {why}" for label, _, why in problems))


def differences(spec, got: dict, want: dict, when: str, what: str = "parameters") -> list[tuple[str, float, str]]:
    """(tensor, error, why) for every key, shape, dtype kind or value of got (parameters, buffers) not exactly want."""
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        return [(what, float("inf"), f"{when}: keys missing {missing}, unexpected {extra}")]
    out = []
    for k in want:
        label, value = layer_of(spec, k), got[k]
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            out.append((label, float("inf"), f"{when}: a {type(value).__name__} of {getattr(value, 'dtype', '?')}, "
                                             "expected a floating-point numpy array"))
        elif value.shape != want[k].shape:
            layout = " (canonical: conv (out, in, kh, kw), dense (in, out))" if what == "parameters" else ""
            out.append((label, float("inf"), f"{when}: shape {value.shape}, expected {want[k].shape}{layout}"))
        elif not np.array_equal(value.astype(np.float64), want[k].astype(np.float64)):
            error = float(np.max(np.abs(value.astype(np.float64) - want[k])))
            kind = "" if value.dtype == want[k].dtype else f" (returned {value.dtype} for {want[k].dtype})"
            out.append((label, error, f"{when}: values differ by up to {error:.1e}{kind}"))
    return out


def repeat(ctx: Context) -> Outcome:
    """loss_and_grads twice on one instance and once on a second one built alike: bit-identical, or a note."""
    case = "tinycnn"
    spec, params = spec_of(case), params_of(case)
    x, y = batch_of(case)
    x = x.astype(ctx.dtype)
    first = instance(ctx, case)  # the model row's instance: one compilation fewer for a jitting backend

    def tensors(run) -> dict:
        loss, grads = run
        return {"loss": [loss], **{f"gradient of {layer_of(spec, k)}": grads[k] for k in spec.param_shapes()}}

    base = tensors(first.loss_and_grads(x, y))
    runs = {"second call": first.loss_and_grads(x, y), "second instance": ctx.build(spec, params).loss_and_grads(x, y)}
    worst, where = 0.0, ""
    for when, run in runs.items():
        for label, value in tensors(run).items():
            error = rel_error(value, base[label])[0]
            if error > worst:
                worst, where = error, f"{label}, {when}"
    bound = grad_tol(ctx.dtype, len(y))
    if worst == 0.0:
        return Outcome(0.0, bound, "bit-identical over two calls and two instances")
    detail = f"not bit-identical: {where} differs by {worst:.1e} relative"
    return Outcome(worst, bound, detail, "note" if worst <= bound else None)


def native_init(ctx: Context) -> Outcome:
    """params=None with one seed twice gives identical parameters; another seed, different ones."""
    spec = spec_of("dense")  # the smallest: a jitting backend compiles its initialiser once per spec

    def make(seed: int) -> dict:
        return ctx.build(spec, None, seed=seed).get_params()

    a, b, c = make(3), make(3), make(4)
    differ = [layer_of(spec, k) for k in a if not np.array_equal(a[k], b[k])]
    if differ:
        return Outcome(None, None, f"seed 3 twice gave different {', '.join(differ)}", "fail")
    if all(np.array_equal(a[k], c[k]) for k in a):
        return Outcome(None, None, "seeds 3 and 4 gave identical parameters: the seed is ignored", "fail")
    return Outcome(None, None, "seed 3 twice: identical; seed 4: different")


def device_refusal(ctx: Context) -> Outcome:
    """Building on a device that devices() does not list raises BackendError (or ValueError) with a message."""
    try:
        available = list(ctx.cls.devices())
    except Exception:  # the protocol row reports it
        available = [ctx.device]
    spec, params = spec_of("dense"), params_of("dense")
    problems, refused, said = [], [], []
    for device in [d for d in ("cuda", BOGUS_DEVICE) if d not in available]:
        try:
            ctx.build(spec, params, device=device)
        except (BackendError, ValueError) as e:
            if first_line(e):
                refused.append(f"'{device}'")
                said.append(f"{type(e).__name__}: {first_line(e)}")
            else:
                problems.append(f"device '{device}': {type(e).__name__} with an empty message")
        except NotImplementedError:
            raise
        except Exception as e:
            problems.append(f"device '{device}' raised {type(e).__name__}: {first_line(e)}, not BackendError")
        else:
            problems.append(f"device '{device}' was accepted, but devices() lists only {available}")
    if problems:
        return Outcome(None, None, "; ".join(problems), "fail")
    return Outcome(None, None, f"refused {' and '.join(refused)}; {said[0]}" if said else "every device is listed")

