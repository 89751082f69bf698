"""What the CPU's INT8 kernels do to a model: real-kernel errors beside the Q/DQ arithmetic, and other targets.

Why: a QDQ graph run unoptimised computes the *ideal* Q/DQ arithmetic; onnxruntime's fused integer kernels compute
something else on a CPU without VNNI (u8×s8 pairs saturate in int16, see :mod:`modelpress.runtime.target`). The
first ``explain`` measured only the ideal arithmetic and reported 98.4 % top-1 agreement on a model whose real
kernels gave 86.9 % on an AVX2 CPU. So this module measures, on the same samples:

1. the real session's end-to-end agreement with the reference (top-1, cosine, SQNR: the evaluator's kernels);
2. each layer's error with the real kernels (:func:`~.layer_error.onnx_layer_errors` with ``kernels="real"``),
   beside the exact Q/DQ arithmetic's;
3. with the host's arithmetic emulated (:mod:`modelpress.runtime.emulate`, bit-exact against the real kernels on
   the CPUs it was validated on), the share of u8×s8 pair sums that saturate in each layer.

A gap between 1–2 and the Q/DQ arithmetic is a hardware effect; the layers where pairs saturate are named, with the
fix (build for this target: 7-bit weights, ``--reduce-range``). ``target`` asks for a prediction on another CPU:
the emulated outputs of that target against the reference, labelled as predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError
from ..runtime.target import Target, detect_host

#: A hardware effect: the real kernels' top-1 agreement is this much below the Q/DQ arithmetic's …
AGREEMENT_GAP = 0.005
#: … or their output SQNR this many dB below it (float rounding differences stay under 0.1 dB).
SQNR_GAP_DB = 3.0


def _output_stats(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    cand = np.asarray(cand, np.float64).reshape(len(cand), -1)
    noise = float(np.sum((cand - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = float(np.mean(np.where(norms > 0, np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-300), 1.0)))
    agreement = float(np.mean(ref.argmax(1) == cand.argmax(1))) if ref.shape[1] > 1 else \
        float(np.mean((ref[:, 0] > 0) == (cand[:, 0] > 0)))
    sqnr = 150.0 if noise == 0 else min(150.0, 10 * np.log10(signal / noise)) if signal > 0 else -150.0
    return {"top1_agreement": agreement, "cosine": cosine, "sqnr_db": float(sqnr)}


def _feeds(model: Any, data: Dataset, batch_size: int) -> list[dict[str, np.ndarray]]:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    feeds = []
    for batch, _ in data.batches(batch_size):
        if len(names) == 1 and len(batch) == 1:
            feeds.append({names[0]: np.ascontiguousarray(next(iter(batch.values())))})
        else:
            feeds.append({n: np.ascontiguousarray(batch[n]) for n in names})
    return feeds


def _reference_logits(path: Path, feeds: list[dict[str, np.ndarray]], threads: int) -> np.ndarray:
    from ..runtime.sessions import ort_session

    session = ort_session(str(path), threads=threads)
    out = session.get_outputs()[0].name
    return np.concatenate([session.run([out], feed)[0] for feed in feeds])


def _emulate(model: Any, target: Target, feeds: list[dict[str, np.ndarray]], integer_outputs: set[str]
             ) -> tuple[np.ndarray, dict[str, float]]:
    from ..runtime.emulate import emulate_outputs

    logits, emulator = emulate_outputs(model, target, feeds, integer_outputs=integer_outputs)
    clipped = {node: (v["clipped"] / v["pairs"] if v["pairs"] else 0.0) for node, v in emulator.clipped.items()}
    return logits, clipped


def kernel_effects(candidate_path: str | Path, reference_path: str | Path, data: Dataset, qdq: dict[str, Any], *,
                   batch_size: int = 32, threads: int = 1, target: Target | None = None) -> dict[str, Any]:
    """Real-kernel errors of an INT8 ONNX candidate next to its Q/DQ arithmetic ``qdq`` (a
    :func:`~.layer_error.onnx_layer_errors` result on the same ``data``), and an optional prediction for ``target``.

    Returns a JSON-ready dict: ``host`` (the target kind of this CPU), ``real`` (end-to-end, real kernels),
    ``qdq`` (end-to-end, Q/DQ arithmetic), ``hardware_effect`` (bool), ``saturated_layers`` (node names, worst
    first), ``layers`` ({node: real_sqnr_db, real_noise_added, saturated_pairs}), ``predicted`` (or None).
    """
    from ..onnx_utils import load_onnx
    from ..runtime.emulate import ort_integer_outputs, ort_optimized_graph
    from .layer_error import onnx_layer_errors

    host = detect_host()
    real = onnx_layer_errors(reference_path, candidate_path, data, batch_size=batch_size, threads=threads,
                             kernels="real")
    model = load_onnx(Path(candidate_path))
    integer_outputs = ort_integer_outputs(model, ort_optimized_graph(model))
    feeds = _feeds(model, data, batch_size)
    host_clipped: dict[str, float] = {}
    skipped = None
    if host.saturates and integer_outputs:
        try:
            _, host_clipped = _emulate(model, host, feeds, integer_outputs)
        except InputError as exc:  # an op the emulation does not cover: the real-kernel numbers still stand
            skipped = exc.message
    qdq_out, real_out = qdq.get("output") or {}, real["output"]
    effect = bool(qdq_out) and (
        (qdq_out.get("top1_agreement", 0) - real_out["top1_agreement"] >= AGREEMENT_GAP)
        or (qdq_out.get("sqnr_db", 0) - real_out["sqnr_db"] >= SQNR_GAP_DB))
    qdq_layers = {lay["node"]: lay for lay in qdq.get("layers") or []}
    layers: dict[str, dict[str, Any]] = {}
    for lay in real["layers"]:
        ideal = qdq_layers.get(lay["node"]) or {}
        layers[lay["node"]] = {"real_sqnr_db": lay["sqnr_db"], "real_noise_added": lay["noise_added"],
                               "qdq_noise_added": ideal.get("noise_added"),
                               "saturated_pairs": host_clipped.get(lay["node"])}
    for node, share in host_clipped.items():
        layers.setdefault(node, {"real_sqnr_db": None, "real_noise_added": None, "qdq_noise_added": None,
                                 "saturated_pairs": share})

    def excess(node: str) -> float:
        row = layers[node]
        if row["real_noise_added"] is None or row["qdq_noise_added"] is None:
            return 0.0
        return row["real_noise_added"] - row["qdq_noise_added"]

    if host_clipped:  # counted: the layers whose own pair sums saturate (not those that inherit the noise)
        saturated = sorted((n for n, share in host_clipped.items() if share > 0), key=lambda n: (-host_clipped[n], n))
    else:  # no count (the host is not a saturating kind): the layers adding more noise with the real kernels
        saturated = sorted((n for n in layers if effect and excess(n) > 1e-4), key=lambda n: (-excess(n), n))
    predicted = None
    if target is not None:
        if not integer_outputs or skipped:
            predicted = {"target": target.name,
                         "skipped": skipped or "the model has no integer kernels to emulate"}
        else:
            try:
                logits, clipped = _emulate(model, target, feeds, integer_outputs)
            except InputError as exc:
                logits, clipped, skipped = None, {}, exc.message
        if predicted is None and skipped:
            predicted = {"target": target.name, "skipped": skipped}
        elif predicted is None:
            ref_logits = _reference_logits(Path(reference_path), feeds, threads)
            predicted = {"target": target.name, "saturates": target.saturates, "n_samples": len(logits),
                         **_output_stats(ref_logits, logits),
                         "saturated_layers": sorted((n for n, v in clipped.items() if v > 0),
                                                    key=lambda n: (-clipped[n], n)),
                         "saturated_pairs": clipped}
    return {"host": host.name, "host_saturates": host.saturates, "n_samples": real["n_samples"],
            "real": {k: real_out[k] for k in ("top1_agreement", "cosine", "sqnr_db")},
            "qdq": {k: qdq_out.get(k) for k in ("top1_agreement", "cosine", "sqnr_db")},
            "hardware_effect": effect, "saturated_layers": saturated if (effect or host.saturates) else [],
            "layers": layers, "predicted": predicted, "emulation_skipped": skipped}


def saturation_recommendation(effects: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """One recommendation when integer arithmetic loses what the Q/DQ arithmetic keeps — measured on this host's
    real kernels, or predicted for ``--target``: build the model for that target (7-bit weights on a saturating
    one, ``--reduce-range``)."""
    from .recommend import _option_rec

    qdq = effects.get("qdq") or {}
    if effects.get("hardware_effect"):
        where, now, target = "", effects["real"], effects["host"]
        names = effects.get("saturated_layers") or []
        measured = "with the real kernels"
    else:
        predicted = effects.get("predicted") or {}
        if not predicted.get("saturates") or predicted.get("top1_agreement") is None or not qdq or not (
                qdq.get("top1_agreement", 0) - predicted["top1_agreement"] >= AGREEMENT_GAP
                or qdq.get("sqnr_db", 0) - predicted["sqnr_db"] >= SQNR_GAP_DB):
            return None
        where, now, target = " (predicted by emulation)", predicted, predicted["target"]
        names = predicted.get("saturated_layers") or []
        measured = f"predicted on {target}"
    summary = (f"the {target} kernels saturate u8×s8 pairs in int16{where} ({', '.join(names[:5]) or 'int8 layers'})"
               f": top-1 agreement {now['top1_agreement']:.3f} {measured} vs {qdq.get('top1_agreement', 0):.3f} in "
               f"the Q/DQ arithmetic; re-quantize for that target (7-bit weights, --reduce-range)")
    return _option_rec("saturation", "--target", {"target": target, "reduce_range": True}, context, summary,
                       {"top1_agreement_qdq": qdq.get("top1_agreement")})
