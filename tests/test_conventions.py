"""`fwbench conventions`: each probe against NumPy stand-ins of both conventions, and the measured facts."""
import argparse
import json
import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fwbench.harness.conventions import canonical, command, document, drift, probes
from fwbench.harness.conventions.probes import Refused
from fwbench.harness.conventions.view import markdown


# Stand-ins: each a NumPy implementation of one convention, written from its definition, not from the probes.

def bn_with(meaning: str, default: float, unbiased: bool, eps: float):
    """One training pass of a fresh batch norm whose momentum m weights the batch or the running value."""
    def step(x, momentum):
        m = default if momentum is None else momentum
        w = m if meaning == "batch" else 1 - m
        x = x.astype(np.float64)
        count = x.size // x.shape[1]
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        y = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + eps)
        batch_var = var * count / (count - 1) if unbiased else var
        return y, w * mean, (1 - w) + w * batch_var
    return step


def pool_with(default_stride, counts_pads: bool):
    """Average pooling with a default stride (an int, or "size") and count_include_pad."""
    def pool(x, size, stride, padding):
        s = stride or (size if default_stride == "size" else default_stride)
        pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))

        def sums(a):
            return sliding_window_view(np.pad(a, pad), (size, size), axis=(2, 3))[:, :, ::s, ::s].sum(axis=(4, 5))
        return sums(x) / (size * size if counts_pads else sums(np.ones_like(x)))
    return pool


