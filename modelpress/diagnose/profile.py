"""Where the time goes: per-operator time of one model on one batch, from the runtime's own profiler.

ONNX models run in an onnxruntime session configured exactly as the evaluator's (``ort_session``: full graph
optimisation, sequential executor, the same intra-op threads) with ``SessionOptions.enable_profiling``; the JSON trace
it writes holds one ``"cat": "Session"`` event ``model_run`` per call and one ``"cat": "Node"`` event
``<node>_kernel_time`` per kernel (``args.op_name`` = the op type that actually ran, after fusion). Torch modules run
under ``torch.profiler`` (self CPU time per operator) with forward hooks timing each leaf module.

Numbers are per call, averaged over the faster half of the profiled calls (by summed kernel time; the ``warmup``
calls before them are left out): a call descheduled by another process inflates whichever kernel it hit, and
averaging over the same quiet calls keeps the per-operator times additive — they sum to ``kernel_ms``.
``coverage`` = (sum of kernel times) / (``model_run`` time), the median over calls: what the per-operator table
explains of the whole call. The rest is the executor's own work (input binding, allocation, fences), which is
fixed per call, so coverage approaches 1 for models whose kernels take long and is low for tiny models.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..errors import InputError
from ..runtime.sessions import ort_session_options, set_torch_threads

#: Ops onnxruntime runs as integer kernels (the int8 work a quantized model is meant to do).
INT8_KERNELS = frozenset({
    "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearConv",
    "QLinearMatMul", "QGemm", "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "NhwcQLinearConv",
    "QOrderedMatMul", "QOrderedAttention", "MatMulNBits", "DynamicQuantizeConvInteger",
})
#: Quantize / dequantize kernels: pure conversion overhead when they run on their own.
QDQ_KERNELS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: Float kernels that do a layer's heavy work (after onnxruntime's fusions).
FLOAT_COMPUTE_KERNELS = frozenset({
    "Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Attention",
    "MultiHeadAttention", "LSTM", "GRU", "NhwcFusedConv", "EmbedLayerNormalization",
})


def is_int8_kernel(op_type: str) -> bool:
    """True for integer kernels, including every ``QLinear*`` op (QLinearAdd, QLinearAveragePool, ...)."""
    return op_type in INT8_KERNELS or op_type.startswith("QLinear")


def kernel_class(op_type: str) -> str:
    """``int8``, ``qdq`` (conversion), ``cast``, ``float_compute`` or ``other`` (elementwise, shape ops...)."""
    if is_int8_kernel(op_type):
        return "int8"
    if op_type in QDQ_KERNELS:
        return "qdq"
    if op_type == "Cast":
        return "cast"
    if op_type in FLOAT_COMPUTE_KERNELS:
        return "float_compute"
    return "other"


def node_key(name: str) -> str:
    """A profiled or graph node name reduced to what survives fusion and quantization renames.

    onnxruntime names fused kernels ``fused <node>``, MatMul+Add fusions ``<node>/MatMulAddFusion``, layout copies
    ``<node>_token_<n>`` and NCHWc convolutions ``<output tensor>_nchwc``; its dynamic quantizer appends ``_quant`` to
    the node it replaces. The key lets a layer be found in either model's profile (by node or output tensor name).
    """
    key = name.removeprefix("fused ")
    key = re.sub(r"_kernel_time$", "", key)
    key = re.sub(r"(_token_\d+)+$", "", key)
    for suffix in ("_nchwc", "_quant", "/MatMulAddFusion"):
        key = key.removesuffix(suffix)
    return key


def _class_of(entry: dict[str, Any]) -> str:
    return str(entry.get("class") or kernel_class(entry["op_type"]))


def _summary(per_node: dict[str, dict[str, Any]], run_ms: list[float], kernel_ms: list[float], *, backend: str,
             batch_size: int, threads: int, runs: int) -> dict[str, Any]:
    total = float(sum(v["ms"] for v in per_node.values()))
    by_type: dict[str, dict[str, Any]] = {}
    for entry in per_node.values():
        row = by_type.setdefault(entry["op_type"], {"op_type": entry["op_type"], "ms": 0.0, "count": 0,
                                                    "class": _class_of(entry)})
        row["ms"] += entry["ms"]
        row["count"] += 1
    for row in [*by_type.values(), *per_node.values()]:
        row["share"] = row["ms"] / total if total > 0 else 0.0
    classes: dict[str, float] = defaultdict(float)
    for entry in per_node.values():
        classes[_class_of(entry)] += entry["ms"]
    coverage = [k / r for k, r in zip(kernel_ms, run_ms) if r > 0]
    return {
        "backend": backend, "batch_size": batch_size, "threads": threads, "runs": runs,
        "calls_averaged": len(run_ms),
        "run_ms": float(np.mean(run_ms)) if run_ms else None,
        "kernel_ms": float(np.mean(kernel_ms)) if kernel_ms else total,
        "coverage": float(np.median(coverage)) if coverage else None,
        "by_class_ms": {k: float(v) for k, v in sorted(classes.items())},
        "by_op_type": sorted(by_type.values(), key=lambda r: (-r["ms"], r["op_type"])),
        "by_node": sorted(per_node.values(), key=lambda r: (-r["ms"], r["node"])),
        "int8_kernels_executed": {r["op_type"]: r["count"] for r in by_type.values() if r["class"] == "int8"},
        "qdq_kernels_executed": sorted(n["node"] for n in per_node.values() if n["op_type"] in QDQ_KERNELS),
    }


# ---- onnxruntime ---------------------------------------------------------------------------------------------
def profile_onnx(path: str | os.PathLike[str], batch: dict[str, np.ndarray], *, threads: int, runs: int = 30,
                 warmup: int = 5) -> dict[str, Any]:
    """Profile ``runs`` calls of the ONNX model at ``path`` on ``batch`` (after ``warmup`` calls).

    Returns a dict: ``run_ms`` (``model_run`` per call), ``kernel_ms`` (per-call sum of kernel times),
    ``coverage``, ``by_op_type`` and ``by_node`` (ms per call, share of kernel time, sorted slowest
    first), ``by_class_ms`` (int8 / qdq / cast / float_compute / other), ``int8_kernels_executed`` (op type →
    kernel count) and ``qdq_kernels_executed`` (names of QuantizeLinear/DequantizeLinear kernels that ran).
    The trace file is written to a temporary folder and deleted.
    """
    import onnxruntime as ort

    from ..onnx_utils import load_onnx

    if runs < 1 or warmup < 0:
        raise InputError(f"profile runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    load_onnx(Path(path), with_data=False)  # external data checked before onnxruntime reads it
    with tempfile.TemporaryDirectory(prefix="modelpress-profile-") as tmp:
        opts = ort_session_options(threads=threads)  # the evaluator's settings, so times are comparable
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "trace")
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise InputError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        names = [i.name for i in session.get_inputs()]
        feed = _feed(names, batch)
        for _ in range(warmup + runs):
            session.run(None, feed)
        trace = session.end_profiling()
        with open(trace, encoding="utf-8") as handle:
            events = json.load(handle)
    return parse_ort_trace(events, skip=warmup, batch_size=len(next(iter(feed.values()))), threads=threads)


def _feed(names: list[str], batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(names) == 1 and len(batch) == 1:
        return {names[0]: np.ascontiguousarray(next(iter(batch.values())))}
    missing = [n for n in names if n not in batch]
    if missing:
        raise InputError(f"the model expects inputs {names} but the data has {sorted(batch)}")
    return {n: np.ascontiguousarray(batch[n]) for n in names}


def parse_ort_trace(events: list[dict[str, Any]], *, skip: int, batch_size: int, threads: int) -> dict[str, Any]:
    """Summarise an onnxruntime profiler trace (a list of Chrome-trace events), ignoring the first ``skip`` calls.

    Kernel events are assigned to the ``model_run`` whose [ts, ts + dur] window holds their start.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip:]
    if not runs:
        raise InputError("the onnxruntime profile holds no model_run event after the warm-up calls")
    kernels = sorted((e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")),
                     key=lambda e: e["ts"])
    per_node: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    run_ms, kernel_ms = [], []
    index = 0
    for number, run in enumerate(runs):
        start, stop = run["ts"], run["ts"] + run["dur"]
        while index < len(kernels) and kernels[index]["ts"] < start:
            index += 1
        total = 0
        while index < len(kernels) and kernels[index]["ts"] <= stop:
            event = kernels[index]
            name = event["name"][: -len("_kernel_time")]
            per_node.setdefault(name, {"node": name, "key": node_key(name),
                                       "op_type": str(event.get("args", {}).get("op_name", "?")),
                                       "ms": 0.0, "fused": name.startswith("fused ")})
            durations[name][number] += event["dur"] / 1e3
            total += event["dur"]
            index += 1
        run_ms.append(run["dur"] / 1e3)
        kernel_ms.append(total / 1e3)
    # the faster half of the calls, exactly ceil(n/2) of them: ``k <= median`` also took every call tied with the
    # median (µs-rounded kernel times tie often on a quiet machine: 7 of 12 calls were seen on an AVX2 CPU)
    quiet = sorted(int(i) for i in np.argsort(kernel_ms, kind="stable")[: (len(kernel_ms) + 1) // 2])
    for name, entry in per_node.items():
        entry["ms"] = float(np.mean([durations[name][i] for i in quiet]))
    run_ms = [run_ms[i] for i in quiet]
    kernel_ms = [kernel_ms[i] for i in quiet]
    return _summary(per_node, run_ms, kernel_ms, backend="onnxruntime", batch_size=batch_size, threads=threads,
                    runs=len(runs))


# ---- torch ---------------------------------------------------------------------------------------------------
def profile_torch(artifact: ModelArtifact, batch: dict[str, np.ndarray], *, threads: int, runs: int = 30,
                  warmup: int = 5) -> dict[str, Any]:
    """Profile a torch module: ``torch.profiler`` self CPU time per operator, forward hooks per leaf module.

    ``by_op_type`` holds the aten / quantized operators (``quantized::linear_dynamic`` is an int8 kernel);
    ``by_node`` holds the leaf modules (wall time between the forward pre-hook and hook). ``run_ms`` is the wall
    time per call under the profiler; ``kernel_ms`` the summed self CPU time of all operators per call.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    if artifact.module is None:
        raise InputError(f"{artifact.source} has no torch module to profile")
    set_torch_threads(threads)
    module = artifact.module.eval()
    names = [s.name for s in artifact.inputs]
    feed = _feed(names, batch)
    tensors = [torch.from_numpy(feed[n]) for n in names]
    with torch.inference_mode():
        for _ in range(warmup):
            module(*tensors)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            for _ in range(runs):
                module(*tensors)
            wall_ms = (time.perf_counter() - start) * 1e3 / runs
        layer_ms = _torch_layer_times(module, tensors, runs=max(3, runs // 3))
    ops: dict[str, dict[str, Any]] = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total <= 0:
            continue
        ops[event.key] = {"node": event.key, "key": event.key, "op_type": event.key,
                          "class": kernel_class(_torch_op_class(event.key)),
                          "ms": event.self_cpu_time_total / 1e3 / runs, "calls": int(event.count) // runs,
                          "fused": False}
    kernel_total = sum(v["ms"] for v in ops.values())
    summary = _summary(ops, [wall_ms], [kernel_total], backend="torch", batch_size=len(tensors[0]), threads=threads,
                       runs=runs)
    rows = ({**r, "count": r["calls"]} for r in ops.values())
    summary["by_op_type"] = sorted(rows, key=lambda r: (-r["ms"], r["node"]))
    summary["int8_kernels_executed"] = {r["node"]: r["calls"] for r in summary["by_op_type"]
                                        if r["class"] == "int8"}
    summary["by_node"] = layer_ms
    return summary


def _torch_op_class(key: str) -> str:
    """Map a torch operator to the ONNX op vocabulary used for classes (int8 / qdq / float_compute / other)."""
    namespace, _, op = key.partition("::")
    if namespace == "quantized" and not op.startswith(("quantize", "dequantize")):
        return "QLinear:" + op
    if key in ("aten::quantize_per_tensor", "aten::quantize_per_tensor_dynamic", "aten::quantize_per_channel"):
        return "QuantizeLinear"
    if key == "aten::dequantize":
        return "DequantizeLinear"
    if key in ("aten::addmm", "aten::mm", "aten::matmul", "aten::bmm", "aten::linear"):
        return "MatMul"
    if key in ("aten::mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv2d",
               "aten::conv1d", "aten::thnn_conv2d"):
        return "Conv"
    if key in ("aten::to", "aten::_to_copy", "aten::copy_"):
        return "Cast"
    return key


def _torch_layer_times(module: Any, tensors: list[Any], *, runs: int) -> list[dict[str, Any]]:
    """Mean wall ms per call of each leaf module that holds weights (or is a quantized module)."""
    from .torch_layers import _torch_leaves

    leaves = _torch_leaves(module)
    totals: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    handles = []
    for name, sub in leaves.items():
        handles.append(sub.register_forward_pre_hook(lambda _m, _i, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(sub.register_forward_hook(
            lambda _m, _i, _o, n=name: totals.__setitem__(n, totals[n] + time.perf_counter() - starts[n])))
    try:
        for _ in range(runs):
            module(*tensors)
    finally:
        for handle in handles:
            handle.remove()
    all_ms = sum(totals.values()) * 1e3 / runs
    rows = [{"node": n, "key": n, "op_type": type(leaves[n]).__name__, "ms": t * 1e3 / runs,
             "share": (t * 1e3 / runs) / all_ms if all_ms > 0 else 0.0, "fused": False} for n, t in totals.items()]
    return sorted(rows, key=lambda r: (-r["ms"], r["node"]))


def profile_artifact(artifact: ModelArtifact, batch: dict[str, np.ndarray], *, threads: int, runs: int = 30,
                     warmup: int = 5) -> dict[str, Any]:
    """Profile an ONNX or torch artifact on its native runtime (see :func:`profile_onnx`, :func:`profile_torch`)."""
    if artifact.format == "onnx" and artifact.path is not None:
        return profile_onnx(artifact.path, batch, threads=threads, runs=runs, warmup=warmup)
    if artifact.format == "torch":
        return profile_torch(artifact, batch, threads=threads, runs=runs, warmup=warmup)
    raise InputError(f"cannot profile a {artifact.format} artifact ({artifact.source})",
                     hint="explain profiles ONNX (onnxruntime) and torch models")


# ---- graph + profile: what the quantized graph asked for, and what actually ran --------------------------------
def qdq_analysis(model: Any, profile: dict[str, Any]) -> dict[str, Any]:
    """Q/DQ pairs in the graph against the kernels that ran.

    A QuantizeLinear → DequantizeLinear pair is *fused* when onnxruntime folded both halves into int8 kernels
    (neither node name among the executed kernels). When one half runs, an int8 region starts or ends there
    (``region_edges``). When both run — except at the model's own inputs and outputs, where converting once is the
    point — the pair is *unfused*: the tensor is quantized and dequantized again for an op that runs in float,
    pure overhead and the classic reason an INT8 model is slower than FP32.
    """
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input if i.name not in inits}
    graph_outputs = {o.name for o in model.graph.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    executed = set(profile.get("qdq_kernels_executed") or [])
    pairs, unfused, boundary, edges = [], [], 0, 0
    consumer_ops: dict[str, int] = defaultdict(int)
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):
        for dq in (c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"):
            pairs.append((q.name, dq.name))
            if q.input[0] in graph_inputs or dq.output[0] in graph_outputs:
                boundary += 1
                continue
            if q.name in executed and dq.name in executed:
                unfused.append(f"{q.name} → {dq.name}")
                for c in consumers.get(dq.output[0], []):
                    consumer_ops[c.op_type] += 1
            elif q.name in executed or dq.name in executed:
                edges += 1  # one half folded into an int8 kernel: where an int8 region starts or ends
    weight_dq = {n.name for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    int8_in_graph: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if is_int8_kernel(node.op_type):
            int8_in_graph[node.op_type] += 1
    return {
        "quantize_nodes": sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear"),
        "dequantize_nodes": sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"),
        "dynamic_quantize_nodes": sum(1 for n in model.graph.node if n.op_type == "DynamicQuantizeLinear"),
        "qdq_pairs": len(pairs), "boundary_pairs": boundary, "region_edges": edges, "unfused_pairs": len(unfused),
        "unfused_examples": unfused[:10], "unfused_consumer_ops": dict(sorted(consumer_ops.items())),
        "weight_dequantize_executed": sorted(weight_dq & executed),
        "int8_nodes_in_graph": dict(sorted(int8_in_graph.items())),
        "int8_kernels_executed": sum((profile.get("int8_kernels_executed") or {}).values()),
        "qdq_ms": float((profile.get("by_class_ms") or {}).get("qdq", 0.0)),
        "qdq_share": float((profile.get("by_class_ms") or {}).get("qdq", 0.0)) / profile["kernel_ms"]
        if profile.get("kernel_ms") else 0.0,
    }
