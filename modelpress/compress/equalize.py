"""Cross-layer equalization and bias correction on an FP32 ONNX graph, before INT8 quantization.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction" (ICCV). Two
depthwise-separable CNN problems that per-tensor (and 7-bit) INT8 weights make worse:

* **Cross-layer equalization (CLE).** In a pair ``Conv1 → ReLU → Conv2`` output channel ``c`` of Conv1 feeds input
  channel ``c`` of Conv2. Since ``relu(x / s) = relu(x) / s`` for ``s > 0``, dividing Conv1's channel ``c`` (weights
  and bias) by ``s_c`` and multiplying Conv2's input channel ``c`` by ``s_c`` computes the same function. With
  ``s_c = sqrt(r1_c / r2_c)`` (``r1_c``: the largest ``|w|`` of Conv1's output channel ``c``, ``r2_c``: of Conv2's
  input channel ``c``) both become ``sqrt(r1_c r2_c)``: the channels' ranges are equal, so one weight scale per
  tensor wastes fewer levels on the widest channel. Pairs are equalized in turn until the scales stop moving
  (the paper's iteration). In MobileNet/EfficientNet blocks the depthwise layer's channels span orders of magnitude
  (folded BatchNorm), which is what makes them collapse per-tensor.
* **ReLU6.** CLE needs positive homogeneity, which ``clip(x, 0, 6)`` lacks. ``clip="channel"`` (default) keeps the
  function exact: the Clip becomes ReLU followed by ``Min`` with a per-channel bound ``6 / s_c``. ``clip="relu"`` is
  the paper's choice (ReLU6 → ReLU; the model changes wherever an activation exceeded 6) and ``clip="skip"`` leaves
  Clip pairs alone (which equalizes nothing in an EfficientNet-Lite).
* **Bias correction.** Rounding weights to ``W_q = W + ε`` shifts each output channel's mean by ``E[ε x]``; the
  paper subtracts that expected shift from the bias. Here ``E[x]`` is measured on calibration data (the paper's
  "empirical" variant) and ``ε`` is the error of the exact rounding onnxruntime will apply (symmetric int8 weights,
  per-channel or per-tensor, 8-bit ``[-127, 127]`` or 7-bit ``[-64, 64]``). The shift is computed by running the
  convolution of ``ε`` over the batch-mean input map, so zero padding at the borders is counted exactly.

Why on the ONNX graph and not on the torch module: the quantize stage works on ONNX (a torch model is exported
first), the exporter has already folded BatchNorm into the convolutions, and one implementation then serves every
model source (zoo, ``pkg.module:fn``, an ``.onnx`` file). The pattern search is deliberately narrow: a Conv whose
output has exactly one consumer, optionally a Relu/Clip(0, ·) with one consumer, then a Conv with constant weights
(group 1, or depthwise). Anything else is left as it is and counted in :class:`EqualizeResult`.

Measured (``benchmarks/quantize.py --workload imagenet-cnn``; pretrained EfficientNet-Lite1 at 224×224, 64 crops of
sklearn's sample photos to calibrate and 64 others to judge; Intel Xeon, Sapphire Rapids: AVX-512 VNNI + AMX), mean
logit cosine to FP32 of static U8S8 INT8: per-channel 8-bit 0.993 → 0.997 with bias correction, per-channel 7-bit
(the AVX2 default; its outputs are the AVX2 kernels' too) 0.980 → 0.995; per-tensor 8-bit 0.875 → 0.962 with CLE.
ReLU6 → ReLU took the FP32 model itself to cosine 0.745 (Lite relies on the clip), and CLE with per-channel bounds
costs speed (the ``Min`` runs in float between quantized convolutions: 0.5× ORT FP32) and precision once weights
are per-channel (0.970): bias correction alone is the setting that pays on this model.

:func:`smooth_activations` is the transformer counterpart (SmoothQuant): on all-MiniLM-L6-v2 (dynamic INT8, same
Xeon) the six FFN down-projections' inputs hold the outlier channels; smoothing them with ``alpha = 0.8`` raised the
pooled-embedding min cosine from 0.9856 to 0.9924 (8-bit) and 0.9826 to 0.9891 (7-bit), at INT8 speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

CLIP_MODES = ("skip", "channel", "relu")


@dataclass(frozen=True)
class EqualizeResult:
    """What :func:`equalize` changed: pairs equalized, iterations, Clips rewritten, biases corrected."""

    pairs: int = 0
    iterations: int = 0
    clips_rewritten: int = 0
    max_scale_change: float = 0.0
    biases_corrected: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "iterations": self.iterations, "clips_rewritten": self.clips_rewritten,
                "max_scale_change": self.max_scale_change, "biases_corrected": self.biases_corrected}


# ---- graph helpers -----------------------------------------------------------------------------------------------
def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """Initializers as numpy arrays (written back by :meth:`commit`), producers and consumers by tensor name."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.inits = {i.name: i for i in model.graph.initializer}
        self.arrays: dict[str, np.ndarray] = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self._np = numpy_helper

    def const(self, name: str) -> np.ndarray | None:
        if name not in self.inits:
            return None
        if name not in self.arrays:
            self.arrays[name] = self._np.to_array(self.inits[name]).astype(np.float64)
        return self.arrays[name]

    def only_consumer(self, tensor: str) -> Any | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def set_bias(self, conv: Any, bias: np.ndarray) -> None:
        """Give ``conv`` a bias initializer (a new one named after the node when it had none or shared one)."""
        name = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        if not name or len(self.consumers.get(name, [])) != 1:
            name = f"{conv.name or conv.output[0]}_equalized_bias"
            while name in self.inits:
                name += "_"
            proto = self._np.from_array(bias.astype(np.float32), name)
            self.model.graph.initializer.append(proto)
            self.inits[name] = proto
            if len(conv.input) > 2:
                conv.input[2] = name
            else:
                conv.input.append(name)
            self.consumers[name] = [conv]
        self.arrays[name] = bias

    def commit(self) -> None:
        for name, array in self.arrays.items():
            proto = self.inits[name]
            proto.CopyFrom(self._np.from_array(array.astype(np.float32), name))


