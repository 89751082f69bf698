"""Diagnostics: why a compressed model is slow or inaccurate, layer by layer (``modelpress explain``).

:func:`explain` profiles the candidate and its reference on the same batch and threads, compares every layer's
output with the reference's, times FP32 / FP16 baselines beside the candidate and writes recommendations.
:func:`layer_errors` and :func:`sensitivity_ranking` are the one per-layer error implementation; the accuracy-aware
quantizer uses them too (``quantize`` with ``sensitivity: layer_error``). :func:`kernel_effects` measures an INT8
model with the kernels that really run beside the Q/DQ arithmetic and predicts other CPU kinds by emulation.

The quantize stage reaches :func:`~.stage_analyses.explain_quantized` and :func:`~.stage_analyses.layer_error_rank`
by name through :data:`modelpress.runtime.analyses.ANALYSES`, which :func:`register_analyses` fills below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from ..runtime.analyses import ANALYSES, EXPLAIN_QUANTIZED, LAYER_ERROR_RANK
from .explain import EXPLAIN_VERSION, ExplainConfig, explain, latency_batch
from .hardware import kernel_effects
from .layer_error import check_comparable, layer_errors, onnx_layer_errors, sensitivity_ranking
from .profile import profile_artifact, profile_onnx, profile_torch, qdq_analysis
from .recommend import recommend, slowdown
from .stage_analyses import explain_quantized, layer_error_rank

__all__ = [
    "EXPLAIN_VERSION",
    "ExplainConfig",
    "check_comparable",
    "explain",
    "kernel_effects",
    "latency_batch",
    "layer_errors",
    "onnx_layer_errors",
    "profile_artifact",
    "profile_onnx",
    "profile_torch",
    "qdq_analysis",
    "recommend",
    "sensitivity_ranking",
    "register_analyses",
    "slowdown",
]


def register_analyses(registry: Registry[Callable[..., Any]]) -> None:
    """diagnose's entries in :data:`~modelpress.runtime.analyses.ANALYSES` (see :mod:`modelpress.runtime.analyses`)."""
    registry.add(EXPLAIN_QUANTIZED, explain_quantized, replace=True)
    registry.add(LAYER_ERROR_RANK, layer_error_rank, replace=True)


register_analyses(ANALYSES)
