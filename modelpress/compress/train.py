"""The one training loop, used by the ``train`` stage, fine-tuning after pruning and distillation.

Deterministic on CPU for a given seed: seeded init of the shuffling generator, no data-dependent threading.
A ``loss_fn(module, inputs, targets) -> loss`` hook lets distillation plug its loss into the same loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import progress
from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import InputError
from .registry import StageConfig, StageContext, register_stage


@dataclass(frozen=True)
class TrainConfig(StageConfig):
    """Supervised training with AdamW and a cosine learning-rate schedule."""

    kind: ClassVar[str] = "train"
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= int(self.epochs) <= 10_000:
            raise InputError(f"train.epochs must be in [1, 10000], got {self.epochs}")
        if not 0 < float(self.lr) < 10:
            raise InputError(f"train.lr must be in (0, 10), got {self.lr}")
        if int(self.batch_size) < 1:
            raise InputError(f"train.batch_size must be ≥ 1, got {self.batch_size}")
        if float(self.weight_decay) < 0:
            raise InputError(f"train.weight_decay must be ≥ 0, got {self.weight_decay}")


LossFn = Callable[[Any, list[Any], Any], Any]


def fit(module: Any, data: Dataset, *, epochs: int, lr: float, batch_size: int, weight_decay: float = 1e-4,
        seed: int = 0, loss_fn: LossFn | None = None, desc: str = "train") -> dict[str, Any]:
    """Train ``module`` in place; returns per-epoch mean losses. The module is left in eval mode."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(data) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    names = list(data.inputs)
    tensors = [torch.from_numpy(np.ascontiguousarray(data.inputs[n])) for n in names]
    targets = torch.from_numpy(data.y)
    losses: list[float] = []
    module.train()
    try:
        with progress.bar(epochs * steps_per_epoch, desc, unit="step") as bar:
            for _ in range(epochs):
                order = torch.from_numpy(generator.permutation(len(data)))
                total = 0.0
                for start in range(0, len(data), batch_size):
                    idx = order[start : start + batch_size]
                    inputs = [t[idx] for t in tensors]
                    if loss_fn is None:
                        out = module(*inputs)
                        loss = F.cross_entropy(out, targets[idx])
                    else:
                        loss = loss_fn(module, inputs, targets[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total += float(loss.detach()) * len(idx)
                    bar.update(1)
                losses.append(total / len(data))
                bar.set_postfix_str(f"loss {losses[-1]:.4f}")
    finally:
        module.eval()
    return {"epochs": epochs, "loss_per_epoch": losses}


@register_stage(TrainConfig)
def run_train(artifact: ModelArtifact, config: TrainConfig, ctx: StageContext) -> ModelArtifact:
    if artifact.format != "torch":
        raise InputError(f"stage train needs a torch model, got {artifact.format}")
    data = ctx.require("train", stage="train")
    result = artifact.evolve(module=_copy_module(artifact.module))
    log = fit(result.module, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
              weight_decay=config.weight_decay, seed=config.seed)
    result.metadata["training"] = log
    return result


def _copy_module(module: Any) -> Any:
    """Stages never mutate their input: the original stays available as the fidelity reference."""
    import copy

    return copy.deepcopy(module)