def _conv_weight(g: _Graph, node: Any) -> np.ndarray | None:
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    w = g.const(node.input[1])
    if w is None or w.ndim < 3 or (len(node.input) > 2 and node.input[2] and g.const(node.input[2]) is None):
        return None
    if len(g.consumers.get(node.input[1], [])) != 1:
        return None  # a shared weight cannot be rescaled for one of its users
    return w


def _bias(g: _Graph, node: Any, channels: int) -> np.ndarray:
    b = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return b if b is not None else np.zeros(channels)


def _clip_bounds(g: _Graph, node: Any) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return 0.0, float("inf")
    if node.op_type != "Clip":
        return None
    lo = _attr(node, "min", None)
    hi = _attr(node, "max", None)
    if len(node.input) > 1 and node.input[1]:
        v = g.const(node.input[1])
        lo = None if v is None else float(v)
    if len(node.input) > 2 and node.input[2]:
        v = g.const(node.input[2])
        hi = None if v is None else float(v)
    return (float(lo), float(hi) if hi is not None else float("inf")) if lo is not None else None


def find_pairs(model: Any, *, clip: str = "channel") -> list[tuple[Any, Any | None, Any]]:
    """``(conv1, activation or None, conv2)`` chains that :func:`equalize` may rescale (see the module docstring)."""
    if clip not in CLIP_MODES:
        raise InputError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}")
    g = _Graph(model)
    pairs = []
    for conv1 in model.graph.node:
        w1 = _conv_weight(g, conv1)
        if w1 is None or _attr(conv1, "group", 1) != 1 and _attr(conv1, "group", 1) != w1.shape[0]:
            continue
        act = g.only_consumer(conv1.output[0])
        if act is None:
            continue
        nxt = act
        if act.op_type in ("Relu", "Clip"):
            bounds = _clip_bounds(g, act)
            if bounds is None or bounds[0] != 0.0 or (bounds[1] != float("inf") and clip == "skip"):
                continue
            nxt = g.only_consumer(act.output[0])
            if nxt is None:
                continue
        else:
            act = None
        w2 = _conv_weight(g, nxt)
        if w2 is None:
            continue
        group = _attr(nxt, "group", 1)
        if not (group == 1 and w2.shape[1] == w1.shape[0] or group == w1.shape[0] == w2.shape[0] and w2.shape[1] == 1):
            continue
        pairs.append((conv1, act, nxt))
    return pairs


