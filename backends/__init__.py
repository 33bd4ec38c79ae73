"""Registry of backends: built-ins, plugins from the `fwbench.backends` entry points, and module:Class paths."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass

from fwbench.backends.base import Backend, BackendError, OptimizerConfig
from fwbench.backends.messages import one_line
from fwbench.models.params import Params
from fwbench.models.spec import ModelSpec

__all__ = ["Backend", "BackendError", "BackendFailed", "BrokenBackend", "MissingDependency", "OptimizerConfig",
           "BUILTIN", "Entry", "GROUP", "blame", "build", "data_parallel", "entries", "load", "missing", "modes",
           "names", "processes", "source", "split"]

class MissingDependency(BackendError):
    """A backend's framework or one of its modules is not installed."""


class BrokenBackend(BackendError):
    """A backend's module fails to import, or does not hold a Backend class."""


class BackendFailed(BrokenBackend):
    """A backend's own code raised or called sys.exit; the original exception is the __cause__."""


GROUP = "fwbench.backends"  # the entry-point group a plugin package registers its backend class in


@dataclass(frozen=True)
class Entry:
    target: str                 # "module:Class"
    requires: tuple[str, ...]   # top-level modules that must be importable
    install: str                # how to get them
    source: str = "built-in"    # or "plugin <distribution> <version>"
    # Modes that another class implements, mode -> its entry: one whose framework is set up per process.
    modes: tuple[tuple[str, Entry], ...] = ()
    # Entries with different non-empty process tags cannot be imported into one process (Keras on two backends).
    process: str = ""
    # A mode that sets process-wide state every other name of its framework would run under (an XLA flag): its own
    # process, away from every other name, even those without a tag.
    apart: bool = False
    data_parallel: bool = False  # a mode over --workers processes or devices: the bench adds its 1-worker baseline


BUILTIN: dict[str, Entry] = {
    "numpy": Entry("fwbench.backends.numpy_backend:NumpyBackend", ("numpy",), "pip install numpy"),
    "torch": Entry("fwbench.backends.torch_backend:TorchBackend", ("torch",), "pip install 'fwbench[torch]'",
                   modes=(("ddp", Entry("fwbench.backends.torch_ddp:TorchDDPBackend", ("torch",),
                                        "pip install 'fwbench[torch]'", data_parallel=True)),)),
    "flax": Entry("fwbench.backends.flax_backend:FlaxBackend", ("jax", "flax", "optax"), "pip install 'fwbench[flax]'",
                  modes=(("dp", Entry("fwbench.backends.flax_dp:FlaxDPBackend", ("jax", "flax", "optax"),
                                      "pip install 'fwbench[flax]'", data_parallel=True)),
                         ("eigen", Entry("fwbench.backends.flax_eigen:FlaxEigenBackend", ("jax", "flax", "optax"),
                                         "pip install 'fwbench[flax]'", process="xla eigen conv", apart=True)))),
    "keras": Entry("fwbench.backends.keras_backend:KerasBackend", ("tensorflow", "keras"),
                   "pip install 'fwbench[keras]'", process="keras on tensorflow",
                   modes=(("jax", Entry("fwbench.backends.keras_jax_backend:KerasJaxBackend", ("keras", "jax", "optax"),
                                        "pip install 'fwbench[keras,flax]'", process="keras on jax")),)),
    "micrograd": Entry("fwbench.backends.micrograd_backend:MicrogradBackend", ("numpy",), "built in; needs only numpy"),
}


@functools.cache
def plugins() -> dict[str, Entry]:
    """Backends that installed packages register under the entry-point group; built-in names win."""
    found: dict[str, Entry] = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in BUILTIN or ep.name in found:
            continue  # a plugin cannot take over a built-in name, and the first registration wins
        dist = ep.dist
        where = f"plugin {dist.name} {dist.version}" if dist else "plugin"
        hint = f"pip install {dist.name}" if dist else "reinstall the plugin"
        found[ep.name] = Entry(ep.value, (), hint, where)
    return found


def entries() -> dict[str, Entry]:
    """Every registered backend: built-ins first, then plugins."""
    return {**BUILTIN, **plugins()}


def names() -> list[str]:
    """Names of every registered backend."""
    return list(entries())


def split(name: str) -> tuple[str, str | None]:
    """"flax@scan" -> ("flax", "scan"); a name without "@" has no mode (the backend's default)."""
    base, at, mode = name.partition("@")
    if at and not mode:
        raise BackendError(f"backend '{name}': nothing after '@'; write NAME@MODE, e.g. torch@compile")
    return base, mode or None


def source(name: str) -> str:
    """Where a backend comes from: built-in, a plugin distribution, or a module path."""
    name = split(name)[0]
    return "module path" if _is_path(name) else _entry(name).source


