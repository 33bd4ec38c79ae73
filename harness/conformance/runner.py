"""Run the battery against a backend (NAME@MODE) and collect one result per check; no exception escapes a check."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from fwbench import backends
from fwbench.backends.base import Backend, BackendError, check_mode
from fwbench.harness.conformance import hints
from fwbench.harness.conformance.cases import params_of, spec_of
from fwbench.harness.conformance.checks import Check, battery_for
from fwbench.harness.conformance.context import UNSUPPORTED, Context, choose_dtype
from fwbench.harness.session import resolve_device
from fwbench.backends.messages import first_line

STATUSES = ("pass", "note", "not supported", "fail")  # only "fail" fails the backend


@dataclass
class Result:
    name: str
    status: str
    error: float | None   # the measured number (relative L2 error, or the row's own measure)
    bound: float | None
    detail: str
    seconds: float
    hint: str = ""        # on a failing row: the kind of mistake its pattern points to, or "" (hints.py)

    def to_dict(self) -> dict:
        return asdict(self)


def run_check(ctx: Context, check: Check) -> Result:
    """One row: the check's outcome judged against its bound, a refusal as "not supported", a crash as "fail"."""
    start = time.perf_counter()
    try:
        out = check.run(ctx)
    except UNSUPPORTED as e:
        status, why = ("fail", f"required, but refused: {_reason(e)}") if check.required else ("not supported", _reason(e))
        return Result(check.name, status, None, None, why, time.perf_counter() - start)
    except Exception as e:  # a crash is the backend's failure to report, in one line, not a traceback
        return Result(check.name, "fail", None, None, f"raised {_reason(e)}", time.perf_counter() - start)
    status = out.status or ("pass" if out.error is None or (out.bound is not None and out.error <= out.bound)
                            else "fail")
    return Result(check.name, status, out.error, out.bound, out.detail, time.perf_counter() - start,
                  out.hint if status == "fail" else "")


def prepare(name_or_cls: str | type[Backend], device: str = "cpu", dtype: str = "auto") -> Context:
    """The context for a backend (see load): device resolved ("auto": cuda when listed) and dtype chosen."""
    name, _, cls = load(name_or_cls)
    device = checked_device(cls, device)
    if dtype == "auto":
        dtype, note = choose_dtype(name, spec_of("dense"), params_of("dense"), device)
    else:
        note = ""  # asked for: the header says so, rows need not
    return Context(name, device, dtype, note)


def checked_device(cls: type[Backend], device: str) -> str:
    """session.resolve_device, but refusing a device the backend does not list; a broken devices() is let by."""
    try:
        available = list(cls.devices())
    except Exception:  # the protocol row reports a broken devices(); test where asked
        return "cpu" if device == "auto" else device
    device = resolve_device(cls, device)
    if device not in available:
        raise BackendError(f"backend '{cls.name}' cannot use device '{device}' here; available: {', '.join(available)}")
    return device


def run(ctx: Context, checks: list[Check] | None = None) -> list[Result]:
    """Every check in order, each with its own result, and the hints that only the rows together show."""
    return hints.annotate([run_check(ctx, check) for check in (battery_for(ctx.cls) if checks is None else checks)])


def load(name_or_cls: str | type[Backend]) -> tuple[str, str, type[Backend]]:
    """(name, source, class) for "NAME[@MODE]", "module.path:Class[@MODE]" or a class; BackendError if not."""
    if isinstance(name_or_cls, str):
        return name_or_cls, backends.source(name_or_cls), backends.load(name_or_cls)
    # A class is named by its module path, so every check builds it the one way, through backends.build.
    name = f"{name_or_cls.__module__}:{name_or_cls.__qualname__}"
    try:
        found = backends.load(name)
    except BackendError:
        found = None
    if found is not name_or_cls:
        raise BackendError(f"class {name_or_cls.__qualname__} cannot be loaded as '{name}'; "
                           "define it at the top level of a module, or pass its name")
    return name, "class", name_or_cls


def run_conformance(name_or_cls: str | type[Backend], device: str = "cpu", dtype: str = "auto") -> dict:
    """The conformance document for a backend as load() takes it; BackendError if it cannot load."""
    name, source, cls = load(name_or_cls)
    numerics = pinned(cls)
    ctx = prepare(name, device, dtype)
    start = time.perf_counter()
    results = run(ctx)
    return {"backend": name, "mode": check_mode(cls, backends.split(name)[1]), "source": source,
            "version": _version(cls), "device": ctx.device, "dtype": ctx.dtype, "dtype_note": ctx.dtype_note,
            "numerics": numerics,
            "checks": [r.to_dict() for r in results], "seconds": round(time.perf_counter() - start, 3),
            "passed": all(r.status != "fail" for r in results)}


def pinned(cls: type[Backend]) -> dict:
    """What pin_numerics() put in force; call it before building anything (pinning is process-wide)."""
    try:
        return dict(cls.pin_numerics())
    except Exception as e:  # the protocol row reports it
        return {"error": _reason(e)}


def _version(cls: type[Backend]) -> str:
    try:
        return str(cls.version())
    except Exception as e:  # the protocol row reports it
        return f"unknown ({_reason(e)})"


def _reason(e: BaseException) -> str:
    """'Type: first line of the message' for a crash, the message alone for a refusal."""
    text = first_line(e)
    if isinstance(e, UNSUPPORTED):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
