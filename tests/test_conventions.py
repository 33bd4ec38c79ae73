"""`fwbench conventions`: the facts measured on the installed frameworks, the document, the command and the reports."""
import argparse
import json
import math

import pytest

from fwbench.harness.conventions import command, document, drift, probes
from fwbench.harness.conventions.view import markdown


# The measured facts, once per session: if a framework changes one of them, these fail and say which.

@pytest.fixture(scope="module")
def doc():
    return document.collect()


def test_document_is_self_describing_json(doc):
    assert json.loads(json.dumps(doc)) == doc
    assert doc["kind"] == "fwbench.conventions"
    assert set(doc["probes"]) == set(document.PROBES)
    for name, framework in doc["frameworks"].items():
        assert framework["installed"] is (name in doc["measured"])
        if framework["installed"]:
            assert framework["version"]
            assert set(doc["measured"][name]) == set(document.PROBES)
    assert doc["frameworks"]["canonical"]["installed"]
    assert {"how", "rows"} <= set(doc["drifts"]["batchnorm"]) and {"how", "rows"} <= set(doc["drifts"]["adam"])
    assert not document.errors(doc)


def test_torch_conventions(doc):
    pytest.importorskip("torch")
    found = doc["measured"]["torch"]
    assert found["batchnorm"] == {"momentum_meaning": "batch", "momentum_default": 0.1,
                                  "batch_weight_at_default": 0.1, "eps_default": 1e-5, "running_var": "unbiased"}
    assert found["avgpool"] == {"default_stride": "size", "count_include_pad": "counted"}
    assert found["same_padding"]["k2 s1"] == {"pads": [0, 1, 0, 1], "odd_pixel": "end"}
    assert found["same_padding"]["k2 s2"] == {"refused": "padding='same' is not supported for strided convolutions"}
    assert found["adam"] == {"placement": "mhat / (sqrt(vhat) + eps)", "eps_default": 1e-8,
                             "eps_root_default": None, "eps_root": "no such option"}
    assert found["sgd"] == {"learning_rate": "outside the buffer", "second_update": -0.95}
    for key, value in found["init"].items():
        assert (value["distribution"], value["fan"], value["fan_exponent"]) == ("uniform", "fan_in", -0.5), key
        assert value["bound"] == pytest.approx(1.0, abs=0.01), key
    assert found["dropout"] == {"kept_scale": 2.0, "scaling": "inverted",
                                "dropped_fraction": pytest.approx(0.5, abs=0.01), "reseeding_repeats": True,
                                "consecutive_calls_differ": True, "unseeded": "runs"}


def test_flax_conventions(doc):
    for module in ("jax", "flax", "optax"):
        pytest.importorskip(module)
    found = doc["measured"]["flax"]
    assert found["batchnorm"] == {"momentum_meaning": "running", "momentum_default": 0.99,
                                  "batch_weight_at_default": 0.01, "eps_default": 1e-5, "running_var": "biased"}
    assert found["avgpool"] == {"default_stride": "1", "count_include_pad": "counted"}
    assert found["same_padding"] == {c: {"pads": [0, 1, 0, 1], "odd_pixel": "end"} for c in probes.SAME_CASES}
    assert found["adam"] == {"placement": "mhat / (sqrt(vhat) + eps)", "eps_default": 1e-8,
                             "eps_root_default": 0.0, "eps_root": "inside the sqrt"}
    assert found["sgd"] == {"learning_rate": "outside the buffer", "second_update": -0.95}  # optax.trace
    for kind in ("dense", "conv"):
        weight = found["init"][f"{kind}_weight"]
        assert (weight["distribution"], weight["fan"], weight["fan_exponent"]) == ("truncated normal", "fan_in", -0.5)
        assert weight["std"] == pytest.approx(1.0, abs=0.01)
        assert found["init"][f"{kind}_bias"] == {"distribution": "zeros"}
    assert found["dropout"]["scaling"] == "inverted"
    assert (found["dropout"]["reseeding_repeats"], found["dropout"]["consecutive_calls_differ"]) == (True, False)
    assert found["dropout"]["unseeded"].startswith("refused: InvalidRngError: ")


