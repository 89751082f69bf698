"""Thin wrappers over ``onnxruntime.quantization`` and ONNX's float16 conversion, plus two graph rewrites.

The defaults that depend on the CPU target (activation/weight types, ``reduce_range``, op sets) are in
:mod:`.quantize_targets`. What the rest is, and why (measured on an Intel Xeon, Sapphire Rapids: AVX-512 VNNI + AMX;
README "Quantization"):

* **U8S8** (uint8 activations, int8 weights) for static mode. onnxruntime's own default (S8S8) has no fast CPU
  kernel for QDQ MatMul here: all-MiniLM-L6-v2 stayed at FP32 speed with it, and ran 2× faster with U8S8. Without
  VNNI, U8S8 needs 7-bit weights (``reduce_range``), see :mod:`.quantize_targets`.
* **Per-channel weights** by default: all-MiniLM-L6-v2's pooled-embedding cosine to FP32 went from 0.963 to 0.993
  at the same speed.
* **No ConvInteger** in dynamic mode: it is ~7× slower than FP32 Conv here (no fast kernel); CNNs take static mode.
* **Tiny reductions are quantized too, by default**: an int8 Conv with 9 multiply-adds per output (1 input
  channel, 3×3) ran 3.4× slower than FP32, yet keeping it FP32 made zoo:cnn 2× slower overall, because the
  float MaxPool after it then ran outside onnxruntime's NCHWc/NHWC fast paths. ``min_reduction`` keeps such
  layers FP32 where that pays (off by default).
* **Residual Add → Sum before LayerNormalization**: onnxruntime fuses Add + LayerNormalization into
  SkipLayerNormalization, whose CPU kernel measured 6× slower than Add + LayerNormalization (1.96 vs 0.32 ms at
  8×128×384). Writing the residual as ``Sum`` (same maths) keeps the fast path in any onnxruntime session.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..runtime.onnx_graph import convert_fp16, drop_cast_round_trips, load, quiet, save  # noqa: F401
from .quantize_targets import DYNAMIC_OPS, STATIC_OPS  # noqa: F401  (re-exported: the per-mode default op sets)

#: Ops that hold weights worth quantizing (the ones reports count as "quantized" or "kept FP32").
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Gather", "LSTM", "GRU", "Attention",
               "EmbedLayerNormalization")
#: Integer kernels that replace a float op, mapped back to the op they implement.
INTEGER_OPS = {"MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul",
               "QLinearMatMul": "MatMul", "ConvInteger": "Conv", "QLinearConv": "Conv", "QGemm": "Gemm",
               "QAttention": "Attention", "DynamicQuantizeLSTM": "LSTM", "QEmbedLayerNormalization":
               "EmbedLayerNormalization", "MatMulNBits": "MatMul"}
_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}


# ---- preparation ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """Run in a throwaway working folder: when symbolic shape inference fails, onnxruntime dumps
    ``sym_shape_infer_temp.onnx`` plus its external data (90 MB for MiniLM) into the current folder."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="modelpress-preprocess-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def preprocess(src: Path, dst: Path, notes: list[str]) -> Path:
    """``quant_pre_process`` (shape inference + onnxruntime's basic graph optimisation), as onnxruntime advises.

    Symbolic shape inference fails on some exported graphs; then it runs without it, and says so in ``notes``.
    Both paths are made absolute *before* entering the scratch folder: a relative model path (``modelpress quantize
    reports/demo/stages/04-export``) resolved inside it named a file that does not exist (FileNotFoundError).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    for symbolic in (True, False):
        try:
            with quiet(), _scratch_cwd():
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=not symbolic)
            if not symbolic:
                notes.append("pre-processing ran without symbolic shape inference (it failed on this graph)")
            return dst
        except Exception as exc:  # onnxruntime raises bare Exception / AssertionError from its shape inference
            last = exc
    notes.append(f"pre-processing skipped: quant_pre_process failed ({type(last).__name__})")
    return src


def optimize_transformer(src: Path, dst: Path, notes: list[str], *, num_heads: int = 0,
                         hidden_size: int = 0) -> Path:
    """onnxruntime.transformers fusions for BERT-like graphs (Attention, SkipLayerNorm, EmbedLayerNorm, BiasGelu).

    ``num_heads`` / ``hidden_size`` (0: detect from the graph) come from the model's config.json when known; the
    Attention fusion needs them for most exported graphs.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    with quiet():
        optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=0)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(dst))
    notes.append("transformer fusions: " + (", ".join(f"{k} ×{v}" for k, v in sorted(fused.items())) or "none"))
    return dst


def gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(x, W, b)`` with constant W as ``MatMul`` (same node name) + ``Add``.

    onnxruntime's dynamic quantizer quantizes MatMul, not Gemm (what torch exports for ``nn.Linear`` on 2-D input);
    it rewrites Gemms itself but renames them, so exclusions and reports could no longer find them by name.
    Only plain Gemms (alpha = beta = 1, no transA) are rewritten. Returns how many.
    A transposed weight's old shape is dropped from ``value_info`` and graph inputs: the dynamo exporter records
    the shape of every tensor, and shape inference then refused the rewritten graph ("Inferred shape and existing
    shape differ in dimension 0: (384) vs (4)" on ``modelpress export hf:DIR`` then ``quantize --mode dynamic``).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    count = 0
    transposed: set[str] = set()
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = inits[node.input[1]]
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(weight).T
            weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), weight.name))
            transposed.add(weight.name)
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [mm_out], name=node.name))
        if has_bias:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for listing in (model.graph.value_info, model.graph.input):
        for stale in [v for v in listing if v.name in transposed]:
            listing.remove(stale)
    return count


def residual_sum(model: Any) -> int:
    """Turn residual ``Add`` nodes that feed a LayerNormalization into ``Sum`` (see the module docstring)."""
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    count = 0
    for node in model.graph.node:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or any(i in inits for i in node.input):
            continue
        if any(c.op_type == "LayerNormalization" for c in consumers.get(node.output[0], [])):
            node.op_type = "Sum"
            count += 1
    return count


# ---- graph inspection ----------------------------------------------------------------------------------------
def reduction_size(model: Any, node: Any) -> int | None:
    """Multiply-adds per output element of a Conv / MatMul / Gemm with a constant weight, else None."""
    from onnx import helper

    inits = {i.name: i for i in model.graph.initializer}
    if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
        return None
    dims = list(inits[node.input[1]].dims)
    if node.op_type == "Conv":
        return int(np.prod(dims[1:])) if len(dims) >= 3 else None
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute)
        return int(dims[1] if trans_b else dims[0]) if len(dims) == 2 else None
    return int(dims[-2]) if len(dims) >= 2 else None


_WEIGHT_INPUT = {"Gather": 0, "EmbedLayerNormalization": 2}


def weight_input(node: Any) -> str:
    """The name of the input that holds a compute node's weight ("" when it has none)."""
    index = _WEIGHT_INPUT.get(node.op_type, 1)
    return node.input[index] if len(node.input) > index else ""