def conv_with(odd_at: str, refuse_strided: bool = False):
    """A one-channel "same" convolution whose odd padding pixel goes at the start or the end."""
    def conv(x, w, stride):
        if refuse_strided and stride > 1:
            raise Refused("not for strided convolutions")
        k, n = w.shape[0], x.shape[2]
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        before = total // 2 if odd_at == "end" else total - total // 2
        pad = ((0, 0), (0, 0), (before, total - before), (before, total - before))
        windows = sliding_window_view(np.pad(x, pad), (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
        return np.einsum("ncijab,ab->ncij", windows, w)
    return conv


def adam_with(placement: str, eps: float = 1e-8, eps_root: float | None = None):
    """One Adam step at lr 1 from p = 0, eps placed "outside" or "inside" the sqrt, or "hat" (in lr's correction)."""
    def step(g, **options):
        if "eps_root" in options and eps_root is None:
            raise Refused("no eps_root")
        e, r = options.get("eps", eps), options.get("eps_root", eps_root or 0.0)
        b1, b2 = 0.9, 0.999
        m, v = (1 - b1) * g, (1 - b2) * g * g
        mhat, vhat = m / (1 - b1), v / (1 - b2)
        if placement == "outside":
            return -mhat / (math.sqrt(vhat + r) + e)
        if placement == "inside":
            return -mhat / math.sqrt(vhat + e)
        return -math.sqrt(1 - b2) / (1 - b1) * m / (math.sqrt(v) + e)
    return step


def draw_with(weight: tuple, bias: tuple, fan: str = "fan_in"):
    """Fresh layers whose weight and bias are drawn by (kind, c): scale c / sqrt(fan), or ("zeros", 0).

    fan is "fan_in", "sum" (Glorot's fan_in + fan_out, a 3 x 3 conv's fan_out 9 x its outputs) or "none" (c)."""
    rng = np.random.default_rng(0)

    def sample(rule, fans, shape):
        kind, c = rule
        s, size = c / math.sqrt({"fan_in": fans[0], "sum": sum(fans), "none": 1}[fan]), math.prod(shape)
        if kind == "zeros":
            return np.zeros(shape)
        if kind == "uniform":
            return rng.uniform(-s, s, shape)
        z = rng.normal(size=4 * size)
        if kind == "normal":
            return s * z[:size].reshape(shape)
        return s / 0.87962566 * z[np.abs(z) < 2][:size].reshape(shape)  # truncated at 2 sigma, std rescaled to s

    def draw(kind, fan_in, units):
        fans = (fan_in, units * (9 if kind == "conv" else 1))
        return sample(weight, fans, (units, fan_in)), sample(bias, fans, (units,))
    return draw


def sgd_with(lr_inside: bool):
    """SGD with momentum: v = m v + g, p -= lr v (torch), or v = m v - lr g, p += v (Keras)."""
    def step(lrs, g, momentum):
        p, v, out = 0.0, 0.0, []
        for lr in lrs:
            if lr_inside:
                v = momentum * v - lr * g
                p += v
            else:
                v = momentum * v + g
                p -= lr * v
            out.append(p)
        return out
    return step


def drop_with(inverted: bool, keyed: bool):
    """Dropout from a generator that runs on between calls, or from a key that each call reuses."""
    unseeded = np.random.default_rng(1)

    def drop(x, rate, seed, calls):
        if seed is None and keyed:
            raise Refused("needs a key")
        rng, out = unseeded if seed is None else np.random.default_rng(seed), []
        for _ in range(calls):
            rng = np.random.default_rng(seed) if keyed else rng
            out.append(x * (rng.random(x.shape) >= rate) / ((1 - rate) if inverted else 1))
        return out
    return drop


@pytest.mark.parametrize("meaning, default, unbiased, eps", [
    ("batch", 0.1, True, 1e-5), ("running", 0.99, False, 1e-3), ("batch", 0.2, False, 1e-4),
    ("running", 0.9, True, 1e-5)])
def test_batchnorm_probe_reads_meaning_default_eps_and_variance(meaning, default, unbiased, eps):
    found = probes.batchnorm(bn_with(meaning, default, unbiased, eps))
    assert found == {"momentum_meaning": meaning, "momentum_default": default,
                     "batch_weight_at_default": default if meaning == "batch" else pytest.approx(1 - default),
                     "eps_default": eps, "running_var": "unbiased" if unbiased else "biased"}


@pytest.mark.parametrize("default_stride, counts_pads, stride_read, pads_read", [
    ("size", True, "size", "counted"), (1, False, "1", "not counted"), (2, True, "2", "counted")])
def test_avgpool_probe_reads_default_stride_and_count_include_pad(default_stride, counts_pads, stride_read,
                                                                   pads_read):
    found = probes.avgpool(pool_with(default_stride, counts_pads))
    assert found == {"default_stride": stride_read, "count_include_pad": pads_read}


def test_avgpool_probe_records_a_refused_padding():
    def valid_only(x, size, stride, padding):
        if padding:
            raise Refused("VALID windows only")
        return pool_with("size", True)(x, size, stride, 0)
    assert probes.avgpool(valid_only)["count_include_pad"] == "refused: VALID windows only"


@pytest.mark.parametrize("odd_at, pads", [("end", [0, 1, 0, 1]), ("start", [1, 0, 1, 0])])
def test_same_padding_probe_finds_the_odd_pixel(odd_at, pads):
    found = probes.same_padding(conv_with(odd_at))
    assert found == {case: {"pads": pads, "odd_pixel": odd_at} for case in probes.SAME_CASES}


def test_same_padding_probe_records_a_refusal():
    found = probes.same_padding(conv_with("end", refuse_strided=True))
    assert found["k2 s1"]["odd_pixel"] == "end"
    assert found["k2 s2"] == {"refused": "not for strided convolutions"}


@pytest.mark.parametrize("fake, placement, eps, eps_root", [
    (adam_with("outside", 1e-8, 0.0), "mhat / (sqrt(vhat) + eps)", 1e-8, (0.0, "inside the sqrt")),
    (adam_with("outside", 1e-7), "mhat / (sqrt(vhat) + eps)", 1e-7, (None, "no such option")),
    (adam_with("inside", 1e-8), "mhat / sqrt(vhat + eps)", 1e-8, (None, "no such option")),
    (adam_with("hat", 1e-7), "lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)", 1e-7,
     (None, "no such option"))])
def test_adam_probe_tells_the_eps_placements_apart(fake, placement, eps, eps_root):
    found = probes.adam(fake)
    assert (found["placement"], found["eps_default"]) == (placement, eps)
    assert (found["eps_root_default"], found["eps_root"]) == eps_root


@pytest.mark.parametrize("weight, bias, fan, want_weight, want_bias, want_fan", [
    (("uniform", 1.0), ("uniform", 1.0), "fan_in", ("uniform", 1.0), ("uniform", 1.0), "fan_in"),
    (("truncated", 1.0), ("zeros", 0), "fan_in", ("truncated normal", 1.0), ("zeros", None), "fan_in"),
    (("normal", 2.0), ("zeros", 0), "fan_in", ("normal", 2.0), ("zeros", None), "fan_in"),
    (("uniform", math.sqrt(6)), ("zeros", 0), "sum", ("uniform", math.sqrt(6)), ("zeros", None), "fan_in + fan_out"),
    (("normal", 0.05), ("uniform", 0.05), "none", ("normal", 0.05), ("uniform", 0.05), "none")])
def test_init_probe_reads_distribution_and_fan_scaling(weight, bias, fan, want_weight, want_bias, want_fan):
    found = probes.init(draw_with(weight, bias, fan))
    for key, (distribution, c) in [("dense_weight", want_weight), ("dense_bias", want_bias),
                                   ("conv_weight", want_weight), ("conv_bias", want_bias)]:
        assert found[key]["distribution"] == distribution
        if c is not None:
            assert (found[key]["fan"], found[key]["fan_exponent"]) == (want_fan, 0.0 if fan == "none" else -0.5)
            scale = found[key]["bound" if distribution == "uniform" else "std"]
            assert scale == pytest.approx(c, rel=0.02)


@pytest.mark.parametrize("lr_inside, where, update", [(False, "outside the buffer", -0.95),
                                                      (True, "inside the buffer", -1.4)])
def test_sgd_probe_tells_where_the_learning_rate_sits(lr_inside, where, update):
    assert probes.sgd(sgd_with(lr_inside)) == {"learning_rate": where, "second_update": update}


@pytest.mark.parametrize("inverted, keyed", [(True, False), (False, True)])
def test_dropout_probe_reads_scaling_and_seeding(inverted, keyed):
    found = probes.dropout(drop_with(inverted, keyed))
    assert found["scaling"] == ("inverted" if inverted else "not inverted")
    assert found["kept_scale"] == (2.0 if inverted else 1.0)
    assert found["dropped_fraction"] == pytest.approx(0.5, abs=0.01)
    assert found["reseeding_repeats"] is True
    assert found["consecutive_calls_differ"] is (not keyed)
    assert found["unseeded"] == ("refused: needs a key" if keyed else "runs")


def test_probes_read_fwbench_canonical_semantics():
    assert probes.batchnorm(canonical.batchnorm) == {
        "momentum_meaning": "batch", "momentum_default": 0.1, "batch_weight_at_default": 0.1, "eps_default": 1e-5,
        "running_var": "unbiased"}
    assert probes.avgpool(canonical.avgpool) == {"default_stride": "size",
                                                 "count_include_pad": "refused: avgpool2d has VALID windows only"}
    assert probes.same_padding(canonical.conv) == {c: {"pads": [0, 1, 0, 1], "odd_pixel": "end"}
                                                   for c in probes.SAME_CASES}
    assert probes.adam(canonical.adam) == {"placement": "mhat / (sqrt(vhat) + eps)", "eps_default": 1e-8,
                                           "eps_root_default": None, "eps_root": "no such option"}
    assert probes.sgd(canonical.sgd) == {"learning_rate": "outside the buffer", "second_update": -0.95}
    init = probes.init(canonical.init)
    assert {k: (v["distribution"], v["fan"], v["fan_exponent"], v["bound"]) for k, v in init.items()} == {
        k: ("uniform", "fan_in", -0.5, pytest.approx(1.0, abs=0.01)) for k in init}
    found = probes.dropout(canonical.dropout)
    assert (found["scaling"], found["reseeding_repeats"], found["consecutive_calls_differ"]) == ("inverted", True, True)
    assert found["unseeded"].startswith("refused: ")


def test_drift_is_zero_against_itself_and_sees_a_biased_variance():
    class Biased:
        """The canonical rule but for the running variance, updated with the biased batch variance."""
        BN_SETTINGS = {"canonical": None, "biased": "biased"}

        @staticmethod
        def running_stats(weight, bias, batches, momentum):
            mean, var = canonical.running_stats(weight, bias, batches, None)
            if momentum is None:
                return mean, var
            n = batches[0].shape[0] * (batches[0].shape[2] - 2) * (batches[0].shape[3] - 2)  # values per channel
            # Running variance is linear in the batch variances, and each biased one is (n-1)/n the unbiased one;
            # the start value 1 keeps a weight 0.9^100.
            return mean, 0.9 ** drift.STEPS + (var - 0.9 ** drift.STEPS) * (n - 1) / n
    rows = {r["setting"]: r for r in drift.batchnorm_drift(Biased)}
    # The stand-in gets the batches in float32, as a framework does: only their rounding is left.
    assert max(rows["canonical"]["running_mean"], rows["canonical"]["running_var"]) < 1e-6
    assert rows["biased"]["running_mean"] < 1e-6
    assert rows["biased"]["running_var"] == pytest.approx(1 / drift.VALUES_PER_CHANNEL, rel=0.05)
    assert drift.adam_drift(canonical)["parameters"] == 0.0


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
