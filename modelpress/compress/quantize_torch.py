"""Torch dynamic INT8 (``torch.ao.quantization.quantize_dynamic``), saved as a transform re-applied at load.

A dynamically quantized module cannot be rebuilt from a factory plus a state dict (its packed weights are not
plain tensors), so the artifact keeps the FP32 weights (``_modelpress_float_state``) and records the transform
``torch_dynamic_int8``; loading rebuilds the float module, loads the weights and quantizes again. The result is
deterministic: dynamic quantization has no calibration, weights are rounded the same way every time.
Torch's eager-mode quantization is deprecated in favour of torchao; it still ships with torch and is what this
backend wraps until torchao is a dependency.

The transform itself (:func:`modelpress.artifacts.apply_torch_dynamic_int8`) lives on the artifacts' floor, so that
loading an INT8 artifact never imports the stages; this module makes the artifact and reports what changed.
"""

from __future__ import annotations

import copy
from typing import Any

from ..artifacts import TORCH_DYNAMIC_INT8 as TRANSFORM
from ..artifacts import ModelArtifact, apply_torch_dynamic_int8
from ..errors import InputError

ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def quantized_layer_counts(module: Any) -> tuple[dict[str, int], dict[str, int], int]:
    """(quantized layers by type, float layers with weights by type, bytes of the int8 module's weights)."""
    from collections import Counter

    import torch
    from torch import nn

    quantized: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    size = 0
    for sub in module.modules():
        kind = type(sub).__name__
        if type(sub).__module__.startswith("torch.ao.nn.quantized") and not kind.endswith("PackedParams"):
            quantized[kind.replace("DynamicQuantized", "").replace("Quantized", "") or kind] += 1
            weights, biases = _packed_tensors(sub)
            size += sum(w.numel() * w.element_size() for w in weights)  # int8: one byte per weight
            size += sum(b.numel() * b.element_size() for b in biases)
        elif isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)) or (
                isinstance(sub, (nn.Linear, nn.LSTM, nn.GRU))):
            kept[kind] += 1
    for name, tensor in module.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and "_packed_params" not in name:
            size += tensor.numel() * tensor.element_size()
    return dict(quantized), dict(kept), size


def _packed_tensors(sub: Any) -> tuple[list[Any], list[Any]]:
    """Unpacked (int8 weights, float biases) of a dynamically quantized Linear or RNN module."""
    if hasattr(sub, "_weight_bias"):
        weight, bias = sub._weight_bias()
        return [weight], [bias] if bias is not None else []
    if hasattr(sub, "get_weight") and hasattr(sub, "get_bias"):
        return list(sub.get_weight().values()), [b for b in sub.get_bias().values() if b is not None]
    return [], []


def run_torch_dynamic(artifact: ModelArtifact, *, engine: str, notes: list[str]) -> ModelArtifact:
    """A copy of ``artifact`` with int8 Linear/LSTM/GRU layers; the input artifact is not touched."""

    if artifact.format != "torch" or artifact.module is None:
        raise InputError(f"--engine torch quantizes torch models; {artifact.source} is {artifact.format}",
                         hint="use --engine onnxruntime for ONNX models")
    if any(t.get("name") == TRANSFORM for t in artifact.transforms):
        raise InputError(f"{artifact.source} is already torch-dynamic-quantized")
    module = copy.deepcopy(artifact.module).eval()
    float_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    float_bytes = sum(v.numel() * v.element_size() for v in float_state.values() if v.is_floating_point())
    module._modelpress_float_state = float_state
    params = {"engine": engine, "layers": ["Linear", "LSTM", "GRU"]}
    quantized = apply_torch_dynamic_int8(module, params)
    counts, kept, int8_bytes = quantized_layer_counts(quantized)
    if not counts:
        raise InputError(f"torch dynamic quantization changed nothing in {artifact.source}: it has no Linear, LSTM "
                         f"or GRU layers", hint="use --engine onnxruntime --mode static for convolutional models")
    if kept:
        notes.append("kept FP32 (torch dynamic quantization covers Linear/LSTM/GRU only): "
                     + ", ".join(f"{k} ×{v}" for k, v in sorted(kept.items())))
    notes.append(f"torch dynamic int8 ({engine} engine): " + ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items()))
                 + f"; weights {float_bytes / 1e6:.2f} MB → {int8_bytes / 1e6:.2f} MB in memory "
                 "(the artifact file keeps FP32 weights; quantization is re-applied at load)")
    return artifact.evolve(module=quantized, transforms=[*artifact.transforms, {"name": TRANSFORM, "params": params}],
                           metadata={**artifact.metadata, "quantization": {
                               "mode": "dynamic", "engine": "torch", "torch_engine": engine,
                               "quantized_op_counts": counts, "float_op_counts": kept,
                               "size_bytes_before": float_bytes, "size_bytes_after": int8_bytes,
                               "size_ratio": int8_bytes / float_bytes if float_bytes else None}})
