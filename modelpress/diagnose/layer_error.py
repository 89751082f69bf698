"""Where the error comes from: each layer's output compared with the reference model's, on the same samples.

ONNX: a copy of each model exposes the intermediate tensors both graphs share as extra graph outputs (the idea of
``onnxruntime.quantization.qdq_loss_debug``: ``modify_model_output_intermediate_tensors`` + ``collect_activations``);
both copies run batch by batch with graph optimisation off, so every tensor keeps its name and its exact meaning.
Tensors are matched by name: in a QDQ model the ``X_DequantizeLinear_Output`` of an activation is the value its
consumers read, so it stands for the FP32 tensor ``X``; a dynamically quantized MatMul keeps its float output name.
Torch: forward hooks on leaf modules with the same qualified name in both models (:mod:`.torch_layers`).

Per matched tensor the statistics stream over batches (bounded memory): SQNR = 10·log10(Σref² / Σ(cand−ref)²) in
dB, relative L2 = ‖cand−ref‖ / ‖ref‖, and the mean per-sample cosine similarity.

A layer's own contribution is the noise it *adds*: relative noise power r = 1/SQNR at its output minus the worst r
among its inputs (errors flow through a layer roughly in proportion to the signal, so the difference is what this
layer injected: weight rounding, activation quantization, float16 rounding). Layers are ranked by it, worst first;
the cumulative SQNR and cosine at each layer's output are reported beside it. The model's own inputs count as exact.

In a QDQ model an activation is quantized once for its producer and every quantized consumer; keeping only the
producer in float leaves the tensor quantized for the consumers. Each layer therefore lists ``also_exclude``: the
quantized layers that read its output through the same Q/DQ pair — the set to keep in FP32 together.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import InputError
from ..runtime.sessions import ort_session_options
from .profile import INT8_KERNELS, is_int8_kernel
from .tensor_error import SQNR_CAP_DB, _added, _batches, _db, _result, _Stats, channel_axis  # noqa: F401

#: Op types that are "layers": they hold weights and do the heavy work (float, fp16 or int8).
LAYER_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "LSTM", "GRU", "Attention",
                       "EmbedLayerNormalization"}) | INT8_KERNELS
_DQ_SUFFIXES = ("_DequantizeLinear_Output_1", "_DequantizeLinear_Output", "_QuantizeLinear_Input")


def check_comparable(candidate: ModelArtifact, reference: ModelArtifact) -> None:
    """Raise InputError (exit 2) unless both models take the same inputs and output the same classes."""
    cand_inputs = [s.name for s in candidate.inputs]
    ref_inputs = [s.name for s in reference.inputs]
    if sorted(cand_inputs) != sorted(ref_inputs):
        raise InputError(f"reference {reference.source} takes inputs {ref_inputs} but candidate {candidate.source} "
                         f"takes {cand_inputs}", hint="explain compares two versions of the same model")
    if candidate.n_classes != reference.n_classes:
        raise InputError(f"reference {reference.source} outputs {reference.n_classes} classes but candidate "
                         f"{candidate.source} outputs {candidate.n_classes}",
                         hint="explain compares two versions of the same model")


# ---- ONNX --------------------------------------------------------------------------------------------------------
def normalized_name(name: str) -> str:
    """The FP32 tensor a quantized model's tensor stands for (QDQ suffixes removed)."""
    for suffix in _DQ_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exclude_name(node: Any) -> str:
    """The node name ``quantize --exclude-nodes`` takes: onnxruntime's dynamic quantizer appends ``_quant``."""
    if node.op_type in INT8_KERNELS and node.name.endswith("_quant"):
        return node.name[: -len("_quant")]
    return node.name


class _Graph:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.inits = {i.name for i in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in self.inits]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)

    def activations(self) -> list[str]:
        return [*self.inputs, *(o for n in self.model.graph.node if n.op_type != "Constant" for o in n.output if o)]


