"""modelpress: compress trained PyTorch models for deployment, and prove with numbers what it cost."""

from __future__ import annotations

from .artifacts import InputSpec, ModelArtifact
from .data import Dataset, load_data
from .errors import BackendUnavailable, GateFailed, InputError, ModelpressError
from .sources import load_model

__all__ = [
    "BackendUnavailable",
    "Dataset",
    "GateFailed",
    "InputError",
    "InputSpec",
    "ModelArtifact",
    "ModelpressError",
    "load_data",
    "load_model",
]
