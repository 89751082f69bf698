"""Shape checks and constants shared by the ImageNet-size CNNs of the zoo."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError

#: ImageNet channel statistics (RGB in [0, 1]) used to train the torchvision ResNet and MobileNetV2 weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_chw(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of an image model's samples: (C, H, W), (H, W) → (1, H, W), or a flat square image (64 → 1×8×8).

    The flat and 2-D forms are the ones ``zoo:cnn`` takes, so every zoo entry runs on the bundled digits in the
    common tests (an ImageNet CNN on 8×8 works: its stride-2 stages stop at 1×1); the model reshapes such input
    itself (see :func:`as_images`).
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side >= 1 and side * side == shape[0]:
            return (1, side, side)
    elif len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"zoo:{name} needs image samples (C, H, W), (H, W) or a flat square image, got per-sample "
                         f"shape {tuple(input_shape)}", hint="use image data (images:DIR) or input_shape [3, 224, 224]")
    return shape  # type: ignore[return-value]


def as_images(x: torch.Tensor, chw: tuple[int, int, int]) -> torch.Tensor:
    """A batch in (N, C, H, W); flat or (N, H, W) samples are reshaped (the rank is static, so export traces it)."""
    return x if x.dim() == 4 else x.reshape(x.shape[0], *chw)


def check_classes(name: str, n_classes: int) -> int:
    if int(n_classes) < 2:
        raise InputError(f"zoo:{name} needs at least 2 classes, got {n_classes}")
    return int(n_classes)