def _match(ref: _Graph, cand: _Graph) -> tuple[dict[str, str], dict[str, str]]:
    """(reference name → candidate tensor to compare, candidate tensor → reference name) for shared activations.

    A candidate tensor made by DequantizeLinear (what consumers read) is preferred over the float tensor before its
    QuantizeLinear, which may differ from the reference where a Relu was folded into the quantization.
    """
    wanted = set(ref.activations())
    chosen: dict[str, str] = {}
    alias: dict[str, str] = {}
    for name in cand.activations():
        base = normalized_name(name)
        if base not in wanted:
            continue
        alias[name] = base
        producer = cand.producer.get(name)
        post = producer is not None and producer.op_type == "DequantizeLinear"
        if base not in chosen or post:
            chosen[base] = name
    return chosen, alias


def _augmented_session(model: Any, names: list[str], threads: int, *, optimize: bool = False) -> Any:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(helper.make_empty_tensor_value_info(name))
    # qdq: optimisation off, every tensor keeps its name and its exact Q/DQ meaning; real: the evaluator's level,
    # so the fused integer kernels (QLinearConv, QGemm, MatMulIntegerToFloat…) run as in deployment
    opts = ort_session_options(threads=threads, optimization="all" if optimize else "disabled")
    try:
        return ort.InferenceSession(copy.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except ValueError as exc:  # protobuf over 2 GB
        raise InputError(f"layer errors need models under 2 GB to copy in memory ({exc})") from None
    except Exception as exc:
        raise InputError(f"onnxruntime cannot run the instrumented copy: {str(exc).splitlines()[0][:200]}") from None


def _real_kernel_fetches(cand: _Graph, pairs: list[tuple[str, str]]) -> dict[str, tuple[str, Any]]:
    """For each candidate tensor, what to fetch from an optimized session without breaking a fusion.

    A tensor inside a fused pattern (the float output of a Conv that onnxruntime runs as ``QLinearConv``, or the
    ``DequantizeLinear`` output it reads) no longer exists in the optimized graph, and asking for it as a graph
    output would stop the fusion — the kernel measured would not be the one deployed. So a tensor is fetched only
    when it survives onnxruntime's own optimisation; a dequantized activation is replaced by the uint8/int8 tensor
    its ``DequantizeLinear`` reads (the fused kernel's output), dequantized here in float32 as onnxruntime would.

    Returns:
        candidate tensor → (tensor to fetch, ``(scale, zero)`` to dequantize it with, or ``None``).
    """
    from onnx import numpy_helper

    from ..runtime.emulate import ort_optimized_graph

    optimized = ort_optimized_graph(cand.model)
    alive = {t for n in optimized.graph.node for t in (*n.input, *n.output) if t} | {i.name for i in
                                                                                     optimized.graph.input}
    inits = {i.name: i for i in cand.model.graph.initializer}
    out: dict[str, tuple[str, Any]] = {}
    for _, c in pairs:
        producer = cand.producer.get(c)
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] not in cand.inits:
            src = producer.input[0]
            scale = numpy_helper.to_array(inits[producer.input[1]]) if producer.input[1] in inits else None
            zero = numpy_helper.to_array(inits[producer.input[2]]) if len(producer.input) > 2 and \
                producer.input[2] in inits else np.zeros((), np.uint8)
            if src in alive and scale is not None and scale.size == 1:
                out[c] = (src, (np.float32(scale.reshape(())), zero.reshape(())))
                continue
        if c in alive:
            out[c] = (c, None)
    return out


