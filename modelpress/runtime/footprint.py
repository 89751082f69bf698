"""Model footprint: parameters, non-zero parameters, sparsity, file size and multiply-accumulates per sample.

MACs count Conv/Linear/MatMul work for ONE sample, as dense kernels compute it: unstructured zeros do not lower
MACs (dense kernels multiply them anyway), structurally removed channels do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..artifacts import ModelArtifact


def footprint(artifact: ModelArtifact) -> dict[str, Any]:
    if artifact.format == "torch":
        result = _torch_footprint(artifact)
    elif artifact.format == "onnx":
        result = _onnx_footprint(artifact)
    else:
        result = {"params": None, "nonzero_params": None, "sparsity": None, "macs": None,
                  "macs_reason": f"not counted for {artifact.format} artifacts"}
    result["size_bytes"] = artifact.size_bytes()
    if result["size_bytes"] is None and artifact.format == "torch":
        result["size_bytes"] = result.pop("_dense_bytes", None)
    result.pop("_dense_bytes", None)
    return result


def _torch_footprint(artifact: ModelArtifact) -> dict[str, Any]:
    import torch
    from torch import nn

    module = artifact.module
    state = getattr(module, "_modelpress_float_state", None) or module.state_dict()
    params = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
              and not k.endswith(("running_mean", "running_var"))}
    total = sum(v.numel() for v in params.values())
    nonzero = sum(int(torch.count_nonzero(v)) for v in params.values())
    macs = 0
    hooks = []

    def count(mod: nn.Module, _inp: Any, out: Any) -> None:
        nonlocal macs
        if isinstance(mod, nn.modules.conv._ConvNd):
            macs += out[0].numel() * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        elif isinstance(mod, nn.Linear):
            macs += out[0].numel() * mod.in_features
        elif isinstance(mod, nn.LSTM):
            steps = out[0].shape[1] if mod.batch_first else out[0].shape[0]
            for layer in range(mod.num_layers):
                inp = mod.input_size if layer == 0 else mod.hidden_size
                macs += steps * 4 * mod.hidden_size * (inp + mod.hidden_size)

    for sub in module.modules():
        if isinstance(sub, (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)):
            hooks.append(sub.register_forward_hook(count))
    reason = None
    try:
        sample = [torch.zeros((1, *[d or 1 for d in spec.shape[1:]]), dtype=getattr(torch, spec.dtype))
                  for spec in artifact.inputs]
        with torch.inference_mode():
            module(*sample)
    except Exception as exc:  # MACs are informative; a model that needs real inputs still gets the other numbers
        macs, reason = None, f"could not run a dummy sample: {type(exc).__name__}"
    finally:
        for h in hooks:
            h.remove()
    return {"params": total, "nonzero_params": nonzero, "sparsity": 1 - nonzero / total if total else 0.0,
            "macs": macs, "macs_reason": reason,
            "_dense_bytes": sum(v.numel() * v.element_size() for v in params.values())}


_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"}


def _onnx_footprint(artifact: ModelArtifact) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    from ..onnx_utils import load_onnx

    model = load_onnx(artifact.path)
    total = nonzero = 0
    for init in model.graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
                              onnx.TensorProto.UINT8, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE):
            array = numpy_helper.to_array(init)
            if array.size > 1:  # scales and zero points are bookkeeping, not parameters
                total += array.size
                nonzero += int(np.count_nonzero(array))
    macs, reason = _onnx_macs(model)
    return {"params": total, "nonzero_params": nonzero, "sparsity": 1 - nonzero / total if total else 0.0,
            "macs": macs, "macs_reason": reason}


def _onnx_macs(model: Any) -> tuple[int | None, str | None]:
    """MACs per sample from shape inference with every dynamic axis set to 1 (batch 1)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception as exc:
        return None, f"shape inference failed: {type(exc).__name__}"
    shapes: dict[str, list[int | None]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        out = shapes.get(node.output[0])
        weight_index = {"QLinearConv": 3, "QLinearMatMul": 3}.get(node.op_type, 1)
        weight = shapes.get(node.input[weight_index]) if len(node.input) > weight_index else None
        if not out or not weight or None in out or None in weight:
            return None, f"unknown shape at {node.op_type} node {node.name!r}"
        if "Conv" in node.op_type:
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        else:
            k = weight[-1] if node.op_type == "Gemm" and _gemm_trans_b(node) else weight[-2]
            macs += int(np.prod(out)) * int(k)
    return macs, None


def _gemm_trans_b(node: Any) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)
