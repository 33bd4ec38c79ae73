"""FLOPs per training step counted from the spec, against counts done by hand (docs/performance.md, Counting FLOPs)."""
import math

import pytest

from fwbench import models
from fwbench.models.flops import LOSS_PER_LOGIT, LayerFlops, layer_flops, step_flops

N = 64


def spec(layers, input=(1, 28, 28), classes=10):
    return models.parse({"name": "t", "input": list(input), "classes": classes, "layers": layers})


def test_cnn_by_hand():
    # conv 32, k3 on 1x28x28 -> 32x26x26: 26*26*32 = 21,632 outputs, each 1*3*3 = 9 multiply-adds and a bias add.
    conv = 2 * 21_632 * 9 + 21_632                   # 389,376 + 21,632 = 411,008 per image
    relu = 21_632                                     # one per element, forward and backward alike
    pool_forward, pool_backward = 5_408 * 3, 5_408    # 2x2 -> 32x13x13 = 5,408 outputs: 3 comparisons, 1 add each
    dense = 2 * 5_408 * 10                            # 108,160
    expected = [
        # the conv is the first parameterised layer: weight and bias gradients only, no image gradient
        LayerFlops(0, "conv2d", N * conv, N * conv),
        LayerFlops(1, "relu", N * relu, N * relu),
        LayerFlops(2, "maxpool2d", N * pool_forward, N * pool_backward),
        LayerFlops(3, "flatten", 0, 0),
        LayerFlops(4, "dense", N * (dense + 10), N * (dense + 10 + dense)),
    ]
    assert layer_flops(models.get("cnn"), N) == expected
    per_image = 2 * 411_008 + 2 * 21_632 + 16_224 + 5_408 + 108_170 + 216_330 + 10 * LOSS_PER_LOGIT
    assert per_image == 1_211_412 + 10 * LOSS_PER_LOGIT
    assert step_flops(models.get("cnn"), N) == N * per_image


def test_mlp_by_hand():
    first = 2 * 784 * 128 + 128                       # 200,832: forward, and again backward (no image gradient)
    second = 2 * 128 * 64 + 64                        # 16,448 forward; backward adds the input gradient, 16,384
    third = 2 * 64 * 10 + 10                          # 1,290 forward; backward adds 1,280
    expected = [LayerFlops(0, "flatten", 0, 0),
                LayerFlops(1, "dense", N * first, N * first),
                LayerFlops(2, "relu", N * 128, N * 128),
                LayerFlops(3, "dense", N * second, N * (second + 16_384)),
                LayerFlops(4, "relu", N * 64, N * 64),
                LayerFlops(5, "dense", N * third, N * (third + 1_280))]
    assert layer_flops(models.get("mlp"), N) == expected
    per_image = 401_664 + 256 + 49_280 + 128 + 3_860 + 10 * LOSS_PER_LOGIT
    assert step_flops(models.get("mlp"), N) == N * per_image


