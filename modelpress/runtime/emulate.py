"""Predict what another CPU's INT8 kernels output: onnxruntime's integer arithmetic, emulated layer by layer.

Why: an INT8 ONNX model gives different numbers on different x86 CPUs (see :mod:`.target`). Without VNNI, MLAS's
u8×s8 GEMM kernels (``MlasGemmU8S8KernelAvx2``, also used by ``QLinearConv``, ``QGemm``, ``MatMulInteger`` and
``MatMulIntegerToFloat``) multiply raw uint8 activations by raw int8 weights with ``vpmaddubsw``, which adds each
*adjacent pair of products along the reduction axis* into int16 with saturation (±32767/−32768) before ``vpmaddwd``
widens them to int32; zero points are corrected afterwards in int32, so the saturation acts on the raw bytes. With
VNNI (``vpdpbusd``), AMX, and Arm's ``sdot``/``udot`` the products reach int32 exactly.

Order of the reduction axis (the pairs): MatMul/Gemm reduce over K in memory order (the packed B of
``MlasGemmU8S8CopyPackBAvx2`` keeps 4 consecutive k per column; ``vpmaddubsw`` pairs k, k+1). ``QLinearConv`` runs
channels-last: its im2col rows are ``(kh, kw, c)`` with the input channel fastest, so pairs are adjacent input
channels at one kernel tap (and consecutive taps when a group has a single channel). Depthwise convolutions
(``MlasConvDepthwise``, which widens to int16 first) are treated as exact: not yet validated on a real AVX2 CPU.
u8×u8 kernels (U8U8) use ``vpmaddwd`` on int16 and are treated as exact (from the kernel, not measured here);
``ConvInteger`` (dynamic quantization of Conv) is exact, measured. An int8 activation is shifted to uint8 (+128, onnxruntime's ``QDQS8ToU8`` rewrite) on x86. These
were checked against the real kernels: this module's outputs match onnxruntime natively on an AVX-512 VNNI CPU
(Sapphire Rapids) and under ``qemu-x86_64 -cpu max`` (AVX2, no VNNI), see tests/runtime/test_emulate.py.

Which nodes run as integer kernels is read from onnxruntime itself: the model is optimized at the level sessions
use (``ORT_ENABLE_EXTENDED`` fuses ``DQ → Conv → Q`` into ``QLinearConv``, ``DQ → MatMul`` into
``MatMulIntegerToFloat`` …) and the integer nodes of that graph are mapped back to the original nodes by the tensors
they produce. The rest of the graph runs as written (Q/DQ arithmetic in float32, as onnxruntime computes it).
A fused node requantizes as ``QLinearConv`` does: ``rint((acc + bias_q) · float32(sx·sw/sy)) + zy``, clamped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .target import Target

#: onnxruntime kernels that run u8×s8 (or u8×u8) integer GEMMs after graph optimization.
INTEGER_KERNELS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger",
                             "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})
_LAYER_OPS = ("Conv", "MatMul", "Gemm")
_PASS_THROUGH = ("Relu", "Clip", "QuantizeLinear", "Add")

INT16_MIN, INT16_MAX = -32768, 32767
_EXACT = Target("exact", "exact int32 accumulation", "any", "int32-exact")


# ---- the integer core (pure) -------------------------------------------------------------------------------------
def saturating_dot(a: np.ndarray, w: np.ndarray, *, saturate: bool) -> tuple[np.ndarray, int]:
    """Raw integer products summed over the last axis: ``a`` (…, K) uint8 values, ``w`` (M, K) int8 values.

    Returns ``(acc, clipped)``: ``acc`` (…, M) int64 — with ``saturate`` each adjacent pair (k even, k+1) is added
    in int16 with saturation first, as ``vpmaddubsw`` does — and how many pair sums were clipped.
    """
    a = np.asarray(a, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    if a.shape[-1] != w.shape[-1]:
        raise InputError(f"reduction lengths differ: activations {a.shape[-1]}, weights {w.shape[-1]}")
    if not saturate:
        exact = a.astype(np.float64) @ w.T.astype(np.float64)  # |values| < 2^53: float64 matmul is exact and fast
        return exact.astype(np.int64), 0
    k = a.shape[-1]
    if k % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.int64)], axis=-1)
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.int64)], axis=-1)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, a.shape[-1] // 2, 2)
    w2 = w.reshape(w.shape[0], -1, 2)
    acc = np.zeros((a2.shape[0], w.shape[0]), np.int64)
    clipped = 0
    for p in range(a2.shape[1]):
        pair = np.outer(a2[:, p, 0], w2[:, p, 0]) + np.outer(a2[:, p, 1], w2[:, p, 1])
        clipped += int(np.count_nonzero((pair > INT16_MAX) | (pair < INT16_MIN)))
        acc += np.clip(pair, INT16_MIN, INT16_MAX)
    return acc.reshape(*lead, w.shape[0]), clipped


def _as_u8(x: np.ndarray, zero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 activations become uint8 (+128) as onnxruntime's QDQS8ToU8 rewrite does on x86."""
    x = np.asarray(x)
    zero = np.asarray(zero if zero is not None else 0)
    if x.dtype == np.int8:
        return x.astype(np.int64) + 128, zero.astype(np.int64) + 128
    return x.astype(np.int64), zero.astype(np.int64)