def onnx_layer_errors(reference_path: str | Path, candidate_path: str | Path, data: Dataset, *,
                      batch_size: int = 32, threads: int = 1, kernels: str = "qdq") -> dict[str, Any]:
    """Per-layer error of the candidate ONNX model against the reference ONNX model (see the module docstring).

    ``kernels="qdq"`` runs the candidate unoptimised: the exact Q/DQ arithmetic the graph describes, every tensor
    available. ``kernels="real"`` runs it as the evaluator does (fused integer kernels of this CPU) and compares the
    tensors that survive the fusion (:func:`_real_kernel_fetches`): on a CPU without VNNI the two differ where
    u8×s8 pairs saturate.

    Returns:
        ``{"method", "n_samples", "matched_tensors", "unmatched_layers", "layers": [...worst first], "output"}``;
        each layer: ``node``, ``exclude_name``, ``op_type``, ``precision`` (int8 / fp16 / fp32), ``tensor`` (the
        reference tensor compared), ``sqnr_db``, ``rel_l2``, ``cosine``, ``channel_sqnr_db``,
        ``input_channel_sqnr_db``, ``noise_added`` (relative noise power added by this layer) and ``also_exclude``.
    """
    from ..onnx_utils import load_onnx

    ref = _Graph(load_onnx(Path(reference_path)))
    cand = _Graph(load_onnx(Path(candidate_path)))
    chosen, alias = _match(ref, cand)
    ref_out = ref.model.graph.output[0].name
    cand_out = cand.model.graph.output[0].name
    pairs = sorted(chosen.items())
    if kernels not in ("qdq", "real"):
        raise InputError(f"kernels must be 'qdq' or 'real', got {kernels!r}")
    fetch: dict[str, tuple[str, Any]] = {c: (c, None) for _, c in pairs}
    if kernels == "real":
        fetch = _real_kernel_fetches(cand, pairs)
        pairs = [(r, c) for r, c in pairs if c in fetch]
    ref_session = _augmented_session(ref.model, [r for r, _ in pairs], threads)
    cand_session = _augmented_session(cand.model, sorted({fetch[c][0] for _, c in pairs}), threads,
                                      optimize=kernels == "real")
    stats = {r: _Stats() for r, _ in pairs}
    output = _Stats()
    ref_logits, cand_logits = [], []
    ref_names = [r for r, _ in pairs]
    cand_names = sorted({fetch[c][0] for _, c in pairs} - {cand_out})
    for feed, rows in _batches(data, ref.inputs, batch_size):
        cand_feed = feed if cand.inputs == ref.inputs else dict(zip(cand.inputs, feed.values()))
        ref_values = dict(zip([ref_out, *ref_names], ref_session.run([ref_out, *ref_names], feed)))
        fetched = dict(zip([cand_out, *cand_names], cand_session.run([cand_out, *cand_names], cand_feed)))
        cand_values = {cand_out: fetched[cand_out]}
        for _, c in pairs:
            src, qparams = fetch[c]
            value = fetched[src]
            if qparams is not None:
                value = (value.astype(np.int32) - qparams[1].astype(np.int32)).astype(np.float32) * qparams[0]
            cand_values[c] = value
        for r, c in pairs:
            a, b = ref_values[r], cand_values[c]
            if a.shape == b.shape and a.dtype.kind == "f" and b.dtype.kind == "f":
                stats[r].add(a, b, rows)
        output.add(ref_values[ref_out], cand_values[cand_out], rows)
        ref_logits.append(np.asarray(ref_values[ref_out], dtype=np.float64).reshape(rows, -1))
        cand_logits.append(np.asarray(cand_values[cand_out], dtype=np.float64).reshape(rows, -1))
    stats = {k: v for k, v in stats.items() if v.rows}
    layers, unmatched = _onnx_layers(cand, alias, stats, set(ref.inputs))
    return _result("onnx-intermediate" if kernels == "qdq" else "onnx-real-kernels", len(data), len(stats),
                   unmatched, layers, output,
                   np.concatenate(ref_logits), np.concatenate(cand_logits))


def _precision(graph: _Graph, node: Any) -> str:
    from onnx import TensorProto

    if is_int8_kernel(node.op_type):
        return "int8"
    types = {i.name: i.data_type for i in graph.model.graph.initializer}
    for name in node.input:
        producer = graph.producer.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in graph.inits:
            return "int8"
        if types.get(name) == TensorProto.FLOAT16:
            return "fp16"
        if producer is not None and producer.op_type == "Cast" and any(
                a.name == "to" and a.i == TensorProto.FLOAT16 for a in producer.attribute):
            return "fp16"
    return "fp32"


