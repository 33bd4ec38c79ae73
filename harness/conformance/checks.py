"""The battery: every named check, in the order the table shows them (simplest layers first)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fwbench.harness.agreement import ties
from fwbench.harness.conformance import layers, parallel, protocol, state, training
from fwbench.harness.conformance.cases import layer_type, spec_of
from fwbench.harness.conformance.context import UNSUPPORTED, Context, Outcome, own_errors
from fwbench.backends.messages import first_line

CANONICAL_TIES = {"relu_grad_at_zero": 0.0, "maxpool_tie": "first"}


@dataclass(frozen=True)
class Check:
    name: str                          # "group/what", unique; the pytest test id
    run: Callable[[Context], Outcome]
    required: bool = False             # a refusal here fails: without it a backend cannot be compared at all


# Every backend must build the small models, convert parameters and give gradients; optimizers, native
# initialisation, devices and larger models may be honestly unsupported.
REQUIRED = ("protocol/", "round trip/", "model/tinycnn", "determinism/loss")
# Rows about one layer type ("lowering/relu", "forward/relu", ...): required for the types tinycnn uses, as every
# backend must run it; a backend may refuse any other type, and those rows are then "not supported".
LAYER_ROWS = ("lowering", "forward", "backward")
REQUIRED_LAYERS = frozenset(layer.type for layer in spec_of("tinycnn").layers)


def required(name: str) -> bool:
    """Whether a refusal of the named check fails the backend."""
    group, _, what = name.partition("/")
    if group in LAYER_ROWS:
        return layer_type(what) in REQUIRED_LAYERS
    return name.startswith(REQUIRED)


def _ties(ctx: Context, key: str) -> Outcome:
    """The measured convention: pass when canonical, a note when not, never a failure."""
    def probe() -> dict:
        with own_errors():
            return ties.probe(ctx.name, ctx.device, ctx.dtype)
    try:
        measured = ctx.once("ties", probe)
    except UNSUPPORTED:
        raise
    except Exception as e:  # ties are reported, not enforced, so even a crash in the probe is a note
        return Outcome(None, None, f"could not measure: {type(e).__name__}: {first_line(e)}", "note")
    value, canonical = measured[key], CANONICAL_TIES[key]
    text = f"relu'(0) = {value:g}" if key == "relu_grad_at_zero" else f"tied maxima -> {value}"
    if value == canonical:
        return Outcome(None, None, f"{text} (canonical)")
    return Outcome(None, None, f"{text}; canonical is {canonical}: gradients differ only at exact ties", "note")


def _battery() -> list[Check]:
    rows = [("protocol/version, devices, pin_numerics", protocol.protocol),
            ("round trip/canonical params", protocol.round_trip),
            *layers.lowering_checks(),
            *layers.layer_checks(),
            *state.state_checks(),
            *layers.model_checks(),
            *[(f"optimizer/{label}", lambda ctx, label=label: training.optimizer(ctx, label))
              for label in training.CONFIGS],
            ("optimizer/set_lr keeps state", training.set_lr),
            ("optimizer/sgd momentum with set_lr", training.sgd_set_lr),
            ("training/an epoch through train_steps", training.epoch),
            ("determinism/loss and gradients", protocol.repeat),
            ("determinism/native init from a seed", protocol.native_init),
            ("device/unavailable device refused", protocol.device_refusal),
            ("training/tinycnn loss falls", training.smoke),
            ("ties/relu'(0)", lambda ctx: _ties(ctx, "relu_grad_at_zero")),
            ("ties/max-pool", lambda ctx: _ties(ctx, "maxpool_tie"))]
    return [Check(name, run, required(name)) for name, run in rows]


BATTERY: list[Check] = _battery()


# The data-parallel section: for backends that declare data_parallel, after the battery.
PARALLEL: list[Check] = [Check(name, run) for name, run in parallel.CHECKS]


def battery_for(cls) -> list[Check]:
    """Every check for this backend class: the battery, and the data-parallel section where it declares it."""
    return BATTERY + (PARALLEL if getattr(cls, "data_parallel", False) else [])
