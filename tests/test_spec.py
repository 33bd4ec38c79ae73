"""Model spec loading, shape inference, parameter counts and validation errors."""
import pytest

from fwbench import models
from fwbench.models.params import check, init_params


def spec_dict(layers, input=(1, 28, 28), classes=10):
    return {"name": "t", "input": list(input), "classes": classes, "layers": layers}


def test_shipped_counts_match_the_course():
    assert models.get("cnn").param_count() == 54_410
    assert models.get("mlp").param_count() == 109_386
    assert 100 <= models.get("tinycnn").param_count() < 1000


def test_cnn_shapes_and_param_layout():
    spec = models.get("cnn")
    assert spec.shapes == ((32, 26, 26), (32, 26, 26), (32, 13, 13), (5408,), (10,))
    assert spec.param_shapes() == {"0.weight": (32, 1, 3, 3), "0.bias": (32,),
                                   "4.weight": (5408, 10), "4.bias": (10,)}


def test_stride_padding_overlapping_pool_nonsquare():
    spec = models.parse(spec_dict([
        {"type": "conv2d", "out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "maxpool2d", "size": 3, "stride": 2},
        {"type": "flatten"}, {"type": "dense", "units": 7}], input=(3, 17, 11), classes=7))
    assert spec.shapes[0] == (5, 9, 6)
    assert spec.shapes[1] == (5, 4, 2)
    assert spec.shapes[2] == (40,)
    assert spec.layers[1].step == 2


def test_spec_is_frozen():
    with pytest.raises(Exception):
        models.get("cnn").classes = 3


def test_load_from_path(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('name = "m"\ninput = [1, 4, 4]\nclasses = 2\n'
                    '[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 2\n')
    spec = models.get(str(path))
    assert spec.name == "m" and spec.param_count() == 16 * 2 + 2


@pytest.mark.parametrize("layers,kwargs,needle", [
    ([{"type": "conv3d"}], {}, "layer 0: field 'type' is 'conv3d'"),
    ([{"type": "flatten", "units": 3}, {"type": "dense", "units": 10}], {}, "layer 0 (flatten): unknown field 'units'"),
    ([{"type": "conv2d", "out_channels": 2, "kernel_size": 30}, {"type": "flatten"}, {"type": "dense", "units": 10}],
     {}, "layer 0 (conv2d): field 'kernel_size' 30 is larger"),
    ([{"type": "conv2d", "out_channels": 0, "kernel_size": 3}], {}, "layer 0 (conv2d): field 'out_channels' must be >= 1"),
    ([{"type": "maxpool2d", "size": -2}], {}, "layer 0 (maxpool2d): field 'size' must be >= 1"),
    ([{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "dense", "units": 10}], {},
     "layer 1 (dense): field 'type' dense gets a 3-D input"),
    ([{"type": "flatten"}, {"type": "dense", "units": 5}], {}, "layer 1 (dense): field 'units' is 5 but 'classes' is 10"),
    ([{"type": "conv2d", "kernel_size": 3}], {}, "layer 0 (conv2d): missing required field 'out_channels'"),
    ([{"type": "conv2d", "out_channels": 2.5, "kernel_size": 3}], {}, "field 'out_channels' must be an integer"),
    ([{"type": "flatten"}, {"type": "maxpool2d", "size": 2}], {}, "layer 1 (maxpool2d): field 'type' maxpool2d needs"),
    ([{"type": "flatten"}], {}, "no dense layer"),
    ([{"type": "flatten"}, {"type": "dense", "units": 10}], {"input": (1, 28)}, "field 'input' must be [C, H, W]"),
])
def test_invalid_specs_name_layer_field_and_reason(layers, kwargs, needle):
    with pytest.raises(models.SpecError) as err:
        models.parse(spec_dict(layers, **kwargs), "bad.toml")
    assert needle in str(err.value)
    assert str(err.value).startswith("bad.toml: ")
    assert "\n" not in str(err.value)


def test_unknown_top_level_field_and_model_name(tmp_path):
    with pytest.raises(models.SpecError, match="unknown top-level field 'optimizer'"):
        models.parse({**spec_dict([{"type": "flatten"}, {"type": "dense", "units": 10}]), "optimizer": "adam"})
    names = "cnn, flaxex, lenet5, mlp, pyex, tgmnist, tinycnn"
    with pytest.raises(models.SpecError, match=f"unknown model 'resnet'; choose one of {names}"):
        models.get("resnet")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(models.SpecError, match="not valid TOML"):
        models.get(str(bad))


def test_init_params_is_seeded_and_uses_torch_bounds():
    spec = models.get("cnn")
    a, b, c = init_params(spec, 0), init_params(spec, 0), init_params(spec, 1)
    check(spec, a)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (a["0.weight"] == c["0.weight"]).all()
    assert a["0.weight"].dtype.name == "float32"
    # fan_in 9 for the conv, 5408 for the dense: bound 1/sqrt(fan_in), and the draws fill it
    assert 0.3 < abs(a["0.weight"]).max() <= 1 / 3
    assert abs(a["4.weight"]).max() <= 1 / 5408 ** 0.5
    assert abs(a["4.bias"]).max() <= 1 / 5408 ** 0.5


def test_check_rejects_wrong_names_and_shapes():
    spec = models.get("mlp")
    params = init_params(spec, 0)
    with pytest.raises(ValueError, match="missing"):
        check(spec, {k: v for k, v in params.items() if k != "1.bias"})
    params["1.weight"] = params["1.weight"].T
    with pytest.raises(ValueError, match="'1.weight' has shape"):
        check(spec, params)