def test_keras_conventions(doc):
    for module in ("tensorflow", "keras"):
        pytest.importorskip(module)
    found = doc["measured"]["keras"]
    assert found["batchnorm"] == {"momentum_meaning": "running", "momentum_default": 0.99,
                                  "batch_weight_at_default": 0.01, "eps_default": 1e-3, "running_var": "biased"}
    # "same" pooling leaves the padding's zeros out of the mean, where torch's and flax's explicit padding counts them.
    assert found["avgpool"] == {"default_stride": "size", "count_include_pad": "not counted"}
    assert found["same_padding"] == {c: {"pads": [0, 1, 0, 1], "odd_pixel": "end"} for c in probes.SAME_CASES}
    assert found["adam"] == {"placement": "lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)",
                             "eps_default": 1e-7, "eps_root_default": None, "eps_root": "no such option"}
    assert found["sgd"] == {"learning_rate": "inside the buffer", "second_update": -1.4}
    for kind in ("dense", "conv"):
        weight = found["init"][f"{kind}_weight"]  # glorot_uniform: +-sqrt(6 / (fan_in + fan_out))
        assert (weight["distribution"], weight["fan"], weight["fan_exponent"]) == ("uniform", "fan_in + fan_out", -0.5)
        assert weight["bound"] == pytest.approx(math.sqrt(6), abs=0.02)
        assert found["init"][f"{kind}_bias"] == {"distribution": "zeros"}
    assert found["dropout"] == {"kept_scale": 2.0, "scaling": "inverted",
                                "dropped_fraction": pytest.approx(0.5, abs=0.01), "reseeding_repeats": True,
                                "consecutive_calls_differ": True, "unseeded": "runs"}


def test_native_batchnorm_drift(doc):
    rows = {(r["framework"], r["setting"]): r for r in doc["drifts"]["batchnorm"]["rows"]}
    if "torch" in doc["measured"]:
        torch_row = rows["torch", "nn.BatchNorm2d()"]
        assert max(torch_row["running_mean"], torch_row["running_var"]) < 1e-5  # float32 rounding only
    if "flax" in doc["measured"]:
        default, translated = rows["flax", "nn.BatchNorm()"], rows["flax", "nn.BatchNorm(momentum=0.9)"]
        assert default["running_mean"] > 0.1  # 0.99 of the running value: still far from the batches' mean
        assert translated["running_mean"] < 1e-5
        assert translated["running_var"] == pytest.approx(1 / drift.VALUES_PER_CHANNEL, rel=0.05)  # biased
    if "keras" in doc["measured"]:  # Keras's batch norm is flax's, momentum and biased variance alike
        default = rows["keras", "BatchNormalization()"]
        translated = rows["keras", "BatchNormalization(momentum=0.9)"]
        assert default["running_mean"] > 0.1
        assert translated["running_mean"] < 1e-5
        assert translated["running_var"] == pytest.approx(1 / drift.VALUES_PER_CHANNEL, rel=0.05)
    adam = {r["framework"]: r for r in doc["drifts"]["adam"]["rows"]}
    for name in ("torch", "flax"):
        # The same update as the engine's: float32 rounding only, optax's the most (its bias correction
        # computes 1 - 0.999 in float32: 6.8e-6 here).
        assert name not in adam or adam[name]["parameters"] < 5e-5, adam[name]
    if "keras" in adam:
        # Keras adds its epsilon, 1e-7, to sqrt(v) before the bias correction: 32 times larger at the first step,
        # it holds back the small-curvature coordinates, whose gradients are near its size.
        assert adam["keras"]["parameters"] > 0.1