def integer_matmul(a: np.ndarray, a_zero: Any, w: np.ndarray, w_zero: Any, *, target: Target,
                   stats: dict[str, int] | None = None) -> np.ndarray:
    """Σ_k (a − za)(w − zw) for ``a`` (…, K) and ``w`` (K, N) as ``target``'s kernels compute it (int64)."""
    a64, za = _as_u8(a, a_zero)
    w64 = np.asarray(w).astype(np.int64)
    zw = np.broadcast_to(np.asarray(w_zero if w_zero is not None else 0).astype(np.int64), (w64.shape[-1],))
    saturate = target.saturates and np.asarray(w).dtype == np.int8
    raw, clipped = saturating_dot(a64, w64.T, saturate=saturate)
    if stats is not None:
        stats["clipped"] = stats.get("clipped", 0) + clipped
        stats["pairs"] = stats.get("pairs", 0) + int(np.prod(raw.shape)) * -(-a64.shape[-1] // 2)
    k = a64.shape[-1]
    return raw - zw * a64.sum(axis=-1, keepdims=True) - za * w64.sum(axis=0) + k * za * zw


def _im2col(x: np.ndarray, pad_value: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
            pads: tuple[int, int, int, int], dilations: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) → (N, Ho, Wo, kh, kw, C): channels-last patches, padding with ``pad_value`` (the zero point)."""
    n, c, h, w = x.shape
    t, left, b, r = pads
    padded = np.empty((n, c, h + t + b, w + left + r), x.dtype)
    padded[...] = pad_value
    padded[:, :, t:t + h, left:left + w] = x
    kh, kw = kernel
    ho = (h + t + b - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (w + left + r - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((n, ho, wo, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            win = padded[:, :, i * dilations[0]: i * dilations[0] + strides[0] * (ho - 1) + 1: strides[0],
                         j * dilations[1]: j * dilations[1] + strides[1] * (wo - 1) + 1: strides[1]]
            cols[:, :, :, i, j, :] = win.transpose(0, 2, 3, 1)
    return cols


def integer_conv(x: np.ndarray, x_zero: Any, w: np.ndarray, w_zero: Any, *, target: Target, group: int = 1,
                 strides: tuple[int, ...] = (1, 1), pads: tuple[int, ...] = (0, 0, 0, 0),
                 dilations: tuple[int, ...] = (1, 1), stats: dict[str, int] | None = None) -> np.ndarray:
    """2-D convolution Σ (x − zx)(w − zw) as ``target``'s QLinearConv computes it: (N, M, Ho, Wo) int64.

    Reduction order (kh, kw, c) per group, as QLinearConv's channels-last im2col; depthwise is exact everywhere.
    """
    x = np.asarray(x)
    if x.ndim != 4 or np.asarray(w).ndim != 4:
        raise InputError(f"integer convolution emulation covers 2-D convolutions; got input rank {x.ndim}")
    x64, zx = _as_u8(x, x_zero)
    w64 = np.asarray(w).astype(np.int64)
    m, cg, kh, kw = w64.shape
    zw = np.broadcast_to(np.asarray(w_zero if w_zero is not None else 0).astype(np.int64), (m,))
    depthwise = group > 1 and cg == 1 and m == group
    saturate = target.saturates and np.asarray(w).dtype == np.int8 and not depthwise
    pad4 = tuple(int(p) for p in pads) if len(pads) == 4 else (0, 0, 0, 0)
    cols = _im2col(x64, zx, (kh, kw), tuple(strides), (pad4[0], pad4[1], pad4[2], pad4[3]), tuple(dilations))
    n, ho, wo = cols.shape[:3]
    mg = m // group
    out = np.empty((n, ho, wo, m), np.int64)
    for g in range(group):
        a = cols[..., g * cg:(g + 1) * cg].reshape(n * ho * wo, kh * kw * cg)
        wg = w64[g * mg:(g + 1) * mg].transpose(0, 2, 3, 1).reshape(mg, kh * kw * cg)
        raw, clipped = saturating_dot(a, wg, saturate=saturate)
        if stats is not None:
            stats["clipped"] = stats.get("clipped", 0) + clipped
            stats["pairs"] = stats.get("pairs", 0) + raw.size * -(-a.shape[1] // 2)
        zwg = zw[g * mg:(g + 1) * mg]
        k = a.shape[1]
        acc = raw - zwg * a.sum(axis=1, keepdims=True) - zx * wg.sum(axis=1) + k * zx * zwg
        out[..., g * mg:(g + 1) * mg] = acc.reshape(n, ho, wo, mg)
    return out.transpose(0, 3, 1, 2)


def requantize(acc: np.ndarray, scale: np.ndarray, zero: Any, dtype: np.dtype) -> np.ndarray:
    """MLAS requantization: ``rint(float32(acc) · scale) + zero`` (round half to even, ``cvtps2dq``), clamped."""
    info = np.iinfo(dtype)
    value = np.rint(acc.astype(np.float32) * np.asarray(scale, np.float32))
    return np.clip(value + np.asarray(zero if zero is not None else 0).astype(np.float32), info.min,
                   info.max).astype(dtype)


# ---- which nodes onnxruntime runs as integer kernels ---------------------------------------------------------------
def ort_optimized_graph(model: Any) -> Any:
    """The graph onnxruntime really runs: ``model`` optimized by onnxruntime itself at ``ORT_ENABLE_EXTENDED`` (the
    level that fuses Q/DQ into integer kernels; ``ORT_ENABLE_ALL`` only adds layout changes on top)."""
    import onnx
    import onnxruntime as ort

    from .sessions import ort_session_options

    with tempfile.TemporaryDirectory(prefix="modelpress-emulate-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        opts = ort_session_options(threads=1, optimization="extended")
        opts.optimized_model_filepath = str(path)
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"onnxruntime cannot load the model to emulate: {str(exc).splitlines()[0][:200]}") \
                from None
        return onnx.load(str(path), load_external_data=False)


def ort_integer_outputs(model: Any, optimized: Any | None = None) -> set[str]:
    """Output tensors of the integer GEMM kernels in the graph onnxruntime really runs."""
    optimized = optimized if optimized is not None else ort_optimized_graph(model)
    return {o for n in optimized.graph.node if n.op_type in INTEGER_KERNELS for o in n.output if o}


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Emulator:
    """Runs an INT8 ONNX model the way ``target``'s onnxruntime kernels would (see the module docstring).

    Args:
        model: an ``onnx.ModelProto`` (QDQ or QOperator), or a path to one.
        target: whose integer arithmetic to emulate.
        integer_outputs: the integer kernels' output tensors (:func:`ort_integer_outputs`; computed when omitted).

    ``clipped`` counts, per layer node, the pair sums that saturated and the pair sums computed, over every
    :meth:`run` so far: the layers where the target loses information.
    """

    def __init__(self, model: Any, target: Target, *, integer_outputs: set[str] | None = None) -> None:
        from onnx import numpy_helper

        if isinstance(model, (str, Path)):
            from ..onnx_utils import load_onnx

            model = load_onnx(Path(model))
        self.model = model
        self.target = target
        self.graph = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output if o}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        outs = integer_outputs if integer_outputs is not None else ort_integer_outputs(model)
        self.plans: dict[str, tuple[str, list[Any]]] = {}
        self.skip: set[str] = set()
        for node in self.graph.node:
            plan = self._plan(node, outs)
            if plan is not None:
                self.plans[node.name or node.output[0]] = plan
                self.skip.update(n.output[0] for n in plan[1][1:])
        self.clipped: dict[str, dict[str, int]] = {}
        self._fallback: dict[int, Any] = {}

    # which original nodes are integer kernels, and what they absorb
    def _dq(self, name: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def _plan(self, node: Any, outs: set[str]) -> tuple[str, list[Any]] | None:
        if node.op_type not in _LAYER_OPS or len(node.input) < 2:
            return None
        dq_x, dq_w = self._dq(node.input[0]), self._dq(node.input[1])
        if dq_x is None or dq_w is None or dq_w.input[0] not in self.inits:
            return None
        chain, tensor = [node], node.output[0]
        for _ in range(4):
            if tensor in outs:
                if chain[-1].op_type == "QuantizeLinear" and all(n.op_type in ("Relu", "QuantizeLinear")
                                                                 for n in chain[1:]) and self._int_bias(node):
                    return "requantize", chain
                return "float", [node]
            users = self.consumers.get(tensor, [])
            if len(users) != 1 or users[0].op_type not in _PASS_THROUGH:
                break
            chain.append(users[0])
            tensor = users[0].output[0]
        return None

    def _int_bias(self, node: Any) -> bool:
        bias_index = 2
        if len(node.input) <= bias_index or not node.input[bias_index]:
            return True
        dq = self._dq(node.input[bias_index])
        return dq is not None and dq.input[0] in self.inits and self.inits[dq.input[0]].dtype == np.int32

    # running
    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Graph outputs (and the tensors named in ``outputs``) for one batch of ``feeds``."""
        env: dict[str, Any] = dict(self.inits)
        env.update({k: np.asarray(v) for k, v in feeds.items()})
        for node in self.graph.node:
            if node.output[0] in self.skip:
                continue
            key = node.name or node.output[0]
            if key in self.plans:
                self._integer_layer(node, env, *self.plans[key])
            else:
                self._op(node, env)
        wanted = [o.name for o in self.graph.output] + [n for n in (outputs or []) if n not in
                                                         {o.name for o in self.graph.output}]
        missing = [n for n in wanted if n not in env]
        if missing:
            raise InputError(f"the emulation computed no tensor named {missing[0]!r}")
        return {n: env[n] for n in wanted}

    def _qparams(self, dq: Any, env: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return env[dq.input[0]], np.asarray(env[dq.input[1]], np.float32), \
            (env[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else None)

    def _integer_layer(self, node: Any, env: dict[str, Any], mode: str, chain: list[Any]) -> None:
        x_q, sx, zx = self._qparams(self._dq(node.input[0]), env)
        w_q, sw, zw = self._qparams(self._dq(node.input[1]), env)
        stats = self.clipped.setdefault(node.name or node.output[0], {"clipped": 0, "pairs": 0})
        attrs = _attrs(node)
        if node.op_type == "Conv":
            acc = integer_conv(x_q, zx, w_q, zw, target=self.target, group=int(attrs.get("group", 1)),
                               strides=tuple(attrs.get("strides", (1, 1))), pads=tuple(attrs.get("pads", (0,) * 4)),
                               dilations=tuple(attrs.get("dilations", (1, 1))), stats=stats)
            shape = (1, -1, 1, 1)
        else:
            if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0):
                raise InputError(f"emulation of Gemm {node.name!r} with transA or alpha ≠ 1 is not covered")
            w = w_q.T if attrs.get("transB", 0) else w_q
            acc = integer_matmul(x_q, zx, w, zw, target=self.target, stats=stats)
            shape = (-1,)
        if np.ndim(sw) == 0 or node.op_type != "Conv":
            sw_b = np.reshape(sw, (-1,)) if np.ndim(sw) else sw
        else:
            sw_b = sw.reshape(shape)
        if mode == "requantize":
            q = chain[-1]
            sy = np.asarray(env[q.input[1]], np.float32)
            zy = env[q.input[2]] if len(q.input) > 2 and q.input[2] else np.uint8(0)
            if len(node.input) > 2 and node.input[2]:
                b_q = env[self._dq(node.input[2]).input[0]].astype(np.int64)
                acc = acc + (b_q.reshape(shape) if node.op_type == "Conv" else b_q)
            scale = (np.float32(sx) * sw_b / sy).astype(np.float32)
            out = requantize(acc, scale, zy, np.asarray(zy).dtype)
            if any(n.op_type == "Relu" for n in chain):
                out = np.maximum(out, np.asarray(zy).astype(out.dtype))
            env[q.output[0]] = out
            return
        y = acc.astype(np.float32) * (np.float32(sx) * sw_b).astype(np.float32)
        if len(node.input) > 2 and node.input[2]:
            y = y + np.asarray(env[node.input[2]], np.float32).reshape(shape if node.op_type == "Conv" else (-1,))
        env[node.output[0]] = y.astype(np.float32)

    def _op(self, node: Any, env: dict[str, Any]) -> None:
        op, ins = node.op_type, [env[i] if i else None for i in node.input]
        attrs = _attrs(node)
        if op == "QuantizeLinear":
            zero = ins[2] if len(ins) > 2 and ins[2] is not None else np.uint8(0)
            scale = _per_axis(ins[1], ins[0].ndim, attrs.get("axis", 1))
            z = _per_axis(np.asarray(zero), ins[0].ndim, attrs.get("axis", 1))
            info = np.iinfo(np.asarray(zero).dtype)
            value = np.rint(ins[0].astype(np.float32) / scale.astype(np.float32)) + z.astype(np.float32)
            env[node.output[0]] = np.clip(value, info.min, info.max).astype(np.asarray(zero).dtype)
        elif op == "DequantizeLinear":
            scale = _per_axis(ins[1], np.ndim(ins[0]), attrs.get("axis", 1))
            zero = ins[2] if len(ins) > 2 and ins[2] is not None else 0
            z = _per_axis(np.asarray(zero), np.ndim(ins[0]), attrs.get("axis", 1))
            env[node.output[0]] = ((np.asarray(ins[0]).astype(np.int64) - z.astype(np.int64)).astype(np.float32)
                                   * scale.astype(np.float32))
        elif op in ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"):
            env[node.output[0]] = self._qoperator(node, ins, attrs)
        elif op == "Relu":
            env[node.output[0]] = np.maximum(ins[0], 0).astype(ins[0].dtype)
        elif op == "MaxPool" and _simple_pool(attrs, ins[0]):
            env[node.output[0]] = _max_pool(ins[0], attrs)
        elif op == "GlobalAveragePool":
            env[node.output[0]] = ins[0].mean(axis=tuple(range(2, ins[0].ndim)), keepdims=True, dtype=np.float32)
        else:
            self._reference(node, env, ins)

    def _qoperator(self, node: Any, ins: list[Any], attrs: dict[str, Any]) -> np.ndarray:
        stats = self.clipped.setdefault(node.name or node.output[0], {"clipped": 0, "pairs": 0})
        op = node.op_type
        if op in ("MatMulInteger", "ConvInteger"):
            x, w = ins[0], ins[1]
            zx = ins[2] if len(ins) > 2 else None
            zw = ins[3] if len(ins) > 3 else None
            if op == "MatMulInteger":
                return integer_matmul(x, zx, w, zw, target=self.target, stats=stats).astype(np.int32)
            # ConvInteger (dynamic quantization of Conv) measured exact under qemu AVX2: its outputs matched the
            # exact emulation (max |Δ| 0.013 on logits, float rounding) and not the saturating one (0.67)
            return integer_conv(x, zx, w, zw, target=_EXACT, group=int(attrs.get("group", 1)),
                                strides=tuple(attrs.get("strides", (1, 1))), pads=tuple(attrs.get("pads", (0,) * 4)),
                                dilations=tuple(attrs.get("dilations", (1, 1))), stats=stats).astype(np.int32)
        x, sx, zx, w, sw, zw, sy, zy = ins[:8]
        if op == "QLinearMatMul":
            acc = integer_matmul(x, zx, w, zw, target=self.target, stats=stats)
            scale = np.float32(sx) * np.asarray(sw, np.float32).reshape(-1) / np.float32(sy)
            return requantize(acc, scale.astype(np.float32), zy, np.asarray(zy).dtype)
        acc = integer_conv(x, zx, w, zw, target=self.target, group=int(attrs.get("group", 1)),
                           strides=tuple(attrs.get("strides", (1, 1))), pads=tuple(attrs.get("pads", (0,) * 4)),
                           dilations=tuple(attrs.get("dilations", (1, 1))), stats=stats)
        if len(ins) > 8 and ins[8] is not None:
            acc = acc + ins[8].astype(np.int64).reshape(1, -1, 1, 1)
        scale = (np.float32(sx) * np.asarray(sw, np.float32).reshape(1, -1, 1, 1) / np.float32(sy))
        return requantize(acc, scale.astype(np.float32), zy, np.asarray(zy).dtype)

    def _reference(self, node: Any, env: dict[str, Any], ins: list[Any]) -> None:
        from onnx.reference import ReferenceEvaluator

        if node.domain not in ("", "ai.onnx"):
            raise InputError(f"the emulation does not cover {node.domain} op {node.op_type} (node {node.name!r})",
                             hint="emulate a QDQ model (quantize --format qdq)")
        key = id(node)
        if key not in self._fallback:
            opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 17)
            from onnx import helper

            graph = helper.make_graph([node], "one", [helper.make_empty_tensor_value_info(i) for i in node.input if i],
                                      [helper.make_empty_tensor_value_info(o) for o in node.output if o])
            try:
                self._fallback[key] = ReferenceEvaluator(helper.make_model(graph, opset_imports=[
                    helper.make_opsetid("", opset)]))
            except Exception as exc:  # an op type onnx's reference implementation lacks
                raise InputError(f"the emulation does not cover {node.op_type} (node {node.name!r}): "
                                 f"{type(exc).__name__}") from None
        names = [i for i in node.input if i]
        try:
            results = self._fallback[key].run(None, {n: env[n] for n in names})
        except Exception as exc:  # onnx's reference ops raise plain errors on cases they lack
            raise InputError(f"the emulation cannot run {node.op_type} node {node.name!r}: {type(exc).__name__}: "
                             f"{str(exc)[:120]}") from None
        for name, value in zip([o for o in node.output if o], results):
            env[name] = value


def _per_axis(value: Any, ndim: int, axis: int) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1 or ndim == 0:
        return value.reshape(()) if value.size == 1 else value
    shape = [1] * ndim
    shape[axis % ndim] = value.size
    return value.reshape(shape)


def _simple_pool(attrs: dict[str, Any], x: np.ndarray) -> bool:
    kernel = attrs.get("kernel_shape", ())
    return (np.ndim(x) == 4 and len(kernel) == 2 and not attrs.get("ceil_mode", 0)
            and tuple(attrs.get("dilations", (1, 1))) == (1, 1) and not any(attrs.get("pads", ()))
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def _max_pool(x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", (1, 1))
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            win = x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            out = win.copy() if out is None else np.maximum(out, win)
    return out


def emulate_outputs(model: Any, target: Target, batches: Any, *, integer_outputs: set[str] | None = None
                    ) -> tuple[np.ndarray, Emulator]:
    """The first graph output over ``batches`` (an iterable of feed dicts), emulated for ``target``, concatenated."""
    emulator = Emulator(model, target, integer_outputs=integer_outputs)
    first = emulator.graph.output[0].name
    rows = [emulator.run(feed)[first] for feed in batches]
    return np.concatenate(rows), emulator


def host_mismatch_note(artifact: Any, data: Any, logits: np.ndarray, *, max_samples: int = 256) -> str | None:
    """One line when an INT8 model built for one target is evaluated on a host whose kernels differ, with how
    much the outputs change: the target's emulated outputs against the host's ``logits`` on the first
    ``max_samples`` samples of ``data``. ``None`` when the manifest names no target or the kernels match."""
    from .target import TARGETS, detect_host

    record = (getattr(artifact, "metadata", None) or {}).get("quantization") or {}
    name = (record.get("target") or {}).get("name") if isinstance(record.get("target"), dict) else None
    if artifact.format != "onnx" or name not in TARGETS:
        return None
    target, host = TARGETS[name], detect_host()
    if target.kernels_match(host):
        return None
    line = (f"built for {target.name} ({target.u8s8_accumulation}) but measured on {host.name} "
            f"({host.u8s8_accumulation}): the INT8 kernels differ")
    try:
        subset = data.subset(slice(0, min(len(data), max_samples)))
        model_inputs = [s.name for s in artifact.inputs]
        feeds = []
        for batch, _ in subset.batches(64):
            feeds.append({model_inputs[0]: next(iter(batch.values()))} if len(model_inputs) == 1 == len(batch)
                         else {n: batch[n] for n in model_inputs})
        predicted, _ = emulate_outputs(Path(artifact.path), target, feeds)
    except InputError as exc:
        return f"{line}; outputs on {target.name} not emulated ({exc.message})"
    except Exception as exc:  # onnx's reference ops raise plain errors on ops they lack; the note is advisory
        return f"{line}; outputs on {target.name} not emulated ({type(exc).__name__}: {str(exc)[:120]})"
    here = np.asarray(logits[: len(predicted)], np.float64).reshape(len(predicted), -1)
    there = np.asarray(predicted, np.float64).reshape(len(predicted), -1)
    agree = float(np.mean(here.argmax(1) == there.argmax(1)))
    return (f"{line}; on {target.name} (emulated, {len(predicted)} samples) top-1 agreement with these outputs "
            f"{agree:.3f}, max |Δ| {float(np.abs(here - there).max()):.3g}")