def _walk(graph: _Graph, start: list[str], alias: dict[str, str], *, down: bool, limit: int = 12) -> list[str]:
    """Matched tensors reached from ``start`` through non-layer nodes (breadth first, ``limit`` hops)."""
    found: list[str] = []
    seen = set(start)
    queue = deque((t, 0) for t in start)
    while queue:
        tensor, hops = queue.popleft()
        if tensor in alias:
            if alias[tensor] not in found:
                found.append(alias[tensor])
            if down:
                return found
            continue
        if hops >= limit or tensor in graph.inits:
            continue
        if down:
            nodes = graph.consumers.get(tensor, [])
        else:
            nodes = [graph.producer[tensor]] if tensor in graph.producer else []
        for node in nodes:
            if node.op_type in LAYER_OPS:
                continue
            for nxt in (node.output if down else node.input):
                if nxt and nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, hops + 1))
    return found


def _quantized_consumers(graph: _Graph, node: Any) -> list[str]:
    """Quantized layers that read ``node``'s output through a QuantizeLinear → DequantizeLinear pair."""
    found = []
    frontier = list(node.output)
    seen = set(frontier)
    crossed_q = set()
    while frontier:
        tensor = frontier.pop()
        for consumer in graph.consumers.get(tensor, []):
            if consumer.op_type in LAYER_OPS:
                if tensor in crossed_q and _precision(graph, consumer) == "int8":
                    found.append(exclude_name(consumer))
                continue
            for out in consumer.output:
                if out and out not in seen:
                    seen.add(out)
                    frontier.append(out)
                    if consumer.op_type == "DequantizeLinear" or tensor in crossed_q:
                        crossed_q.add(out)
    return sorted(set(found) - {exclude_name(node)})


def _onnx_layers(cand: _Graph, alias: dict[str, str], stats: dict[str, _Stats],
                 model_inputs: set[str]) -> tuple[list[dict[str, Any]], int]:
    layers, unmatched = [], 0
    for node in cand.model.graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        outs = [t for t in _walk(cand, [o for o in node.output if o], alias, down=True) if t in stats]
        if not outs:
            unmatched += 1
            continue
        ins = [t for t in _walk(cand, [i for i in node.input if i and i not in cand.inits], alias, down=False)
               if t in stats or t in model_inputs]
        in_ratio = max((0.0 if t in model_inputs else stats[t].channel_noise_ratio for t in ins), default=0.0)
        out_stats = stats[outs[0]]
        precision = _precision(cand, node)
        layers.append({"node": node.name, "exclude_name": exclude_name(node), "op_type": node.op_type,
                       "precision": precision, "tensor": outs[0], **out_stats.as_dict(),
                       "input_channel_sqnr_db": _db(in_ratio),
                       "noise_added": _added(out_stats.channel_noise_ratio, in_ratio),
                       "also_exclude": _quantized_consumers(cand, node) if precision == "int8" else []})
    return layers, unmatched


def layer_errors(candidate: ModelArtifact, reference: ModelArtifact, data: Dataset, *, batch_size: int = 32,
                 threads: int = 1) -> dict[str, Any]:
    """Per-layer error of ``candidate`` against ``reference`` (both ONNX, or both torch); see the module docstring.

    Raises:
        InputError: the models take different inputs, output different class counts, or are in formats that
            cannot be matched layer by layer (ONNX vs torch: export the reference to ONNX first).
    """
    check_comparable(candidate, reference)
    if candidate.format == "onnx" and reference.format == "onnx":
        return onnx_layer_errors(reference.path, candidate.path, data, batch_size=batch_size, threads=threads)
    if candidate.format == "torch" and reference.format == "torch":
        from .torch_layers import torch_layer_errors

        return torch_layer_errors(reference, candidate, data, batch_size=batch_size, threads=threads)
    raise InputError(f"per-layer errors compare models of one format; candidate is {candidate.format}, reference is "
                     f"{reference.format}", hint="export the reference to ONNX (modelpress export) and compare those")


def sensitivity_ranking(result: dict[str, Any], *, min_noise: float = 0.0) -> list[str]:
    """Node names to keep in FP32, most harmful first: each quantized layer, then the consumers sharing its
    quantized output (``also_exclude``). Used by ``explain`` recommendations and the accuracy-aware quantizer."""
    order: list[str] = []
    for layer in result["layers"]:
        if layer["precision"] == "fp32" or layer["noise_added"] <= min_noise:
            continue
        for name in [layer["exclude_name"], *layer["also_exclude"]]:
            if name not in order:
                order.append(name)
    return order