def _in_ranges(w2: np.ndarray, depthwise: bool) -> np.ndarray:
    axes = tuple(i for i in range(w2.ndim) if i != (0 if depthwise else 1))
    return np.abs(w2).max(axis=axes)


def _out_ranges(w1: np.ndarray) -> np.ndarray:
    return np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)


def cross_layer_equalize(model: Any, *, clip: str = "channel", max_iterations: int = 20, tol: float = 1e-4
                         ) -> EqualizeResult:
    """Equalize every chain :func:`find_pairs` finds, in place, iterating until no scale moves by more than ``tol``.

    Returns what changed. ``clip="channel"`` rewrites each Clip between equalized pairs as ReLU + ``Min`` with
    per-channel bounds (exact); ``clip="relu"`` as ReLU (the function changes where an activation exceeded the
    clip's maximum); ``clip="skip"`` only equalizes through ReLU or nothing.
    """
    from onnx import helper

    pairs = find_pairs(model, clip=clip)
    g = _Graph(model)
    iterations, change = 0, 0.0
    total = [np.ones(g.const(c1.input[1]).shape[0]) for c1, _, _ in pairs]  # type: ignore[union-attr]
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        change = 0.0
        for k, (conv1, _, conv2) in enumerate(pairs):
            w1, w2 = g.const(conv1.input[1]), g.const(conv2.input[1])
            assert w1 is not None and w2 is not None  # find_pairs checked both
            depthwise = _attr(conv2, "group", 1) != 1
            r1, r2 = _out_ranges(w1), _in_ranges(w2, depthwise)
            live = (r1 > 0) & (r2 > 0)  # a dead channel keeps scale 1
            s = np.ones_like(r1)
            s[live] = np.sqrt(r1[live] / r2[live])
            b1 = _bias(g, conv1, w1.shape[0])
            shape2 = (-1,) + (1,) * (w2.ndim - 1) if depthwise else (1, -1) + (1,) * (w2.ndim - 2)
            g.arrays[conv1.input[1]] = w1 / s.reshape((-1,) + (1,) * (w1.ndim - 1))
            g.set_bias(conv1, b1 / s)
            g.arrays[conv2.input[1]] = w2 * s.reshape(shape2)
            total[k] = total[k] * s
            change = max(change, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if change < tol:
            break
    clips = 0
    new_nodes = []
    for k, (_, act, _) in enumerate(pairs):
        if act is None or act.op_type != "Clip":
            continue
        clips += 1
        if clip == "relu":
            act.CopyFrom(helper.make_node("Relu", [act.input[0]], list(act.output), name=act.name))
            continue
        # clip == "channel": clip(y / s_c, 0, hi) == min(relu(y / s_c), hi / s_c) per channel c
        hi = _clip_bounds(g, act)[1]  # type: ignore[index]
        bound_name = f"{act.name or act.output[0]}_equalized_max"
        bound = (hi / total[k]).reshape((-1,) + (1,) * (g.const(pairs[k][0].input[1]).ndim - 2))  # type: ignore
        proto = g._np.from_array(bound.astype(np.float32), bound_name)
        model.graph.initializer.append(proto)
        g.inits[bound_name] = proto
        relu_out = f"{act.output[0]}_relu"
        out = act.output[0]
        act.CopyFrom(helper.make_node("Relu", [act.input[0]], [relu_out], name=act.name))
        new_nodes.append((act, helper.make_node("Min", [relu_out, bound_name], [out], name=f"{act.name}_max")))
    if new_nodes:
        order = list(model.graph.node)
        for act, node in new_nodes:
            order.insert(next(i for i, n in enumerate(order) if n is act) + 1, node)
        del model.graph.node[:]
        model.graph.node.extend(order)
    g.commit()
    return EqualizeResult(pairs=len(pairs), iterations=iterations if pairs else 0, clips_rewritten=clips,
                          max_scale_change=change)


# ---- bias correction ---------------------------------------------------------------------------------------------
def weight_rounding_error(w: np.ndarray, *, per_channel: bool, reduce_range: bool) -> np.ndarray:
    """``W_q - W`` for onnxruntime's symmetric int8 weights: scale = max|w| / 127 (7-bit: / 64), round half to even.

    ``reduce_range`` writes weights in [-64, 64] (onnxruntime's ``get_qmin_qmax_for_qType`` with symmetric int8),
    so the scale is ``2 max|w| / 128``.
    """
    half = 64.0 if reduce_range else 127.0
    absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if per_channel else np.array([np.abs(w).max()])
    scale = np.where(absmax > 0, absmax / half, 1.0).astype(np.float32).astype(np.float64)
    scale = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if per_channel else scale.reshape((1,) * w.ndim)
    wq = np.clip(np.round(w.astype(np.float32) / scale), -half, half) * scale
    return wq - w


def _conv_shift(x_mean: np.ndarray, eps: np.ndarray, node: Any) -> np.ndarray:
    """Mean over positions of ``conv(x_mean, eps)`` per output channel (``x_mean``: (C, H, W), batch mean)."""
    import torch
    import torch.nn.functional as F

    nd = eps.ndim - 2
    pads = list(_attr(node, "pads", [0] * 2 * nd))
    x = torch.from_numpy(np.ascontiguousarray(x_mean, dtype=np.float64))[None]
    if any(pads):  # ONNX pads: begin…, end…; F.pad wants last axis first: (w_begin, w_end, h_begin, h_end)
        flat = []
        for i in reversed(range(nd)):
            flat += [pads[i], pads[i + nd]]
        x = F.pad(x, flat)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(nd)
    if conv is None:
        raise InputError(f"bias correction supports 1-3-D convolutions, got {nd}-D at {node.name!r}")
    out = conv(x, torch.from_numpy(np.ascontiguousarray(eps)), stride=list(_attr(node, "strides", [1] * nd)),
               dilation=list(_attr(node, "dilations", [1] * nd)), groups=int(_attr(node, "group", 1)))
    return out[0].reshape(out.shape[1], -1).mean(dim=1).numpy()


def correct_biases(model: Any, batches: Any, *, per_channel: bool, reduce_range: bool,
                   ops: tuple[str, ...] = ("Conv",), exclude: tuple[str, ...] = ()) -> int:
    """Subtract each Conv's expected output shift from rounding its weights, in place; returns how many changed.

    ``batches``: an iterable of input feeds (dict name → array) of calibration data; the mean input map of every
    Conv with constant weights is measured on the FP32 graph with onnxruntime, then ``bias -= E[conv(x, ε)]``.
    Nodes named in ``exclude`` (kept in float by the quantizer) are left alone: their weights are not rounded.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    g = _Graph(model)
    convs = [n for n in model.graph.node
             if n.op_type in ops and n.name not in exclude and _conv_weight(g, n) is not None]
    if not convs:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    names = [n.input[0] for n in convs]
    for name in dict.fromkeys(names):
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    wanted = list(dict.fromkeys(names))
    sums: dict[str, np.ndarray] = {}
    count = 0
    for feed in batches:
        outs = sess.run(wanted, feed)
        for name, value in zip(wanted, outs, strict=True):
            v = np.asarray(value, dtype=np.float64)
            sums[name] = sums.get(name, 0) + v.sum(axis=0)
        count += next(iter(feed.values())).shape[0]
    if count == 0:
        raise InputError("bias correction needs calibration data: got 0 samples")
    changed = 0
    for node in convs:
        w = g.const(node.input[1])
        assert w is not None
        eps = weight_rounding_error(w, per_channel=per_channel, reduce_range=reduce_range)
        shift = _conv_shift(sums[node.input[0]] / count, eps, node)
        if np.any(shift):
            g.set_bias(node, _bias(g, node, w.shape[0]) - shift)
            changed += 1
    g.commit()
    return changed


def equalize(model: Any, *, clip: str = "channel", bias_correction: bool = True, batches: Any = None,
             per_channel: bool = True, reduce_range: bool = False) -> EqualizeResult:
    """CLE, then (with ``batches``) bias correction for the weight rounding that quantization will apply.

    ``per_channel`` / ``reduce_range`` must be the settings the model will be quantized with: the bias correction
    cancels the error of exactly that rounding.
    """
    result = cross_layer_equalize(model, clip=clip)
    corrected = 0
    if bias_correction:
        if batches is None:
            raise InputError("bias correction needs calibration batches (or bias_correction=False)")
        corrected = correct_biases(model, batches, per_channel=per_channel, reduce_range=reduce_range)
    return EqualizeResult(pairs=result.pairs, iterations=result.iterations, clips_rewritten=result.clips_rewritten,
                          max_scale_change=result.max_scale_change, biases_corrected=corrected)


# ---- activation smoothing (SmoothQuant) --------------------------------------------------------------------------
def smooth_activations(model: Any, batches: Any, *, nodes: tuple[str, ...] | None = None, alpha: float = 0.5
                       ) -> int:
    """Move activation outliers into the weights of MatMuls with a constant weight, in place (Xiao et al. 2023,
    "SmoothQuant"); returns how many MatMuls were smoothed.

    For ``Y = X W`` (``W``: K × N) with per-input-channel ranges ``a_k = max|X[..., k]|`` (measured on ``batches``)
    and ``w_k = max|W[k, :]|``: ``s_k = a_k^alpha / w_k^(1 - alpha)``, ``X' = X / s`` (a ``Mul`` inserted before the
    MatMul) and ``W' = diag(s) W``: the same product, with the few activation channels that dominate a per-tensor
    activation scale shrunk and their weight rows grown. Dynamic INT8 quantizes each activation tensor with one
    scale per batch, so a channel 30× wider than the rest leaves the others a handful of levels.

    MatMuls that read the same tensor (a transformer's Q, K and V projections) share one ``s`` (``w_k`` = the
    largest ``|W[k, :]|`` over all of them, as the paper does for QKV) and one ``Mul``: their input is then still
    one tensor, which onnxruntime quantizes once per batch instead of once per MatMul.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    if not 0 <= alpha <= 1:
        raise InputError(f"smoothing alpha must be in [0, 1], got {alpha}")
    g = _Graph(model)
    chosen = [n for n in model.graph.node if n.op_type == "MatMul" and (nodes is None or n.name in nodes)
              and g.const(n.input[1]) is not None and g.const(n.input[1]).ndim == 2  # type: ignore[union-attr]
              and len(g.consumers.get(n.input[1], [])) == 1 and n.input[0] not in g.inits]
    if not chosen:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    wanted = list(dict.fromkeys(n.input[0] for n in chosen))
    for name in wanted:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ranges: dict[str, np.ndarray] = {}
    for feed in batches:
        for name, value in zip(wanted, sess.run(wanted, feed), strict=True):
            v = np.abs(np.asarray(value, dtype=np.float64)).reshape(-1, np.shape(value)[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges.get(name, 0), v)
    if not ranges:
        raise InputError("activation smoothing needs calibration data: got 0 batches")
    groups: dict[str, list[Any]] = {}
    for node in chosen:
        groups.setdefault(node.input[0], []).append(node)
    inserted = []
    for source, group in groups.items():
        weights = [g.const(node.input[1]) for node in group]
        a = ranges[source]
        wr = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)  # type: ignore[union-attr]
        live = (a > 0) & (wr > 0)
        s = np.ones_like(a)
        s[live] = a[live] ** alpha / wr[live] ** (1 - alpha)
        for node, w in zip(group, weights, strict=True):
            g.arrays[node.input[1]] = w * s[:, None]
        first = group[0]
        inv = f"{first.name or first.output[0]}_smooth_inv"
        proto = g._np.from_array((1.0 / s).astype(np.float32), inv)
        model.graph.initializer.append(proto)
        g.inits[inv] = proto
        smoothed = f"{source}_smoothed_{first.name}"
        inserted.append((first, helper.make_node("Mul", [source, inv], [smoothed], name=f"{first.name}_smooth")))
        for node in group:
            node.input[0] = smoothed
    order = list(model.graph.node)
    for node, mul in inserted:  # before the first MatMul of its group (the graph is in topological order)
        order.insert(next(i for i, n in enumerate(order) if n is node), mul)
    del model.graph.node[:]
    model.graph.node.extend(order)
    g.commit()
    return len(chosen)
