"""The one interface every backend's session is used through: ``runner(batch)`` → logits.

Kept apart from :mod:`.sessions` (the backend registry) so that a backend module (e.g. :mod:`.tensorrt`) can build
runners without importing the registry that imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Runner"]


@dataclass
class Runner:
    """``runner(batch)`` → logits (n, classes) as float32 numpy. ``input_names`` is the order the model takes."""

    backend: str
    threads: int
    input_names: tuple[str, ...]
    call: Callable[[dict[str, np.ndarray]], np.ndarray]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if len(batch) == 1 and len(self.input_names) == 1 and self.input_names[0] not in batch:
            batch = {self.input_names[0]: next(iter(batch.values()))}
        return self.call(batch)
