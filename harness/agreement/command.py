"""`fwbench agree`: run the agreement checks and print, dump or emit them as JSON."""
from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np

from fwbench import backends
from fwbench import models
from fwbench.backends.base import BackendError, OptimizerConfig
from fwbench.harness.agreement import agree as ag
from fwbench.harness.agreement import view
from fwbench.harness.agreement.metrics import ZERO_FLOOR
from fwbench.harness import documents
from fwbench.harness.atomic import atomic_write, atomic_write_json, ensure_dir
from fwbench.harness.data import batch_order, load_mnist, normalize
from fwbench.harness.provenance import git_commit, machine
from fwbench.harness.session import MNIST_SHAPE, check_labels, check_memory, resolve_device
from fwbench.models.params import dropout_masks, init_buffers, init_params

DEFAULT_BACKENDS = ("numpy", "torch", "flax", "keras")


def backend_names(text: str | None) -> tuple[list[str], list[str]]:
    """Backends to compare and notes on defaults skipped for a missing framework."""
    if text is not None:  # given, even if empty: never quietly the default set
        names = [n.strip() for n in text.split(",") if n.strip()]
        groups = backends.processes(names)
        if len(groups) > 1:  # checked before any import: the second framework set-up would refuse
            runs = " and ".join(f"--backends numpy,{','.join(n for n in g if n != 'numpy')}" for g in groups)
            raise BackendError(f"{groups[1][0]} cannot run in one process with {', '.join(groups[0])} (its "
                               f"framework is set up per process); compare them in two runs: {runs}")
        for name in names:
            backends.load(name)  # unknown or missing: a clear error now
        return names, []
    names = [n for n in DEFAULT_BACKENDS if not backends.missing(n)]
    return names, [f"{n} skipped: not installed" for n in DEFAULT_BACKENDS if n not in names]


