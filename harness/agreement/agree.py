"""Gradient and trajectory agreement: identical weights and batches into every backend, differences out."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, TypeVar

import numpy as np

from fwbench import backends
from fwbench.backends.base import Backend, BackendError, OptimizerConfig
from fwbench.harness.agreement.metrics import compare, exact_zeros, gradient_floor, tree_distance
from fwbench.models import ModelSpec
from fwbench.models.params import Params, dropout_masks

T = TypeVar("T")
REFERENCE = "reference"  # the NumPy engine in float64, whatever dtype is under test
# Relative L2 bounds, enforced on every tensor and every backend pair; docs/agreement.md has the
# measurements behind them. float64: the contract, met with five orders of magnitude to spare.
# float32: worst seen 3.3e-6 over cnn/mlp/tinycnn, seeds 1-3, batches 8-256. Rounding in a sum of n
# terms grows like sqrt(n), and the longest sums (bias gradients) grow with the batch, so the bound does too.
GRAD_TOL = {"float64": 1e-10, "float32": 1e-5}
# After K lockstep steps. SGD in float32 drifted at most 4.3e-7 in 100 steps. Adam divides by sqrt(v),
# so rounding noise in near-zero gradients becomes lr-sized steps: 100 float32 steps drifted up to 1.1e-2.
TRAJECTORY_TOL = {("float64", "sgd"): 1e-8, ("float64", "adam"): 1e-8,
                  ("float32", "sgd"): 1e-5, ("float32", "adam"): 5e-2}


def grad_tol(dtype: str, batch: int) -> float:
    """The relative L2 bound for one step at this batch size."""
    return GRAD_TOL[dtype] * (max(1.0, (batch / 256) ** 0.5) if dtype == "float32" else 1.0)


@dataclass
class Run:
    """One backend's answers on the shared batch."""
    name: str           # as given: "torch@compile", "numpy", "module.path:Class"
    mode: str | None    # the mode the instance was built in (the default when none was named)
    loss: float
    logits: np.ndarray
    grads: Params
    device: str


@dataclass
class StepReport:
    runs: dict[str, Run]
    rows: list[str]                       # "logits", "loss", then parameters in layer order
    table: dict[str, dict[str, dict]]     # row -> pair "a~b" -> metrics
    breaches: list[str] = field(default_factory=list)
    floor: float = 0.0                    # the absolute L2 floor exact zeros are judged against
    floored: list[str] = field(default_factory=list)  # gradient rows zero in exact arithmetic, judged on the floor


def pairs(names: list[str]) -> list[tuple[str, str]]:
    """Each backend against the reference, then every pair of backends."""
    return [(n, REFERENCE) for n in names] + list(combinations(names, 2))


def attempt(names: list[str], doing: str, fn: Callable[[str], T], skipped: dict[str, str] | None) -> dict[str, T]:
    """fn(name) for each backend, a failure blamed on it: raised, or with `skipped` recorded there and left out."""
    done = {}
    for name in names:
        try:
            with backends.blame(name, doing):
                done[name] = fn(name)
        except BackendError as e:
            if skipped is None:
                raise
            skipped[name] = str(e)
    return done


def evaluate(name: str, spec: ModelSpec, params: Params, x, y, *, dtype: str, device: str,
             masks: Params | None = None) -> Run:
    """Training loss and canonical gradients of one backend ("NAME" or "NAME@MODE"), with the harness's dropout
    masks, at the given weights; and its evaluation-mode logits."""
    backend = backends.build(name, spec, {k: v.astype(dtype) for k, v in params.items()}, device=device, dtype=dtype)
    if masks:
        backend.set_masks(masks)
    xd = x.astype(dtype)
    loss, grads = backend.loss_and_grads(xd, y)
    return Run(name, backend.mode, float(loss), np.asarray(backend.forward(xd)), grads, device)