def test_a_framework_not_installed_gets_not_installed_cells(monkeypatch):
    real = document.find_spec
    # flax, jax, keras and numpy are present as module specs here: the stand-ins say so even where they are not
    # installed.
    present = ("flax", "jax", "keras", "numpy")
    monkeypatch.setattr(document, "find_spec", lambda name: None if name in ("torch", "optax", "tensorflow")
                        else (name in present or real(name)))
    doc = document.collect()
    assert doc["frameworks"]["torch"] == {"installed": False, "missing": ["torch"]}
    assert doc["frameworks"]["flax"] == {"installed": False, "missing": ["optax"]}
    assert doc["frameworks"]["keras"] == {"installed": False, "missing": ["tensorflow"]}
    assert set(doc["measured"]) == {"canonical"}
    assert doc["drifts"]["batchnorm"]["rows"] == doc["drifts"]["adam"]["rows"] == []
    table = markdown(doc)
    header, rule, first = table.splitlines()[2:5]
    assert header.split("|")[2:6] == [" canonical ", " torch ", " flax ", " keras "]
    assert first.split("|")[3:6] == [" not installed ", " not installed ", " not installed "]


def test_a_document_from_before_the_sgd_probe_still_renders(doc):
    # Benches store the document in their results; the reports render old ones with the current view.
    old = json.loads(json.dumps(doc))
    for measured in old["measured"].values():
        del measured["sgd"]
        for found in measured["init"].values():
            if "fan" in found:
                found["fan_in_exponent"] = found.pop("fan_exponent")
                del found["fan"]
    text = markdown(old)
    assert "| SGD momentum: learning rate | not measured |" in text
    assert "| init: dense weight | uniform +-1.00/sqrt(fan_in) |" in text


def test_a_probe_that_breaks_is_an_error_cell_and_exit_1(monkeypatch, capsys):
    def broken(step):
        raise RuntimeError("api changed")
    monkeypatch.setitem(document.PROBES, "avgpool", (broken, "avgpool"))
    monkeypatch.setattr(document, "FRAMEWORKS", {"canonical": ()})
    monkeypatch.setattr(drift, "STEPS", 2)
    doc = document.collect()
    assert doc["measured"]["canonical"]["avgpool"] == {"error": "RuntimeError: api changed"}
    assert document.errors(doc) == ["canonical avgpool: RuntimeError: api changed"]
    monkeypatch.setattr(command, "collect", lambda: doc)
    assert command.run(argparse.Namespace(json=False)) == 1
    assert "error: RuntimeError: api changed" in capsys.readouterr().out


def test_command_prints_markdown_or_json(doc, monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    monkeypatch.setattr(command, "collect", lambda: doc)
    assert command.run(parser.parse_args(["conventions", "--json"])) == 0
    assert json.loads(capsys.readouterr().out) == doc
    assert command.run(parser.parse_args(["conventions"])) == 0
    out = capsys.readouterr().out
    assert out == markdown(doc) + "\n"
    assert "| batch norm: momentum weights" in out and "## Drift from the canonical semantics" in out


def test_the_reports_show_the_conventions_a_bench_measured(doc):
    from fwbench.harness.reporting import markdown as report_md
    import results_fixture
    results = {**results_fixture.build(), "conventions": doc}
    text = report_md.run_md(results)
    assert "## Framework conventions, measured" in text
    # The canonical column is measured everywhere; torch's and flax's where they are installed (not in tox -e numpy).
    assert "| batch norm: default momentum | 0.1 |" in text
    assert "Drift from the canonical semantics: batch norm" in text
    failed = {**results_fixture.build(), "conventions": {"error": "fwbench conventions timed out"}}
    assert "not measured: fwbench conventions timed out" in report_md.run_md(failed)
    assert "Framework conventions" not in report_md.run_md(results_fixture.build())


def test_the_html_report_shows_the_conventions(doc):
    pytest.importorskip("matplotlib")  # the report extra
    from fwbench.harness.reporting import html
    import results_fixture
    page = html.run_html({**results_fixture.build(), "conventions": doc})
    assert "<h2>Framework conventions, measured</h2>" in page and "<td>the batch</td>" in page
