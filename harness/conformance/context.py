"""What every check receives: the backend under test (NAME@MODE), its device and dtype, and shared answers."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fwbench import backends
from fwbench.backends.base import Backend, BackendError
from fwbench.backends.messages import first_line
from fwbench.models.params import Params
from fwbench.models.spec import ModelSpec

# What a backend raises to say "I cannot do this": the base class's NotImplementedError for a missing
# method, BackendError for a refused dtype, device, model size or optimizer. Either makes a row
# "not supported", never a failure; any other exception is a bug in the backend and fails the row.
UNSUPPORTED = (NotImplementedError, BackendError)


@dataclass
class Outcome:
    """What one check measured: the error and its bound (None when there is no number), and why."""
    error: float | None
    bound: float | None
    detail: str = ""
    status: str | None = None  # None: pass when error <= bound (or no error), else fail; or "note"/"fail"
    hint: str = ""             # what kind of mistake the error looks like, when its pattern is clear (hints.py)


@dataclass
class Context:
    """The backend under test and answers shared between checks (one computation, several rows)."""
    name: str               # as backends.build takes it: "torch@compile", "module.path:Class@mode", ...
    device: str
    dtype: str              # "float64", or "float32" when the backend refuses float64
    dtype_note: str = ""    # why the dtype is not float64, said in every measured row's detail
    memo: dict = field(default_factory=dict)

    @property
    def cls(self) -> type[Backend]:
        """The backend's class, for its classmethods; instances come from build()."""
        return backends.load(self.name)

    def build(self, spec: ModelSpec, params: Params | None, *, device: str | None = None, seed: int = 0) -> Backend:
        """An instance in the named mode, in the dtype, from params cast to it (None: native init), on the device."""
        params = None if params is None else cast(params, self.dtype)
        with own_errors():
            return backends.build(self.name, spec, params, device=device or self.device, dtype=self.dtype, seed=seed)

    def once(self, key, compute: Callable):
        """compute() the first time key is asked for; later the same value, or the same exception again."""
        if key not in self.memo:
            try:
                self.memo[key] = (True, compute())
            except Exception as e:  # kept so every row that shares this answer reports the same cause
                self.memo[key] = (False, e)
        ok, value = self.memo[key]
        if not ok:
            raise value
        return value


def cast(params: Params, dtype: str) -> Params:
    """Copies of params in dtype."""
    return {k: np.array(v, dtype=dtype) for k, v in params.items()}


def choose_dtype(name: str, spec: ModelSpec, params: Params, device: str) -> tuple[str, str]:
    """float64 when the backend accepts it, else float32 with the reason; other errors surface in the rows."""
    try:
        with own_errors():
            backends.build(name, spec, cast(params, "float64"), device=device, dtype="float64")
    except UNSUPPORTED as e:
        return "float32", f"float32, as float64 was refused ({first_line(e) or type(e).__name__})"
    except Exception:
        pass  # not a refusal of float64: the rows that build the model will report it
    return "float64", ""


@contextlib.contextmanager
def own_errors():
    """The backend's own exception, not build's BackendFailed around it: the kit tells a crash from a refusal."""
    try:
        yield
    except backends.BackendFailed as e:
        cause = e.__cause__
        # A sys.exit in the backend is a crash like any other: its row fails and the kit goes on.
        raise (cause if isinstance(cause, Exception) else RuntimeError(str(e))) from None