def test_strided_padded_conv_and_overlapping_pool():
    s = spec([{"type": "conv2d", "out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1},
              {"type": "maxpool2d", "size": 3, "stride": 1},
              {"type": "avgpool2d", "size": 2, "stride": 1},
              {"type": "flatten"}, {"type": "dense", "units": 7}], input=(3, 17, 11), classes=7)
    conv, maxpool, avgpool = layer_flops(s, 2)[:3]
    # (17 + 2 - 3) // 2 + 1 = 9 rows, (11 + 2 - 3) // 2 + 1 = 6 columns: 5*9*6 = 270 outputs of 3*3*3 = 27 inputs
    assert conv.forward == 2 * (2 * 270 * 27 + 270)
    # 3x3 windows one apart: 5x7x4 = 140 outputs, 8 comparisons each; overlapping windows are counted once each
    assert (maxpool.forward, maxpool.backward) == (2 * 140 * 8, 2 * 140)
    # 2x2 windows one apart: 5x6x3 = 90 outputs; 4 adds and a divide forward, a divide and 4 adds backward
    assert (avgpool.forward, avgpool.backward) == (2 * 90 * 5, 2 * 90 * 5)


def test_same_padding_with_an_even_kernel_at_stride_two():
    s = spec([{"type": "conv2d", "out_channels": 5, "kernel_size": 4, "stride": 2, "padding": "same"},
              {"type": "flatten"}, {"type": "dense", "units": 4}], input=(3, 9, 8), classes=4)
    # "same": ceil(9 / 2) = 5 rows, ceil(8 / 2) = 4 columns; padded zeros are multiplied like any input
    assert layer_flops(s, 1)[0].forward == 2 * 5 * 5 * 4 * 3 * 16 + 5 * 5 * 4


def test_only_a_layer_after_parameters_pays_for_its_input_gradient():
    s = spec([{"type": "relu"},
              {"type": "conv2d", "out_channels": 2, "kernel_size": 3},
              {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
              {"type": "relu"},
              {"type": "flatten"}, {"type": "dense", "units": 10}], input=(1, 8, 8))
    relu, first, second, after = layer_flops(s, 1)[:4]
    assert (relu.forward, relu.backward) == (64, 0)   # nothing before it has parameters: no gradient flows here
    assert first.backward == first.forward == 2 * 2 * 36 * 9 + 2 * 36
    product = 2 * 3 * 16 * 2 * 9
    assert second.forward == product + 3 * 16 and second.backward == 2 * product + 3 * 16
    assert (after.forward, after.backward) == (48, 48)


def test_batchnorm_dropout_tanh_and_sigmoid_constants():
    s = spec([{"type": "batchnorm"},
              {"type": "conv2d", "out_channels": 2, "kernel_size": 1},
              {"type": "batchnorm"},
              {"type": "dropout", "rate": 0.5},
              {"type": "tanh"},
              {"type": "flatten"},
              {"type": "dense", "units": 6},
              {"type": "sigmoid"},
              {"type": "dropout", "rate": 0.2},
              {"type": "dense", "units": 3}], input=(2, 4, 4), classes=3)
    counts = layer_flops(s, 3)
    elements = 3 * 2 * 16
    # batch norm first: only gamma and beta get gradients (3 a value); later it also passes one back (5 more)
    assert (counts[0].forward, counts[0].backward) == (7 * elements, 3 * elements)
    assert (counts[2].forward, counts[2].backward) == (7 * elements, 8 * elements)
    assert (counts[3].forward, counts[3].backward) == (elements, elements)
    assert (counts[4].forward, counts[4].backward) == (elements, 3 * elements)
    assert (counts[7].forward, counts[7].backward) == (3 * 3 * 6, 3 * 3 * 6)
    assert (counts[8].forward, counts[8].backward) == (3 * 6, 3 * 6)
    assert step_flops(s, 3) == sum(c.forward + c.backward for c in counts) + 3 * 3 * LOSS_PER_LOGIT


def test_every_layer_type_has_a_rule():
    s = spec([{"type": kind, **extra} for kind, extra in (
        ("conv2d", {"out_channels": 2, "kernel_size": 3}), ("relu", {}), ("maxpool2d", {"size": 2}),
        ("avgpool2d", {"size": 2}), ("batchnorm", {}), ("dropout", {"rate": 0.1}), ("tanh", {}), ("sigmoid", {}),
        ("flatten", {}), ("dense", {"units": 10}))], input=(1, 12, 12))
    assert {layer.type for layer in s.layers} == set(models.LAYER_TYPES)
    assert [c.type for c in layer_flops(s, 2)] == [layer.type for layer in s.layers]


@pytest.mark.parametrize("name", models.shipped())
def test_every_shipped_spec_has_a_positive_count_that_scales_with_the_batch(name):
    s = models.get(name)
    counts = layer_flops(s, 8)
    assert [c.index for c in counts] == list(range(len(s.layers)))
    assert all(c.forward >= 0 and c.backward >= 0 and isinstance(c.forward, int) for c in counts)
    assert step_flops(s, 8) > 0 and step_flops(s, 16) == 2 * step_flops(s, 8)
    # convolutions and dense layers dominate: everything else is a small share
    heavy = sum(c.forward + c.backward for c in counts if c.type in ("conv2d", "dense"))
    assert heavy > 0.9 * step_flops(s, 8)


@pytest.mark.parametrize("name", ["cnn", "tinycnn", "lenet5"])
def test_products_match_torchs_flop_counter(name):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from fwbench.backends.torch_backend import build
    s = models.get(name)
    with FlopCounterMode(display=False) as counter:
        build(s)(torch.randn(3, *s.input)).sum().backward()  # the image needs no gradient here either
    # torch counts the convolutions' and matmuls' multiply-adds, forward and backward, not the bias adds
    bias = lambda c: 3 * math.prod(s.shapes[c.index])  # noqa: E731  one add per output, each way
    ours = sum(c.forward + c.backward - 2 * bias(c) for c in layer_flops(s, 3) if c.type in ("conv2d", "dense"))
    assert counter.get_total_flops() == ours
