"""ResNet-18/34/50 in plain torch, with torchvision's module names, so a torchvision state_dict loads as it is.

Architecture of He et al. 2016 as torchvision builds it ("ResNet v1.5": in a bottleneck the stride sits on the 3×3
convolution, not the first 1×1). Parameter counts at 1000 classes: ResNet-18 11,689,512, ResNet-34 21,797,672,
ResNet-50 25,557,032 — the numbers torchvision publishes, pinned by tests/zoo/test_architectures.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .common import as_images, check_classes, image_chw
from .registry import register_zoo


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (7×7/2 conv + 3×3/2 max-pool), four stages, global average pool, linear head; returns logits."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], *,
                 image_shape: tuple[int, int, int] = (3, 224, 224), n_classes: int = 1000) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(self.image_shape[0], 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, n_classes)
        for m in self.modules():  # torchvision's initialisation, so an untrained model trains the same way
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_images(x, self.image_shape)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _resnet(name: str, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int],
            input_shape: Sequence[int], n_classes: int) -> ResNet:
    return ResNet(block, layers, image_shape=image_chw(name, input_shape), n_classes=check_classes(name, n_classes))


@register_zoo("resnet18")
def resnet18(*, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000) -> ResNet:
    """ResNet-18 (11.7 M parameters at 1000 classes, 1.8 GMACs at 224×224)."""
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), input_shape, n_classes)


def resnet34(*, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000) -> ResNet:
    """ResNet-34 (21.8 M parameters, 3.7 GMACs at 224×224); not in the zoo table (it costs the common tests ~15 s
    and adds no family): reach it as the factory ``modelpress.zoo.resnet:resnet34``."""
    return _resnet("resnet34", BasicBlock, (3, 4, 6, 3), input_shape, n_classes)


@register_zoo("resnet50")
def resnet50(*, input_shape: Sequence[int] = (3, 224, 224), n_classes: int = 1000) -> ResNet:
    """ResNet-50 (25.6 M parameters, 4.1 GMACs at 224×224)."""
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), input_shape, n_classes)