def one_step(spec: ModelSpec, names: list[str], params: Params, x: np.ndarray, y: np.ndarray, *,
             dtype: str, devices: dict[str, str], skipped: dict[str, str] | None = None, seed: int = 0) -> StepReport:
    """Every backend's first-step loss, logits and gradients, compared pairwise and with the reference.

    Every one drops the same units: the masks of step 0 of `seed`. With `skipped`, a backend that fails is left out
    and its error recorded there; without, the error is raised."""
    masks = dropout_masks(spec, seed, 0, len(y))
    runs = {REFERENCE: evaluate("numpy", spec, params, x, y, dtype="float64", device="cpu", masks=masks)}
    runs |= attempt(names, "on the shared batch",
                    lambda n: evaluate(n, spec, params, x, y, dtype=dtype, device=devices[n], masks=masks), skipped)
    names = [n for n in names if n in runs]
    rows = ["logits", "loss", *spec.param_shapes()]
    # Only the reference can tell an exact zero from a small gradient: its rounding noise is far below both.
    floor, floored = gradient_floor(runs[REFERENCE].grads, dtype), exact_zeros(runs[REFERENCE].grads)
    table: dict[str, dict[str, dict]] = {row: {} for row in rows}
    for a, b in pairs(names):
        for row in rows:
            table[row][f"{a}~{b}"] = compare(_tensor(runs[a], row), _tensor(runs[b], row),
                                             floor if row in floored else 0.0)
    return StepReport(runs, rows, table, floor=floor, floored=floored)


def _tensor(run: Run, row: str) -> np.ndarray:
    if row == "logits":
        return run.logits
    if row == "loss":
        return np.array([run.loss])
    return run.grads[row]


def pair_tol(pair: str, tol: float) -> float:
    """A pair's bound: tol against the reference, twice tol between two backends."""
    # Each backend may be tol from the exact answer, the reference, in its own direction: two that both pass
    # may be 2 tol apart (overlap's float32 tie case: numpy 3.6e-6 and torch 9.5e-6 from the reference, 1.07e-5
    # apart), and failing them would be rounding noise crying wolf.
    return tol if REFERENCE in pair.split("~") else 2 * tol


def check(report: StepReport, tol: float, dtype: str) -> list[tuple[str, str]]:
    """(pair, message) for each tensor and pair whose relative L2 difference exceeds its bound (pair_tol)."""
    def of(row: str) -> str:
        return f"of the zero floor {report.floor:.3g}" if row in report.floored else "relative"
    return [(pair, f"{row}: {pair} differ by {m['rel_l2']:.3g} {of(row)} (bound {pair_tol(pair, tol):g} for {dtype})")
            for row, cells in report.table.items() for pair, m in cells.items()
            if not m["rel_l2"] <= pair_tol(pair, tol)]


def worst(report: StepReport, metric: str = "rel_l2") -> tuple[str, str, float]:
    """The (row, pair, value) furthest from agreement for a metric."""
    sign = -1 if metric == "cosine" else 1  # cosine is worst when smallest
    # The direction of two rounding noises says nothing, so an exact zero's cosine is no disagreement.
    cells = [(row, pair, m[metric]) for row, c in report.table.items() for pair, m in c.items()
             if not (metric == "cosine" and row in report.floored)]
    return max(cells, key=lambda cell: sign * cell[2])


@dataclass
class Trajectory:
    losses: dict[str, list[float]]        # backend -> loss at each step
    distance: dict[str, list[float]]      # pair "a~b" -> relative parameter distance after each step
    buffers: dict[str, list[float]] = field(default_factory=dict)  # pair -> relative buffer distance; {}: none
    logits: dict[str, dict] = field(default_factory=dict)          # pair -> evaluation logits' metrics at the end
    final_buffers: dict[str, Params] = field(default_factory=dict)  # backend -> buffers after the last step
    replicas: dict[str, bool] = field(default_factory=dict)  # data-parallel backend -> every worker identical


