"""MobileNetV2 (Sandler et al. 2018) in plain torch, with torchvision's module names (``features.N.conv.M``).

3,504,872 parameters at 1000 classes and width 1.0, as torchvision publishes; a torchvision state_dict loads as it
is. ReLU6 activations and BatchNorm (eps 1e-5) as there, so the fused conv+BN+ReLU6 pattern quantizes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .common import as_images, check_classes, image_chw
from .registry import register_zoo

#: (expansion t, output channels c, repeats n, first stride s) per stage, from the paper's Table 2.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of 8 without going more than 10 % down (the TF/torchvision rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(inp: int, oup: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1×1 expand (skipped when t = 1) → 3×3 depthwise → 1×1 linear projection; residual when shapes agree."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = [] if expand_ratio == 1 else [_conv_bn_relu6(inp, hidden, kernel=1)]
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, *, image_shape: tuple[int, int, int] = (3, 224, 224), n_classes: int = 1000,
                 width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        inp = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(self.image_shape[0], inp, stride=2)]
        for t, c, n, s in _SETTING:
            oup = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        features.append(_conv_bn_relu6(inp, last, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, n_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(as_images(x, self.image_shape)), 1)
        return self.classifier(torch.flatten(x, 1))


@register_zoo("mobilenet_v2")
def mobilenet_v2(*, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000,
                 width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 (3.5 M parameters and 0.3 GMACs at width 1.0, 224×224)."""
    chw = image_chw("mobilenet_v2", input_shape)
    if not 0.1 <= float(width_mult) <= 4.0:
        raise InputError(f"zoo:mobilenet_v2 width_mult must be in [0.1, 4], got {width_mult}")
    return MobileNetV2(image_shape=chw, n_classes=check_classes("mobilenet_v2", n_classes),
                       width_mult=float(width_mult))
