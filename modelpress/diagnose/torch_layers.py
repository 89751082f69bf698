"""Per-layer error of two torch modules: forward hooks on the layers both have under the same qualified name.

A layer is a quantized module (``torch.ao`` dynamic Linear/LSTM…, its packed-weight child excluded) or a leaf module
holding weights. Each hook records the layer's first input and output tensors; the statistics and the ranking are
those of :mod:`.layer_error` (noise added = relative noise power at the output minus at the input, per channel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..runtime.sessions import set_torch_threads
from .tensor_error import _added, _batches, _db, _result, _Stats


# ---- torch -------------------------------------------------------------------------------------------------------
def torch_layer_errors(reference: ModelArtifact, candidate: ModelArtifact, data: Dataset, *,
                       batch_size: int = 32, threads: int = 1) -> dict[str, Any]:
    """Per-layer error of two torch modules with the same leaf-module names (forward hooks on inputs and outputs)."""
    import torch

    set_torch_threads(threads)
    ref_mod, cand_mod = reference.module.eval(), candidate.module.eval()
    ref_leaves = _torch_leaves(ref_mod)
    cand_leaves = _torch_leaves(cand_mod)
    shared = [n for n in cand_leaves if n in ref_leaves]
    captured: dict[str, dict[str, Any]] = {"ref": {}, "cand": {}}

    def hook(side: str, name: str) -> Any:
        def fn(_m: Any, inputs: Any, output: Any) -> None:
            captured[side][name] = (_first_tensor(inputs), _first_tensor(output))
        return fn

    handles = [ref_leaves[n].register_forward_hook(hook("ref", n)) for n in shared]
    handles += [cand_leaves[n].register_forward_hook(hook("cand", n)) for n in shared]
    ins = {n: _Stats() for n in shared}
    outs = {n: _Stats() for n in shared}
    output = _Stats()
    ref_logits, cand_logits = [], []
    names = [s.name for s in reference.inputs]
    try:
        with torch.inference_mode():
            for feed, rows in _batches(data, names, batch_size):
                tensors = [torch.from_numpy(feed[n]) for n in names]
                a = _first_tensor(ref_mod(*tensors)).float().numpy()
                b = _first_tensor(cand_mod(*tensors)).float().numpy()
                output.add(a, b, rows)
                ref_logits.append(a.reshape(rows, -1))
                cand_logits.append(b.reshape(rows, -1))
                for n in shared:
                    if n in captured["ref"] and n in captured["cand"]:
                        (ri, ro), (ci, co) = captured["ref"][n], captured["cand"][n]
                        if ri is not None and ci is not None and ri.shape == ci.shape:
                            ins[n].add(ri.float().numpy(), ci.float().numpy(), rows)
                        if ro is not None and co is not None and ro.shape == co.shape:
                            outs[n].add(ro.float().numpy(), co.float().numpy(), rows)
                captured["ref"].clear()
                captured["cand"].clear()
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for n in shared:
        if not outs[n].rows:
            continue
        in_ratio = ins[n].channel_noise_ratio if ins[n].rows else 0.0
        module = cand_leaves[n]
        quantized = "quantized" in type(module).__module__
        layers.append({"node": n, "exclude_name": n, "op_type": type(module).__name__,
                       "precision": "int8" if quantized else _torch_precision(module), "tensor": n,
                       **outs[n].as_dict(), "input_channel_sqnr_db": _db(in_ratio),
                       "noise_added": _added(outs[n].channel_noise_ratio, in_ratio), "also_exclude": []})
    matched = sum(1 for n in shared if outs[n].rows)
    return _result("torch-hooks", len(data), matched, len(cand_leaves) - matched, layers, output,
                   np.concatenate(ref_logits), np.concatenate(cand_logits))


def _torch_leaves(module: Any) -> dict[str, Any]:
    """Layers: quantized modules (their packed-weight child excluded) and leaf modules that hold weights."""
    return {name: sub for name, sub in module.named_modules() if name and _is_torch_layer(sub)}


def _is_torch_layer(sub: Any) -> bool:
    kind = type(sub)
    if "quantized" in kind.__module__:
        return not kind.__name__.endswith("PackedParams")
    return not list(sub.children()) and any(True for _ in sub.parameters(recurse=False))


def _torch_precision(module: Any) -> str:
    params = list(module.parameters(recurse=False))
    return "fp16" if params and params[0].dtype.is_floating_point and params[0].element_size() == 2 else "fp32"


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.dequantize() if value.is_quantized else value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    if isinstance(value, dict) and value:
        return _first_tensor(value.get("logits", next(iter(value.values()))))
    return getattr(value, "logits", None)
