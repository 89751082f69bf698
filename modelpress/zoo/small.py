"""Small reference models of the classic families: MLP, CNN, LSTM and a Transformer encoder.

Every factory takes the data's per-sample input shape and the class count, plus width arguments. Widths are plain
keyword arguments so that a pruned model (fewer channels) is rebuilt from its manifest without pickle.
All models return raw logits of shape (batch, n_classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .registry import register_zoo


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) from a flat square image (64 → 1×8×8, 784 → 1×28×28) or an explicit (C, H, W)."""
    if len(input_shape) == 3:
        return input_shape  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)  # type: ignore[return-value]
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side == input_shape[0]:
            return (1, side, side)
    raise InputError(
        f"zoo:cnn needs image samples (C,H,W), (H,W) or a flat square image, got per-sample shape {input_shape}"
    )


def _sequence_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(steps, features) from (T, F), or from a flat square vector read row by row (64 → 8 steps × 8)."""
    if len(input_shape) == 2:
        return input_shape  # type: ignore[return-value]
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side == input_shape[0]:
            return (side, side)
        return (input_shape[0], 1)
    raise InputError(f"sequence models need samples of shape (T, F) or (D,), got {input_shape}")


@register_zoo("mlp")
def mlp(*, input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (128, 64)) -> nn.Module:
    in_features = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, int(width)), nn.ReLU()]
        in_features = int(width)
    layers.append(nn.Linear(in_features, n_classes))
    return nn.Sequential(*layers)


@register_zoo("cnn")
def cnn(
    *, input_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (32, 64), hidden: int = 64
) -> nn.Module:
    c, h, w = _image_shape(tuple(input_shape))
    layers: list[nn.Module] = []
    if len(tuple(input_shape)) != 3:
        layers.append(nn.Unflatten(1, (c, h, w)))
    in_ch = c
    for i, width in enumerate(channels):
        layers += [nn.Conv2d(in_ch, int(width), 3, padding=1, bias=False), nn.BatchNorm2d(int(width)), nn.ReLU()]
        if i < len(channels) - 1 and min(h, w) >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        in_ch = int(width)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


class LSTMClassifier(nn.Module):
    """LSTM over the sequence; classifies from the last step's hidden state."""

    def __init__(self, *, input_shape: Sequence[int], n_classes: int, hidden: int = 64, layers: int = 1) -> None:
        super().__init__()
        self.steps, self.features = _sequence_shape(tuple(input_shape))
        self.lstm = nn.LSTM(self.features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.steps, self.features)
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


register_zoo("lstm")(LSTMClassifier)


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder block built from plain Linear layers (prunable, quantizable, exportable)."""

    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"transformer dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff)
        self.ff2 = nn.Linear(ff, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(torch.relu(self.ff1(self.norm2(x))))


class TransformerClassifier(nn.Module):
    """Linear patch embedding + learned positions + encoder blocks + mean pooling."""

    def __init__(
        self, *, input_shape: Sequence[int], n_classes: int, dim: int = 32, heads: int = 4, depth: int = 2, ff: int = 64
    ) -> None:
        super().__init__()
        self.steps, self.features = _sequence_shape(tuple(input_shape))
        self.embed = nn.Linear(self.features, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.steps, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, ff) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.reshape(x.shape[0], self.steps, self.features)) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


register_zoo("transformer")(TransformerClassifier)