def trajectory(spec: ModelSpec, names: list[str], params: Params, batches, config: OptimizerConfig, *,
               dtype: str, devices: dict[str, str], skipped: dict[str, str] | None = None,
               seed: int = 0) -> Trajectory:
    """Train every backend and the reference in lockstep on the same batches; record where they drift.

    Step k drops the same units everywhere (the masks of step k of `seed`); after the last step every backend's
    evaluation logits on the first batch are compared, which read the running statistics. With `skipped`, a backend
    that fails is left out of the whole trajectory and its error recorded there."""
    reference = backends.build("numpy", spec, params, device="cpu", dtype="float64")
    reference.init_optimizer(config)
    cast = {k: v.astype(dtype) for k, v in params.items()}

    def start(name: str) -> Backend:
        backend = backends.build(name, spec, cast, device=devices[name], dtype=dtype)
        backend.init_optimizer(config)
        return backend
    instances = {REFERENCE: reference, **attempt(names, "to start training", start, skipped)}
    traj = Trajectory({n: [] for n in instances}, {f"{a}~{b}": [] for a, b in pairs(_others(instances))})
    if spec.buffer_shapes():
        traj.buffers = {pair: [] for pair in traj.distance}

    def each(doing: str, fn: Callable[[Backend, str], T]) -> dict[str, T]:
        """fn(backend, dtype) for the reference and every backend still in; one that fails is left out from now on."""
        done = {REFERENCE: fn(reference, "float64")}
        done |= attempt(_others(instances), doing, lambda n: fn(instances[n], dtype), skipped)
        for name in [n for n in instances if n not in done]:  # failed: left out of the trajectory, start to end
            del instances[name]
            _leave_out(traj, name)
        return done
    for k, (x, y) in enumerate(batches):
        masks = dropout_masks(spec, seed, k, len(y))
        steps = each("in a training step", lambda backend, dt: _step(backend, x.astype(dt), y, masks))
        for name, (loss, _, _) in steps.items():
            traj.losses[name].append(loss)
        for a, b in pairs(_others(instances)):
            traj.distance[f"{a}~{b}"].append(tree_distance(steps[a][1], steps[b][1]))
            if spec.buffer_shapes():
                traj.buffers[f"{a}~{b}"].append(tree_distance(steps[a][2], steps[b][2]))
    x = batches[0][0]
    logits = each("in evaluation after training", lambda backend, dt: np.asarray(backend.forward(x.astype(dt))))
    traj.logits = {f"{a}~{b}": compare(logits[a], logits[b]) for a, b in pairs(_others(instances))}
    traj.final_buffers = {name: steps[name][2] for name in instances}
    # A data-parallel backend's workers must end with bit-identical parameters, not only rank 0 right.
    parallel = [n for n in _others(instances) if getattr(instances[n], "data_parallel", False)]
    traj.replicas = attempt(parallel, "comparing its workers", lambda n: instances[n].replicas_identical(), skipped)
    return traj


def _leave_out(traj: Trajectory, name: str) -> None:
    """Drop a backend's losses and every series of a pair it is in."""
    del traj.losses[name]
    for series in (traj.distance, traj.buffers):
        for pair in [p for p in series if name in p.split("~")]:
            del series[pair]


def _others(instances: dict) -> list[str]:
    return [n for n in instances if n != REFERENCE]


def _step(backend: Backend, x: np.ndarray, y: np.ndarray, masks: Params) -> tuple[float, Params, Params]:
    """One training step with these dropout masks: its loss, and the parameters and buffers after it."""
    if masks:
        backend.set_masks(masks)
    loss = float(backend.train_step(backend.prepare_batch(x, y)))
    return loss, backend.get_params(), backend.get_buffers()


def check_trajectory(traj: Trajectory, tol: float, dtype: str) -> list[str]:
    """One line per pair whose final parameters, buffers or evaluation logits are further apart than the bound."""
    steps = len(next(iter(traj.losses.values())))

    def bound(pair: str) -> str:
        return f"(bound {pair_tol(pair, tol):g} for {dtype})"
    return ([f"{what}: {pair} drift {d[-1]:.3g} relative after {steps} steps {bound(pair)}"
             for what, series in (("parameters", traj.distance), ("buffers", traj.buffers))
             for pair, d in series.items() if d and not d[-1] <= pair_tol(pair, tol)]
            + [f"evaluation logits: {pair} differ by {m['rel_l2']:.3g} relative after {steps} steps {bound(pair)}"
               for pair, m in traj.logits.items() if not m["rel_l2"] <= pair_tol(pair, tol)]
            + [f"replicas: {name}'s workers hold different parameters after {steps} steps"
               for name, same in traj.replicas.items() if not same])
