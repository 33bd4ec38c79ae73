"""The conformance kit: built-ins pass; backends wrong on purpose (wrongmod.py) fail at the right layer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fwbench import backends
from fwbench.harness.conformance import BATTERY, hints, run_conformance
from fwbench.harness.conformance.runner import Result, prepare, run
from wrongmod import BATCHNORM_CASES, DROPOUT_CASES, OPTIMIZER_ROWS, SCALED_CONV_FAILS, SGD_SET_LR

ROOT = Path(__file__).resolve().parents[1]
NAMES = [check.name for check in BATTERY]


def statuses(doc: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}


def detail(doc: dict, name: str) -> str:
    return next(c["detail"] for c in doc["checks"] if c["name"] == name)


def test_numpy_passes_every_check_in_float64():
    doc = run_conformance("numpy")
    assert [c["name"] for c in doc["checks"]] == NAMES and len(set(NAMES)) == len(NAMES)
    assert set(statuses(doc).values()) == {"pass"}, [c for c in doc["checks"] if c["status"] != "pass"]
    assert doc["passed"] and doc["dtype"] == "float64" and doc["device"] == "cpu"
    assert doc["source"] == "built-in" and doc["version"].startswith("numpy")
    measured = [c for c in doc["checks"] if c["name"].startswith(("forward/", "backward/", "model/", "optimizer/"))]
    assert measured and all(c["bound"] == 1e-10 and c["error"] <= 1e-10 for c in measured)
    state = [c for c in doc["checks"] if c["name"].startswith("state/")]
    assert state and all(c["error"] is not None and c["error"] <= c["bound"] for c in state)
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize("name", ["torch", "flax"])
def test_installed_builtins_pass(name):
    if backends.missing(name):
        pytest.skip(f"{name} not installed")
    doc = run_conformance(name)
    assert doc["passed"], [c for c in doc["checks"] if c["status"] != "pass"]
    assert set(statuses(doc).values()) == {"pass"}  # float64 everywhere, canonical ties, bit-identical repeats


def test_wrong_conv_gradient_fails_rows_that_name_conv2d(wrong):
    doc = run_conformance(wrong.ScaledConvGrad)
    failed = {name for name, status in statuses(doc).items() if status == "fail"}
    # Only the rows whose gradients pass through a conv weight; forward rows and dense rows stay green.
    assert failed == SCALED_CONV_FAILS
    assert not doc["passed"]
    assert detail(doc, "backward/conv2d 3x3 stride 2 padding 1") == (
        "conv2d 3x3 stride 2 padding 1: gradient of 0.weight (conv2d) off by 1.0e-01 relative")
    assert "gradient of 0.weight (conv2d) off by 1.0e-01" in detail(doc, "model/tinycnn")
    assert "3.weight (conv2d)" in detail(doc, "model/tinycnn")  # the second conv too
    error = next(c["error"] for c in doc["checks"] if c["name"] == "backward/conv2d 3x3")
    assert error == pytest.approx(0.1, rel=1e-6)
    assert not any(c["hint"] for c in doc["checks"])  # 1.1x is a wrong value, not a factor of 2 or a float32


def hinted(doc: dict) -> dict[str, str]:
    return {c["name"]: c["hint"] for c in doc["checks"] if c["hint"]}


def test_a_gradient_a_clean_factor_off_gets_the_scale_hint(wrong, monkeypatch):
    monkeypatch.setattr(wrong.ScaledConvGrad, "FACTOR", 2.0)
    doc = run_conformance(wrong.ScaledConvGrad)
    assert failures(doc) == SCALED_CONV_FAILS and set(hinted(doc)) == SCALED_CONV_FAILS
    assert hinted(doc)["backward/conv2d 3x3"] == (
        "gradient of 0.weight (conv2d) is 2x the reference's: looks like a scale factor (a mean vs a sum?)")
    assert hinted(doc)["model/tinycnn"].startswith("gradient of ") and " is 2x " in hinted(doc)["model/tinycnn"]
    monkeypatch.setattr(wrong.ScaledConvGrad, "FACTOR", 0.25)
    [result] = run(prepare(wrong.ScaledConvGrad), [c for c in BATTERY if c.name == "backward/conv2d 3x3"])
    assert result.status == "fail" and result.hint.startswith("gradient of 0.weight (conv2d) is 1/4 of the reference's")


def test_lr_inside_the_momentum_buffer_fails_only_sgd_with_set_lr(wrong):
    assert SGD_SET_LR in NAMES  # and the numpy backend passes it with the rest
    doc = run_conformance(wrong.LrInsideMomentum)
    assert failures(doc) == {SGD_SET_LR}  # with a constant lr the two are the same steps
    assert detail(doc, SGD_SET_LR).startswith("sgd momentum 0.9 with set_lr: update of ")
    assert next(c["error"] for c in doc["checks"] if c["name"] == SGD_SET_LR) > 0.1
    assert not hinted(doc)


def test_a_float32_learning_rate_gets_the_float32_hint_in_the_json_document(wrong, capsys, cli):
    assert cli(["wrongmod:Float32LearningRate", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert failures(doc) == OPTIMIZER_ROWS - {"training/tinycnn loss falls"}  # the loss still falls
    assert all(1e-9 < c["error"] < 1e-6 for c in doc["checks"] if c["status"] == "fail")
    assert hinted(doc) == {name: hints.FLOAT32 for name in failures(doc)}  # on the failing rows, and only there


def test_a_channels_last_flatten_points_the_rows_it_breaks_at_the_flatten(wrong, capsys, cli):
    assert cli(["wrongmod:ChannelsLastFlattenAnyDevice"]) == 1
    rows = {line.split("  ")[0]: line.rstrip() for line in capsys.readouterr().out.splitlines()}
    rows = {name: rows[name] for name in NAMES}
    failed = {name for name, line in rows.items() if " FAIL " in line}
    flatten = {"forward/flatten (C, H, W order)", "backward/flatten (C, H, W order)"}
    device = "device/unavailable device refused"
    assert flatten | {"model/tinycnn", SGD_SET_LR, device} <= failed and "forward/dense" not in failed
    got = {name: line.split("; hint: ")[1] for name, line in rows.items() if "; hint: " in line}
    # The device row's failure is its own: no hint there.
    assert got == {name: hints.FLATTEN if name in flatten else hints.FLATTEN_FIRST for name in failed - {device}}


def test_the_flatten_hint_needs_dense_to_pass():
    def row(name: str, status: str) -> Result:
        return Result(name, status, None, None, "", 0.0)
    flatten, conv = row("forward/flatten (C, H, W order)", "fail"), row("forward/conv2d 3x3", "fail")
    assert [r.hint for r in hints.annotate([row("forward/dense", "pass"), flatten, conv])] == [
        "", hints.FLATTEN, hints.FLATTEN_FIRST]
    assert not any(r.hint for r in hints.annotate([row("forward/dense", "fail"), flatten, conv]))
    assert not any(r.hint for r in hints.annotate([flatten, conv]))  # one row at a time (pytest): no pattern


def failures(doc: dict) -> set[str]:
    return {name for name, status in statuses(doc).items() if status == "fail"}


def test_every_batchnorm_and_dropout_case_has_state_rows():
    batchnorm = ("buffers round trip", "loss_and_grads keeps state", "training steps", "evaluation")
    want = [f"state/{case}: {what}" for case in BATCHNORM_CASES for what in batchnorm]
    want += [f"state/{case}: {what}" for case in DROPOUT_CASES for what in ("training steps", "evaluation")]
    assert [name for name in NAMES if name.startswith("state/")] == want


def test_running_variance_updated_with_the_biased_variance_fails_the_training_rows(wrong):
    doc = run_conformance(wrong.BiasedRunningVar)
    assert failures(doc) == {f"state/{case}: training steps" for case in BATCHNORM_CASES}
    text = detail(doc, "state/batchnorm (F): training steps")
    assert text.startswith("batchnorm (F), 2 sgd momentum 0.9 steps: change of 2.running_var (batchnorm) off by ")
    assert "running_mean" not in text and ".weight" not in text


def test_masks_ignored_fail_the_dropout_gradient_and_training_rows(wrong):
    doc = run_conformance(wrong.IgnoresMasks)
    assert failures(doc) == {"backward/dropout 0.5", "state/dropout 0.5: training steps"}
    assert "gradient of 0.weight (conv2d) off by" in detail(doc, "backward/dropout 0.5")


def test_batch_statistics_in_forward_fail_the_evaluation_rows(wrong):
    doc = run_conformance(wrong.BatchStatsForward)
    assert failures(doc) == {row for case in BATCHNORM_CASES
                             for row in (f"forward/{case}", f"state/{case}: evaluation")}
    assert detail(doc, "state/batchnorm (C, H, W): evaluation").startswith("batchnorm (C, H, W): logits off by ")


def test_loss_and_grads_that_moves_the_buffers_fails_keeps_state(wrong):
    doc = run_conformance(wrong.StatefulLossAndGrads)
    assert failures(doc) == {f"state/{case}: loss_and_grads keeps state" for case in BATCHNORM_CASES}
    text = detail(doc, "state/batchnorm (F): loss_and_grads keeps state")
    assert "2.running_mean (batchnorm)" in text and "2.running_var (batchnorm)" in text and ".weight" not in text


def test_buffers_handed_out_live_fail_the_round_trip(wrong):
    doc = run_conformance(wrong.AliasedBuffers)
    assert failures(doc) == {f"state/{case}: buffers round trip" for case in BATCHNORM_CASES}
    assert "changed with set_buffers; return copies" in detail(doc, "state/batchnorm (F): buffers round trip")


def test_a_layer_the_backend_lacks_gets_not_supported_rows(wrong):
    doc = run_conformance(wrong.NoBatchNorm)
    unsupported = {name for name, status in statuses(doc).items() if status == "not supported"}
    assert unsupported == {"lowering/batchnorm", *[f"{row}/{case}" for case in BATCHNORM_CASES
                                                  for row in ("forward", "backward")],
                           *[name for name in NAMES if name.startswith(tuple(f"state/{c}" for c in BATCHNORM_CASES))]}
    assert doc["passed"] and detail(doc, "state/batchnorm (F): evaluation") == (
        "backend 'numpy' has no lowering for batchnorm")


def test_a_gradient_zero_in_exact_arithmetic_is_measured_against_the_floor(wrong, monkeypatch):
    from fwbench.harness.agreement.metrics import ZERO_FLOOR
    backward = [c for c in BATTERY if c.name.startswith("backward/batchnorm")]
    floor = ZERO_FLOOR["float64"]  # of the largest gradient's norm
    # Noise of a tenth of the bound times the floor passes, though against the reference's own rounding
    # noise in that gradient (or its exact zero) it is as large as the gradient itself.
    monkeypatch.setattr(wrong.NoisyZeroGrad, "SCALE", 1e-11 * floor)
    results = run(prepare(wrong.NoisyZeroGrad), backward)
    assert [r.status for r in results] == ["pass", "pass"]
    assert [r.error for r in results] == [pytest.approx(1e-11, rel=1e-3)] * 2
    monkeypatch.setattr(wrong.NoisyZeroGrad, "SCALE", 1e-6 * floor)  # an error, not noise
    results = run(prepare(wrong.NoisyZeroGrad), backward)
    assert [r.status for r in results] == ["fail", "fail"]
    assert "gradient of 0.bias (conv2d) off by 1.0e-06 relative" in results[0].detail
    assert "gradient of 1.bias (dense) off by 1.0e-06 relative" in results[1].detail


def test_an_epoch_through_train_steps_must_run_every_step(wrong):
    doc = run_conformance(wrong.SkipsLastStep)
    assert {n for n, st in statuses(doc).items() if st == "fail"} == {"training/an epoch through train_steps"}
    assert "train_steps returned 6 losses for 7 steps" in detail(doc, "training/an epoch through train_steps")


def test_a_mode_named_after_at_is_the_one_every_check_builds(wrong):
    wrong.Moded.built.clear()
    doc = run_conformance("wrongmod:Moded@fancy")
    assert doc["passed"] and doc["backend"] == "wrongmod:Moded@fancy" and doc["mode"] == "fancy"
    assert wrong.Moded.built and set(wrong.Moded.built) == {"fancy"}  # the tie probes and native init too


def test_a_class_is_checked_under_its_module_path_and_must_be_findable_there(wrong):
    assert prepare(wrong.ScaledConvGrad).name == "wrongmod:ScaledConvGrad"

    class Local(wrong.NoisyGrads):
        pass
    with pytest.raises(backends.BackendError, match="cannot be loaded as '.*Local'; define it at the top level"):
        run_conformance(Local)


def test_transposed_dense_weights_fail_the_round_trip_naming_dense(wrong):
    doc = run_conformance(wrong.TransposedDense)
    status = statuses(doc)
    assert status["round trip/canonical params"] == "fail" and not doc["passed"]
    text = detail(doc, "round trip/canonical params")
    assert "4.weight (dense) after construction: shape (5, 12), expected (12, 5)" in text
    assert "6.weight (dense) after construction: values differ" in text  # the square one: same shape, wrong values
    assert "(conv2d)" not in text
    assert status["forward/dense"] == "pass"  # the computation itself is right; only the conversion is not


def test_missing_optimizers_are_not_supported_not_failed(wrong, capsys, cli):
    doc = run_conformance(wrong.NoOptimizers)
    unsupported = {name for name, status in statuses(doc).items() if status == "not supported"}
    assert unsupported == OPTIMIZER_ROWS
    assert detail(doc, "optimizer/adam") == "numpy does not support optimizer 'adam'"
    assert doc["passed"] and "fail" not in statuses(doc).values()
    assert cli(["wrongmod:NoOptimizers"]) == 0
    passing = len(BATTERY) - len(OPTIMIZER_ROWS)
    assert f"conformant: {passing} pass, {len(OPTIMIZER_ROWS)} not supported" in capsys.readouterr().out


def test_refusing_a_required_method_fails_instead_of_being_unsupported(wrong):
    doc = run_conformance(wrong.NoGradients)
    status = statuses(doc)
    assert not doc["passed"]
    assert status["backward/conv2d 3x3"] == "fail" and status["model/tinycnn"] == "fail"
    assert detail(doc, "backward/conv2d 3x3").startswith("required, but refused: ")
    assert status["forward/conv2d 3x3"] == "pass"


def test_float64_refused_falls_back_to_float32_bounds(wrong):
    doc = run_conformance(wrong.Float32Only)
    assert doc["passed"] and doc["dtype"] == "float32"
    assert "float64 was refused (backend 'float32only' supports only float32" in doc["dtype_note"]
    forward = next(c for c in doc["checks"] if c["name"] == "forward/conv2d 3x3")
    assert forward["bound"] == 1e-5 and 0 < forward["error"] < 1e-5 and "float64 was refused" in forward["detail"]
    # The conv bias in front of a batch norm has an exactly-zero gradient: float32's rounding noise there is
    # measured against the floor, not against the reference's own float64 noise.
    backward = next(c for c in doc["checks"] if c["name"] == "backward/batchnorm (C, H, W)")
    assert backward["status"] == "pass" and 0 < backward["error"] < 1e-5


def test_a_crash_fails_its_rows_in_one_line_and_the_battery_goes_on(wrong):
    doc = run_conformance(wrong.CrashingForward)
    status = statuses(doc)
    crashed = {n for n, s in status.items() if s == "fail"}
    assert crashed == {n for n in NAMES if n.startswith(("forward/", "model/")) or n.endswith(": evaluation")}
    assert detail(doc, "forward/dense") == "raised ZeroDivisionError: division by zero"
    assert not hinted(doc)  # flatten fails, but so does dense: not the flatten's fault
    assert status["backward/dense"] == "pass" and status["ties/max-pool"] == "pass"


def test_a_device_it_cannot_use_must_raise_backend_error(wrong):
    doc = run_conformance(wrong.AnyDevice)
    assert [n for n, s in statuses(doc).items() if s == "fail"] == ["device/unavailable device refused"]
    assert detail(doc, "device/unavailable device refused") == (
        "device 'cuda' raised KeyError: 'cuda', not BackendError; "
        "device 'no-such-device' raised KeyError: 'no-such-device', not BackendError")


def test_other_tie_conventions_and_tiny_nondeterminism_are_notes(wrong, monkeypatch):
    from fwbench.harness.agreement import ties
    monkeypatch.setattr(ties, "probe", lambda cls, device, dtype: {"relu_grad_at_zero": 1.0,
                                                                   "maxpool_tie": "split"})
    doc = run_conformance(wrong.NoisyGrads)
    status = statuses(doc)
    assert [n for n, s in status.items() if s == "note"] == ["determinism/loss and gradients", "ties/relu'(0)",
                                                            "ties/max-pool"]
    assert doc["passed"] and "fail" not in status.values()
    assert detail(doc, "ties/max-pool").startswith("tied maxima -> split; canonical is first")
    assert detail(doc, "determinism/loss and gradients").startswith("not bit-identical: ")
    monkeypatch.setattr(wrong.NoisyGrads, "SCALE", 1e-6)  # beyond the float64 bound: no longer a note
    ctx = prepare(wrong.NoisyGrads)
    [result] = run(ctx, [c for c in BATTERY if c.name == "determinism/loss and gradients"])
    assert result.status == "fail" and result.error > 1e-10 and result.hint == ""  # 1e-6, but not against float32
