"""Diagnostics: why a compressed model is slow or inaccurate, layer by layer (``modelpress explain``).

:func:`explain` profiles the candidate and its reference on the same batch and threads, compares every layer's
output with the reference's, times FP32 / FP16 baselines beside the candidate and writes recommendations.
:func:`layer_errors` and :func:`sensitivity_ranking` are the one per-layer error implementation; the accuracy-aware
quantizer uses them too (``quantize`` with ``sensitivity: layer_error``). :func:`kernel_effects` measures an INT8
model with the kernels that really run beside the Q/DQ arithmetic and predicts other CPU kinds by emulation.
"""

from __future__ import annotations

from .explain import EXPLAIN_VERSION, ExplainConfig, explain, latency_batch
from .hardware import kernel_effects
from .layer_error import check_comparable, layer_errors, onnx_layer_errors, sensitivity_ranking
from .profile import profile_artifact, profile_onnx, profile_torch, qdq_analysis
from .recommend import recommend, slowdown

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
    "slowdown",
]