def candidates(model: Any, op_types: tuple[str, ...]) -> dict[str, str]:
    """Nodes (name → op type) of ``op_types`` ∩ :data:`COMPUTE_OPS` that carry a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type not in op_types or node.op_type not in COMPUTE_OPS or not node.name:
            continue
        if weight_input(node) in inits:
            found[node.name] = node.op_type
    return found


def graph_input_names(model: Any) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def float_compute_nodes(model: Any) -> dict[str, str]:
    """Compute nodes that still run in FP32: their weight is neither int8 (directly or through a
    DequantizeLinear) nor float16."""
    from onnx import TensorProto

    int_inits = {i.name for i in model.graph.initializer
                 if i.data_type in (TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT16)}
    dq_of_int = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int_inits}
    floats = {}
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        weight = weight_input(node)
        if weight in dq_of_int or weight in int_inits:
            continue
        floats[node.name] = node.op_type
    return floats


def op_counts(model: Any, before: dict[str, str]) -> dict[str, Any]:
    """Quantized vs float compute ops by type, judged against the candidates ``before`` quantization."""
    floats = float_compute_nodes(model)

    def is_float(name: str) -> bool:  # onnxruntime's own Gemm → MatMul rewrite names the MatMul NAME_MatMul
        return name in floats or f"{name}_MatMul" in floats

    still_float = {name for name in before if is_float(name)}
    quantized = Counter(op for name, op in before.items() if name not in still_float)
    kept = Counter(op for name, op in before.items() if name in still_float)
    kernels = Counter(n.op_type for n in model.graph.node if n.op_type in INTEGER_OPS
                      or n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast"))
    return {"quantized": dict(sorted(quantized.items())), "float": dict(sorted(kept.items())),
            "quantized_nodes": sorted(n for n in before if n not in still_float),
            "float_nodes": sorted(still_float), "kernels": dict(sorted(kernels.items()))}


# ---- quantizers ----------------------------------------------------------------------------------------------
class CalibrationReader:
    """Feeds calibration batches to onnxruntime's calibrators (a ``CalibrationDataReader``)."""

    def __init__(self, data: Dataset, input_names: list[str], batch_size: int) -> None:
        self.data = data
        self.names = input_names
        self.batch_size = batch_size
        self._iter: Iterator[dict[str, np.ndarray]] | None = None
        self._range = (0, len(self))

    def set_range(self, start_index: int, end_index: int) -> None:
        """Batches ``[start_index, end_index)`` only: onnxruntime calibrates stride by stride (bounded memory)."""
        self._range = (start_index, end_index)
        self._iter = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        start, stop = self._range
        for index, (batch, _) in enumerate(self.data.batches(self.batch_size)):
            if not start <= index < stop:
                continue
            if len(self.names) == 1 and len(batch) == 1:
                yield {self.names[0]: np.ascontiguousarray(next(iter(batch.values())))}
            else:
                yield {n: np.ascontiguousarray(batch[n]) for n in self.names}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None
        self._range = (0, len(self))

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return type("ModelpressCalibrationReader", (CalibrationReader, CalibrationDataReader), {})


def quantize_dynamic(src: Path, dst: Path, *, op_types: tuple[str, ...], per_channel: bool, reduce_range: bool,
                     weight_type: str, exclude: list[str]) -> Path:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    with quiet():
        ort_quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types), per_channel=per_channel,
                             reduce_range=reduce_range, weight_type=getattr(QuantType, _QUANT_TYPES[weight_type]),
                             nodes_to_exclude=list(exclude),
                             extra_options={"DefaultTensorType": TensorProto.FLOAT, "MatMulConstBOnly": True})
    return dst


def quantize_static(src: Path, dst: Path, *, reader: Any, cache: Path, op_types: tuple[str, ...], per_channel: bool,
                    reduce_range: bool, weight_type: str, activation_type: str, symmetric_activations: bool,
                    quant_format: str, calibrate: str, percentile: float, activation_matmuls: bool,
                    exclude: list[str]) -> Path:
    """QDQ (or QOperator) static quantization; calibration runs once and is cached in ``cache`` for re-runs."""
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate]
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                             "MatMulConstBOnly": not activation_matmuls, "DefaultTensorType": TensorProto.FLOAT}
    if calibrate == "percentile":
        extra["CalibPercentile"] = float(percentile)
    # One batch of intermediate tensors at a time: ranges (minmax) and histograms (entropy, percentile) are merged
    # stride by stride, so memory stays bounded on big models (CalibMaxIntermediateOutputs drops data instead).
    extra["CalibStridedMinMax"] = 1
    reader.rewind()
    with quiet():
        ort_quantize_static(
            str(src), str(dst), calibration_data_reader=reader,
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(op_types), per_channel=per_channel, reduce_range=reduce_range,
            activation_type=getattr(QuantType, _QUANT_TYPES[activation_type]),
            weight_type=getattr(QuantType, _QUANT_TYPES[weight_type]), nodes_to_exclude=list(exclude),
            calibrate_method=method, extra_options=extra, calibration_cache_path=str(cache))
    return dst