def batches(spec, args, count: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """`count` float64 batches: MNIST in the harness's batch order, or seeded synthetic data."""
    if args.data == "mnist" and spec.input == MNIST_SHAPE:
        data = load_mnist(args.data_dir)
        check_labels(spec, data.train_y)
        order = batch_order(len(data.train_x), args.batch_size, args.seed, 0)
        picked = [order[i % len(order)] for i in range(count)]
        out = [(normalize(data.train_x[i], "float64"), data.train_y[i].astype(np.int64)) for i in picked]
        return out, f"MNIST train batches ({data.source})"
    rng = np.random.default_rng(args.seed)
    out = [(rng.standard_normal((args.batch_size, *spec.input)), rng.integers(0, spec.classes, args.batch_size))
           for _ in range(count)]
    why = "--data random" if args.data == "random" else f"input {list(spec.input)} is not MNIST's"
    return out, f"synthetic normal inputs, random labels ({why})"


def agree(args) -> int:
    spec = models.get(args.model)
    fits(spec, args)
    if args.dump:
        ensure_dir(Path(args.dump), "--dump")  # a bad folder is said now, not after the computation
    names, notes = backend_names(args.backends)
    if not names:
        raise BackendError("no backend to compare; install torch or flax, or pass --backends numpy")
    classes = {n: backends.load(n) for n in names}
    # With --skip-unsupported a backend that refuses or fails at any stage is left out with a note; without,
    # its failure is one error line naming it.
    skipped: dict[str, str] | None = {} if args.skip_unsupported else None
    if args.skip_unsupported:
        classes, refused = usable(classes, spec, args)
        notes += refused
        names = list(classes)
        if not names:
            raise BackendError("no backend left to compare: " + "; ".join(refused))
    about = ag.attempt(names, "describing itself", lambda n: describe(classes[n], args.device), skipped)
    names = survivors(names, about, skipped, notes)
    numerics = {n: about[n]["numerics"] for n in names}
    devices = {n: about[n]["device"] for n in names}
    params = init_params(spec, args.seed, "float64")
    data, source = batches(spec, args, max(1, args.steps))
    x, y = data[0]
    doc = {"schema": documents.AGREE, "model": spec.name, "dtype": args.dtype, "batch_size": len(y), "seed": args.seed,
           "data": source, "notes": notes, "machine": machine(), "git": git_commit(),
           "tolerance": {"grad_rel_l2": ag.grad_tol(args.dtype, len(y))}}
    if args.steps:
        doc["tolerance"]["trajectory_rel"] = ag.TRAJECTORY_TOL[(args.dtype, args.optimizer)]
    if args.check == "fd":
        return fd(spec, params, x, y, doc, args)
    from fwbench.harness.agreement import ties
    conventions = ag.attempt(names, "in the tie probe", lambda n: ties.probe(n, devices[n], args.dtype), skipped)
    names = survivors(names, conventions, skipped, notes)
    runs_numpy = any(backends.split(n)[0] == "numpy" for n in names)
    numpy_by_winograd = ", ".join(map(str, ties.winograd_layers(spec, args.dtype))) if runs_numpy else ""
    if args.ties:
        x, y, params = ties.tie_case(spec, params, len(y), args.seed)
        doc["ties_hit"] = ties.count_ties(spec, params, x, seed=args.seed)
        doc["data"] = "constructed ties: 0/1 inputs, weights on a 1/4 grid, zero biases"
        if numpy_by_winograd:
            notes.append(f"numpy runs conv layer(s) {numpy_by_winograd} by Winograd in {args.dtype}: "
                         "its transforms round the constructed values, so rounding breaks their ties "
                         "(docs/agreement.md)")
    if args.steps and numpy_by_winograd:
        notes.append(f"numpy runs conv layer(s) {numpy_by_winograd} by Winograd in {args.dtype}, with 4 to 12 times "
                     "the direct conv's rounding error: where a max-pool window or a relu input is nearly tied, it "
                     "can go the other way and numpy's trajectory then parts from the reference's (docs/agreement.md)")
    report = ag.one_step(spec, names, params, x, y, dtype=args.dtype, devices=devices, skipped=skipped,
                         seed=args.seed)
    names = survivors(names, report.runs, skipped, notes)
    checked = ag.check(report, doc['tolerance']['grad_rel_l2'], args.dtype)
    breaches, at_ties = split_ties(checked, conventions, args.ties)
    doc["backends"] = {n: {"version": about[n]["version"], "mode": report.runs[n].mode, "device": devices[n],
                           "numerics": numerics[n], "ties": conventions[n], "loss": report.runs[n].loss}
                       for n in names}
    doc["reference"] = {"backend": "numpy", "dtype": "float64", "loss": report.runs[ag.REFERENCE].loss}
    doc["table"] = report.table
    doc["floor"] = {"value": report.floor, "of_largest": ZERO_FLOOR[args.dtype], "rows": report.floored}
    doc["worst"] = {m: list(ag.worst(report, m)) for m in ("max_abs", "rel_l2", "rho", "cosine")}
    lines = [view.step_table(report), *view.worst_lines(report)]
    traj = None
    if args.steps:
        config = OptimizerConfig(args.optimizer, lr=args.lr, momentum=args.momentum if args.optimizer == "sgd" else 0.0)
        traj = ag.trajectory(spec, names, params, data, config, dtype=args.dtype, devices=devices, skipped=skipped,
                             seed=args.seed)
        notes += [f"{n} left out of the trajectory: {skipped.pop(n)}" for n in names if n not in traj.losses]
        breaches += ag.check_trajectory(traj, doc['tolerance']['trajectory_rel'], args.dtype)
        doc["trajectory"] = {"optimizer": dataclasses.asdict(config), "losses": traj.losses,
                             "distance": traj.distance, "buffers": traj.buffers, "evaluation_logits": traj.logits,
                             "replicas_identical": traj.replicas}
        lines += view.trajectory_lines(traj)
    if args.dump:
        dump(Path(args.dump), spec, params, x, y, report, doc, traj)
    doc["breaches"], doc["tie_disagreements"], doc["passed"] = breaches, at_ties, not breaches
    if args.json:
        print(json.dumps(doc))
    else:
        print(header(doc, names))
        print("\n".join(lines))
        print(verdict(doc))
    return 1 if breaches else 0


def fits(spec, args) -> None:
    """Refuse, before any backend is built, a run that cannot fit in memory: the float64 reference and the batches."""
    config = OptimizerConfig(args.optimizer, momentum=args.momentum if args.optimizer == "sgd" else 0.0)
    stored = max(1, args.steps) * args.batch_size * (math.prod(spec.input) + 1) * 8  # every step's batch is kept
    check_memory(spec, args.batch_size, "float64", config, args.device, extra=(stored, "batches", "--steps"))


def describe(cls, device: str) -> dict:
    """What agree reports of a backend besides its numbers: version, pinned numerics and device."""
    return {"version": cls.version(), "numerics": cls.pin_numerics(), "device": resolve_device(cls, device)}


def survivors(names: list[str], done: dict, skipped: dict[str, str] | None, notes: list[str]) -> list[str]:
    """The backends that came through a stage; a note for each one left out, and an error if none is left."""
    if skipped is None:
        return names  # the stage raised on the first failure
    notes += [f"{n} skipped: {skipped.pop(n)}" for n in names if n not in done]
    left = [n for n in names if n in done]
    if not left:
        raise BackendError("no backend left to compare: " + "; ".join(notes))
    return left


def usable(classes: dict, spec, args) -> tuple[dict, list[str]]:
    """The backends that accept this spec, dtype, device and mode, and a note for each one that refuses."""
    params = init_params(spec, args.seed, args.dtype)
    kept, notes = {}, []
    for name, cls in classes.items():
        try:
            backends.build(name, spec, params, device=resolve_device(cls, args.device), dtype=args.dtype)
            kept[name] = cls
        except BackendError as e:
            notes.append(f"{name} skipped: {e}")
    return kept, notes


def split_ties(breaches: list[tuple[str, str]], conventions: dict[str, dict],
               ties_case: bool) -> tuple[list[str], list[str]]:
    """On a tie case, a breach between backends with different measured conventions is a tie, not a failure."""
    if not ties_case:
        return [line for _, line in breaches], []
    conventions = conventions | {ag.REFERENCE: conventions.get("numpy") or _numpy_conventions()}
    failures, at_ties = [], []
    for pair, line in breaches:
        a, b = pair.split("~")
        (at_ties if conventions[a] != conventions[b] else failures).append(line)
    return failures, at_ties


def _numpy_conventions() -> dict:
    from fwbench.harness.agreement import ties
    return ties.probe("numpy", "cpu")


def fd(spec, params, x, y, doc, args) -> int:
    """Central finite differences against the NumPy engine's float64 gradients."""
    from fwbench.harness.agreement.fdcheck import fd_check
    from fwbench.harness.agreement.fdcheck import worst as fd_worst
    result = fd_check(spec, params, x, y, seed=args.seed)
    name, rel = fd_worst(result)
    doc["fd"], doc["passed"] = result, rel <= FD_TOL
    if args.json:
        print(json.dumps(doc))
        return 0 if doc["passed"] else 1
    print(f"finite differences: {spec.name}, NumPy engine float64, batch {len(y)}, {doc['data']}")
    for key, r in result.items():
        print(f"  {key:12s} {len(r['coords'])} coordinates, worst relative error {r['worst_rel']:.2e}")
    print(f"worst: {rel:.2e} at {name} (bound {FD_TOL:g}): {'PASS' if doc['passed'] else 'FAIL'}")
    return 0 if doc["passed"] else 1


# Rounding noise in the central differences reads up to ~1e-6 (see harness/agreement/fdcheck.py); a wrong
# gradient is off by far more (a 1% error reads 1e-2).
FD_TOL = 1e-5


def dump(directory: Path, spec, params, x, y, report: ag.StepReport, doc: dict, traj: ag.Trajectory | None) -> None:
    """Everything needed to check the gradients with one's own code."""
    directory = ensure_dir(directory, "--dump")
    _savez(directory / "params.npz", params)
    _savez(directory / "batch.npz", {"x": x, "y": y})
    _savez(directory / "masks.npz", dropout_masks(spec, doc["seed"], 0, len(y)))  # what one_step gave every backend
    _savez(directory / "buffers.npz", init_buffers(spec, "float64"))
    for name, run in report.runs.items():
        _savez(directory / f"grads_{name}.npz", run.grads)
    for name, buffers in (traj.final_buffers.items() if traj and spec.buffer_shapes() else ()):
        _savez(directory / f"buffers_{name}.npz", buffers)
    summary = {k: doc[k] for k in ("schema", "model", "dtype", "batch_size", "seed", "data", "tolerance")}
    summary["losses"] = {name: run.loss for name, run in report.runs.items()}
    summary["backends"] = doc["backends"]
    atomic_write_json(directory / "summary.json", summary)


def _savez(path: Path, arrays: dict) -> None:
    """np.savez, replacing path in one step."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def header(doc: dict, names: list[str]) -> str:
    lines = [f"agree: {doc['model']}, {doc['dtype']}, batch {doc['batch_size']}, seed {doc['seed']}; "
             f"reference: NumPy engine in float64", f"data: {doc['data']}"]
    lines += [f"note: {n}" for n in doc["notes"]]
    for n in names:
        b = doc["backends"][n]
        settings = ", ".join(f"{k}={v}" for k, v in b["numerics"].items()) or "-"
        mode = f", mode {b['mode']}" if b["mode"] else ""
        lines.append(f"  {n} ({b['version']}{mode}) on {b['device']}: loss {b['loss']:.10f}; {settings}")
    lines.append("tie conventions (measured):")
    lines += view.ties_lines({n: doc["backends"][n]["ties"] for n in names})
    if "ties_hit" in doc:
        lines.append(f"tie case hits {doc['ties_hit']['relu_zeros']} relu zeros and {doc['ties_hit']['pool_ties']} "
                     "tied pool windows")
    return "\n".join(lines) + "\n"


def verdict(doc: dict) -> str:
    lines = [f"differs at ties (conventions differ, not a failure): {t}" for t in doc["tie_disagreements"]]
    if doc["breaches"]:
        lines += [f"FAIL {b}" for b in doc["breaches"]]
    else:
        tol = doc["tolerance"]
        after = ""
        if "trajectory" in doc:
            what = "parameters, buffers" if doc["trajectory"]["buffers"] else "parameters"
            after = f", {what} and evaluation logits within {tol['trajectory_rel']:g} after the trajectory"
        lines.append(f"PASS: every tensor within {tol['grad_rel_l2']:g} relative of the reference, twice that between "
                     f"two backends{after}")
    return "\n".join(lines)
