"""modelpress: compress trained PyTorch models for deployment, and prove with numbers what it cost."""

from __future__ import annotations

from .artifacts import InputSpec, ModelArtifact
from .data import Dataset, load_data
from .errors import BackendUnavailable, GateFailed, InputError, ModelpressError
from .sources import load_model

# diagnose/ registers the analyses the quantize stage asks for (runtime/analyses.py): imported here, once, so they
# exist whatever a process imports first (compress/ may not import its sibling)
from . import diagnose  # noqa: F401,E402

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