def out_of_fp16_range(model: Any) -> dict[str, int]:
    """Float32 weight values that float16 cannot hold: above 65504 (clamped) or tiny non-zeros (flushed)."""
    from onnx import TensorProto, numpy_helper

    big = tiny = 0
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = np.abs(numpy_helper.to_array(init))
        big += int((values > 65504.0).sum())
        tiny += int(((values > 0) & (values < 5.96e-8)).sum())
    return {"clamped": big, "flushed": tiny}


FP16_MAX = 65504.0
#: Magnitudes from here up are masking sentinels (``torch.finfo(float32).min`` in attention masks), not activations:
#: float16 conversion turns them into ±65504 / ±inf on purpose, and softmax gives the same result.
SENTINEL = 1e30


def fp16_overflows(path: Path, data: Dataset, *, threads: int, batch_size: int = 8) -> list[dict[str, Any]]:
    """Intermediate FP32 tensors whose magnitude exceeds float16's range on ``data``: they overflow to inf in a
    true FP16 run.

    Looked for in the FP32 model rather than in the FP16 one because onnxruntime's CPU provider has few float16
    kernels: it casts around them and computes in FP32, so an FP16 model can look fine on CPU and overflow on a GPU.
    Values of :data:`SENTINEL` magnitude and above are masks, not overflow.
    Returns one entry per overflowing tensor (largest first): tensor, max_abs, producer node, consumer nodes.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.shape_inference.infer_shapes(load(path))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output]}
    producer = {out: node.name for node in model.graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    watched = [t for t, ty in types.items() if ty == TensorProto.FLOAT and t in producer]
    existing = {o.name for o in model.graph.output}
    for name in watched:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    from ..runtime.sessions import ort_session

    tmp = path.with_name(f".{path.stem}.ranges.onnx")
    save(model, tmp)
    try:
        sess = ort_session(str(tmp), threads=threads)
        names = graph_input_names(model)
        peak = dict.fromkeys(watched, 0.0)
        for batch, _ in data.batches(batch_size):
            feed = ({names[0]: next(iter(batch.values()))} if len(names) == 1 and len(batch) == 1
                    else {n: batch[n] for n in names})
            for name, value in zip(watched, sess.run(watched, feed), strict=True):
                magnitude = np.abs(value[np.isfinite(value)])
                magnitude = magnitude[magnitude < SENTINEL]
                peak[name] = max(peak[name], float(magnitude.max()) if magnitude.size else 0.0)
    finally:
        tmp.unlink(missing_ok=True)
    found = [{"tensor": t, "max_abs": v, "producer": producer[t], "consumers": consumers.get(t, [])}
             for t, v in peak.items() if v > FP16_MAX]
    return sorted(found, key=lambda f: -f["max_abs"])


def session(path: Path, threads: int) -> Any:
    from ..runtime.sessions import ort_session

    return ort_session(str(path), threads=threads)


def feeds(model_or_names: Any, data: Dataset, *, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts over ``data`` in order for a model's graph inputs (or a list of input names); a single input is
    fed by position whatever the dataset calls it."""
    names = list(model_or_names) if isinstance(model_or_names, (list, tuple)) else graph_input_names(model_or_names)
    for batch, _ in data.batches(batch_size):
        yield ({names[0]: next(iter(batch.values()))} if len(names) == 1 and len(batch) == 1
               else {n: batch[n] for n in names})


def file_size(path: Path) -> int:
    from ..onnx_utils import external_data_files

    return os.path.getsize(path) + sum(f.stat().st_size for f in external_data_files(Path(path)))


def check_names(model: Any, names: tuple[str, ...], what: str) -> None:
    """Every name in ``names`` must be a node of ``model``; suggest the closest when not."""
    import difflib

    known = [n.name for n in model.graph.node if n.name]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the graph has {len(known)} named nodes"
            raise InputError(f"quantize.{what}: no node named {name!r} in the model", hint=hint)