def missing(name: str) -> list[str]:
    """The framework modules a registered backend (in its mode, if named) is known to need that are not installed."""
    if _is_path(split(name)[0]):
        return []
    return [m for m in _resolve(name).requires if importlib.util.find_spec(m) is None]


def modes(name: str, cls: type[Backend]) -> list[str]:
    """Every mode of a backend: its class's, then those another class implements (keras@jax)."""
    base = split(name)[0]
    return list(cls.modes) + ([m for m, _ in _entry(base).modes] if not _is_path(base) else [])


def data_parallel(name: str) -> bool:
    """Whether NAME@MODE is a registered data-parallel mode (torch@ddp), known without importing it."""
    return not _is_path(split(name)[0]) and _resolve(name).data_parallel


def processes(names: list[str]) -> list[list[str]]:
    """The names split into groups that can each share one process: the first holds every name without a process
    tag, and the first tag's; each further group one tag's names; a tag kept apart never joins the first."""
    entries = {n: Entry(n, (), "") if _is_path(split(n)[0]) else _resolve(n) for n in names}
    tags = {n: e.process for n, e in entries.items()}
    order = list(dict.fromkeys(t for n, t in tags.items() if t and not entries[n].apart))
    groups = [[n for n in names if not entries[n].apart and tags[n] in ("", *order[:1])]]
    groups += [[n for n in names if tags[n] == t] for t in order[1:]]
    for name in (n for n in names if entries[n].apart):  # with the first group unless a name there shares a module
        shares = any(set(entries[name].requires) & set(entries[n].requires) for n in groups[0])
        group = next((g for g in groups[1:] if tags[g[0]] == tags[name]), None) if shares else groups[0]
        if group is None:
            groups.append(group := [])
        group.append(name)
    return [g for g in groups if g] or [[]]


def load(name: str) -> type[Backend]:
    """The class for a name or "module.path:ClassName", with an optional "@mode"; BackendError saying why not."""
    full, (name, mode) = name, split(name)
    entry = Entry(name, (), "check the module path") if _is_path(name) else _resolve(full)
    absent = missing(full)
    if absent:
        raise MissingDependency(f"backend '{name}' needs {', '.join(absent)}, which is not installed; "
                                f"install it with: {entry.install}")
    module, _, attr = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        if _is_path(name) and e.name == module.split(".")[0]:
            raise BrokenBackend(f"backend '{name}': no module named '{module}'") from None
        raise MissingDependency(f"backend '{name}' needs module '{e.name}', which is not installed; "
                                f"install it ({entry.install})") from None
    except BackendError:
        raise  # the module's own clear refusal, e.g. Keras already imported on another backend
    except (Exception, SystemExit) as e:  # a plugin's import can fail in any way; it must not take the CLI down
        raise BrokenBackend(f"backend '{name}' is broken: {one_line(e)}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BrokenBackend(f"backend '{name}': {entry.target} is not a subclass of backends.base.Backend")
    if mode is not None and mode not in cls.modes:
        offered = modes(name, cls)
        choose = f"choose one of {', '.join(offered)}" if offered else "it has none"
        raise BackendError(f"backend '{cls.name}' has no mode '{mode}'; {choose}")
    return cls


def build(name: str, spec: ModelSpec, params: Params | None, *, device: str, dtype: str, seed: int = 0) -> Backend:
    """An instance of "NAME", "NAME@MODE" or "module.path:ClassName[@MODE]", in the named mode; BackendError if not."""
    cls, mode = load(name), split(name)[1]
    with blame(name, "to build"):
        # Only a named mode is passed on, so a backend without modes keeps the plain constructor.
        return cls(spec, params, device=device, dtype=dtype, seed=seed, **({"mode": mode} if mode else {}))


@contextlib.contextmanager
def blame(name: str, doing: str, keep: tuple[type[BaseException], ...] = ()):
    """Turn whatever a backend's own code raises, sys.exit included, into one BackendFailed line naming it."""
    try:
        yield
    except (BackendError, *keep):
        raise  # already says what is wrong, or is the caller's to handle
    except (Exception, SystemExit) as e:  # third-party code fails in any way; KeyboardInterrupt still interrupts
        if os.environ.get("FWBENCH_DEBUG"):
            raise  # the backend's own traceback, as cli.main shows for every error
        raise BackendFailed(f"backend '{name}' failed {doing}: {one_line(e)}") from e


def _is_path(name: str) -> bool:
    return ":" in name


def _resolve(name: str) -> Entry:
    """The entry for "NAME" or "NAME@MODE": the mode's own, where another class implements it."""
    base, mode = split(name)
    entry = _entry(base)
    return dict(entry.modes).get(mode, entry)


def _entry(name: str) -> Entry:
    known = entries()
    if name not in known:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(known)}, "
                           "or give module.path:ClassName")
    return known[name]
