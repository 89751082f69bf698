"""Turn profiles and layer errors into one sentence about speed and a few concrete changes with their effect.

Slowdown: the candidate is *slower* when the 95 % bootstrap CI of (baseline median / candidate median) lies below 1
and the ratio is below 0.95, against the FP32 reference or the FP16 copy. The main reason is the largest of these
per-call costs, read from the profiles: Q/DQ kernels that ran on their own (unfused pairs, or dynamic activation
quantization), int8 kernels slower than the FP32 kernels of the same layers, and Cast kernels (FP16 on a CPU
without FP16 kernels).

Recommendations, each with the predicted effect, the command and the YAML that apply it:

* keep the layers that add most of the output noise in FP32 (and, in QDQ models, the quantized consumers sharing
  their quantized output). Predicted fidelity: the output's channel SQNR once their added noise is gone (noise adds
  up roughly layer by layer, :func:`predicted_noise`); predicted cost: their FP32 time minus their int8 time, from
  the two profiles;
* per-channel weights when the model was quantized per tensor; a percentile calibrator when minmax ranges meet an
  activation outlier; embeddings (Gather) kept FP32;
* for speed: keep in FP32 the layers whose int8 kernels were slower than FP32, and quantize only op types that have
  int8 kernels when Q/DQ pairs stayed unfused.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

#: Output agreement / channel SQNR below which a candidate counts as inaccurate (recommendations target accuracy).
MIN_AGREEMENT = 0.99
MIN_OUTPUT_SQNR_DB = 20.0
#: Layers kept FP32 by one recommendation: the worst few that carry most of the added noise.
MAX_LAYERS = 3
NOISE_SHARE = 0.8
#: A slowdown is reported when the candidate's speed-up is significantly below 1 (CI) AND below this ratio:
#: a 1 % difference can be significant with thousands of samples, yet nobody should act on it.
SLOWER_RATIO = 0.95
#: An int8 layer counts as slower than FP32 when its kernel time exceeds the FP32 time by this factor plus the
#: profiler's resolution (onnxruntime records whole microseconds).
SLOW_LAYER_RATIO = 1.2
PROFILE_RESOLUTION_MS = 0.002
#: Input channel SQNR above which a layer's own added noise is measured reliably (see :func:`predicted_noise`).
CLEAN_INPUT_DB = 10.0


def _db(ratio: float) -> float:
    return 150.0 if ratio <= 0 else min(150.0, -10 * math.log10(ratio))


def slowdown(latency: list[dict[str, Any]], candidate: dict[str, Any], reference: dict[str, Any] | None,
             graph: dict[str, Any] | None, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the candidate is significantly slower than a baseline, and the main reason in one sentence."""
    slower = [row for row in latency if row["name"] != "candidate" and row.get("speedup") is not None
              and row["speedup"]["ci_high"] < 1.0 and row["speedup"]["ratio"] < SLOWER_RATIO]
    causes = _causes(candidate, reference, graph, layers)
    result: dict[str, Any] = {"slower": bool(slower), "slower_than": [r["name"] for r in slower],
                              "causes": causes, "reason": None}
    if not slower:
        return result
    worst = min(slower, key=lambda r: r["speedup"]["ratio"])
    lead = (f"The candidate is {1 / worst['speedup']['ratio']:.2f}× slower than {worst['label']} "
            f"({worst['candidate_median_ms']:.3g} ms vs {worst['median_ms']:.3g} ms per batch of "
            f"{worst['batch_size']}, {worst['threads']} thread(s))")
    top = causes[0] if causes and causes[0]["ms"] > 0 else None
    result["reason"] = f"{lead}: {top['sentence']}." if top else (
        f"{lead}; no single kind of kernel explains it — see the per-operator table.")
    return result


def _causes(candidate: dict[str, Any], reference: dict[str, Any] | None, graph: dict[str, Any] | None,
            layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    classes = candidate.get("by_class_ms") or {}
    ref_classes = (reference or {}).get("by_class_ms") or {}
    total = candidate.get("kernel_ms") or sum(classes.values()) or 1.0
    causes = []
    qdq = float(classes.get("qdq", 0.0)) - float(ref_classes.get("qdq", 0.0))
    if qdq > 0:
        executed = len(candidate.get("qdq_kernels_executed") or [])
        unfused = (graph or {}).get("unfused_pairs", 0)
        if unfused:
            sentence = (f"{unfused} Q/DQ pair(s) were not fused into int8 kernels, so QuantizeLinear/DequantizeLinear "
                        f"ran as {executed} separate kernels taking {qdq:.3g} ms of {total:.3g} ms per call "
                        f"({qdq / total:.0%})")
        elif (graph or {}).get("dynamic_quantize_nodes"):
            sentence = (f"dynamic quantization converts activations to int8 on every call: the conversion kernels "
                        f"took {qdq:.3g} ms of {total:.3g} ms per call ({qdq / total:.0%})")
        else:
            sentence = (f"{executed} quantize/dequantize kernel(s) took {qdq:.3g} ms of {total:.3g} ms per call "
                        f"({qdq / total:.0%})")
        causes.append({"cause": "qdq", "ms": qdq, "sentence": sentence})
    slow = [lay for lay in layers if lay.get("precision") == "int8" and lay.get("candidate_ms") is not None
            and lay.get("reference_ms") is not None
            and lay["candidate_ms"] > SLOW_LAYER_RATIO * lay["reference_ms"] + PROFILE_RESOLUTION_MS]
    if slow:
        extra = sum(lay["candidate_ms"] - lay["reference_ms"] for lay in slow)
        ops = sorted({lay["op_type"] for lay in slow})
        names = ", ".join(lay["exclude_name"] for lay in slow[:3]) + (" …" if len(slow) > 3 else "")
        c_ms = sum(lay["candidate_ms"] for lay in slow)
        r_ms = sum(lay["reference_ms"] for lay in slow)
        causes.append({"cause": "slow_int8_kernels", "ms": extra, "layers": [lay["exclude_name"] for lay in slow],
                       "sentence": f"the int8 kernels of {len(slow)} layer(s) ({names}; {', '.join(ops)}) took "
                                   f"{c_ms:.3g} ms vs {r_ms:.3g} ms for the same layers in FP32 — this CPU has no "
                                   f"faster int8 kernel for them"})
    cast = float(classes.get("cast", 0.0)) - float(ref_classes.get("cast", 0.0))
    if cast > 0:
        n = sum(r["count"] for r in candidate.get("by_op_type") or [] if r.get("op_type") == "Cast")
        causes.append({"cause": "cast", "ms": cast,
                       "sentence": f"{n} Cast kernel(s) converting between float16 and float32 took {cast:.3g} ms per "
                                   f"call: onnxruntime's CPU provider has few FP16 kernels, so FP16 layers run in FP32 "
                                   f"between casts"})
    other = float(classes.get("other", 0.0)) - float(ref_classes.get("other", 0.0))
    if other > 0:
        causes.append({"cause": "other_ops", "ms": other,
                       "sentence": f"element-wise and shape kernels take {other:.3g} ms more per call than in the "
                                   f"reference (ops onnxruntime could not fuse once the graph was quantized)"})
    return sorted(causes, key=lambda c: -c["ms"])


def accuracy_problem(errors: dict[str, Any]) -> bool:
    out = errors.get("output") or {}
    return (out.get("top1_agreement", 1.0) < MIN_AGREEMENT
            or (out.get("channel_sqnr_db") is not None and out["channel_sqnr_db"] < MIN_OUTPUT_SQNR_DB))


def worst_layers(errors: dict[str, Any]) -> list[dict[str, Any]]:
    """The few quantized layers that add most of the noise: at most :data:`MAX_LAYERS`, covering
    :data:`NOISE_SHARE` of the positive added noise, each adding at least a tenth of the worst one's."""
    layers = [lay for lay in errors.get("layers") or [] if lay["precision"] != "fp32" and lay["noise_added"] > 0]
    if not layers:
        return []
    total = sum(min(lay["noise_added"], 1e6) for lay in layers)
    chosen, covered = [], 0.0
    for lay in layers[:MAX_LAYERS]:
        if lay["noise_added"] < 0.1 * layers[0]["noise_added"] or covered >= NOISE_SHARE * total:
            break
        chosen.append(lay)
        covered += min(lay["noise_added"], 1e6)
    return chosen


def predicted_noise(remaining: list[dict[str, Any]]) -> float:
    """Relative noise power left at the output when only ``remaining`` quantized layers add noise.

    Noise adds up roughly layer by layer, but a layer whose input is already badly corrupted (input channel SQNR
    under :data:`CLEAN_INPUT_DB`) shows no reliable contribution of its own; it is counted as the median
    contribution of the layers that read a clean input.
    """
    clean = [max(lay["noise_added"], 0.0) for lay in remaining if lay["input_channel_sqnr_db"] >= CLEAN_INPUT_DB]
    typical = float(sorted(clean)[len(clean) // 2]) if clean else 0.0
    return sum(max(lay["noise_added"], 0.0) if lay["input_channel_sqnr_db"] >= CLEAN_INPUT_DB else typical
               for lay in remaining)


def recommend(errors: dict[str, Any] | None, speed: dict[str, Any], graph: dict[str, Any] | None,
              context: dict[str, Any]) -> list[dict[str, Any]]:
    """A short list of changes (see the module docstring); ``context`` gives the references for the command:
    ``reference_ref``, ``data_ref``, ``quantization`` (the candidate's quantization metadata) and ``mode``."""
    recs: list[dict[str, Any]] = []
    layers = (errors or {}).get("layers") or []
    if errors and accuracy_problem(errors):
        worst = worst_layers(errors)
        names: list[str] = []
        for lay in worst:
            for name in [lay["exclude_name"], *lay.get("also_exclude", [])]:
                if name not in names:
                    names.append(name)
        if names:
            kept = set(names)
            residual = predicted_noise([lay for lay in layers if lay["precision"] != "fp32"
                                        and lay["exclude_name"] not in kept])
            cost = [lay["reference_ms"] - lay["candidate_ms"] for lay in layers if lay["exclude_name"] in kept
                    and lay.get("reference_ms") is not None and lay.get("candidate_ms") is not None]
            out = errors["output"]
            embeddings = [lay["exclude_name"] for lay in worst if lay["op_type"] == "Gather"]
            what = "keep embeddings FP32" if embeddings and len(embeddings) == len(worst) else "keep in FP32"
            recs.append(_exclude_rec(
                kind="exclude_nodes", names=names, context=context,
                summary=f"{what}: {', '.join(names)} (they add {sum(lay['noise_added'] for lay in worst):.3g} of the "
                        f"output's relative noise power; output channel SQNR now {out['channel_sqnr_db']:.1f} dB, "
                        f"top-1 agreement {out['top1_agreement']:.3f})",
                predicted={"output_channel_sqnr_db": _db(residual),
                           "output_channel_sqnr_db_now": out["channel_sqnr_db"],
                           "latency_ms_delta": sum(cost) if len(cost) == len(names) else None,
                           "latency_note": _cost_note(cost, names)}))
        quant = context.get("quantization") or {}
        if quant.get("per_channel") is False or (not quant and (graph or {}).get("per_tensor_weights")):
            recs.append(_option_rec("per_channel", "--per-channel", {"per_channel": True}, context,
                                    "quantize weights per output channel: each channel gets its own scale, so one "
                                    "large channel no longer rounds the others away",
                                    {"latency_ms_delta": 0.0, "latency_note": "same int8 kernels"}))
        if (quant.get("calibrator") == "minmax" or context.get("mode") == "static" and not quant) and any(
                lay["precision"] == "int8" and lay.get("also_exclude") for lay in worst_layers(errors)):
            recs.append(_option_rec("calibrator", "--calibrate percentile", {"calibrate": "percentile"}, context,
                                    "calibrate activation ranges with the 99.999th percentile instead of min/max: "
                                    "a rare outlier then no longer sets the whole tensor's scale",
                                    {"latency_ms_delta": 0.0, "latency_note": "same kernels; verify the fidelity "
                                                                              "with modelpress explain"}))
    slow = next((c for c in speed.get("causes") or [] if c["cause"] == "slow_int8_kernels"), None)
    if speed.get("slower") and slow:
        recs.append(_exclude_rec(
            kind="exclude_slow_int8", names=slow["layers"], context=context,
            summary=f"keep in FP32 the layers whose int8 kernels are slower than FP32: {', '.join(slow['layers'])}",
            predicted={"latency_ms_delta": -slow["ms"], "latency_note": f"saves ≈{slow['ms']:.3g} ms per call",
                       "output_channel_sqnr_db": None}))
    unfused_ops = (graph or {}).get("unfused_consumer_ops") or {}
    if speed.get("slower") and unfused_ops:
        qdq = next((c["ms"] for c in speed.get("causes") or [] if c["cause"] == "qdq"), 0.0)
        current = list((context.get("quantization") or {}).get("op_types") or context.get("default_op_types") or [])
        keep = [op for op in current if op not in unfused_ops] or ["Conv", "MatMul", "Gemm"]
        recs.append({"kind": "op_types", "summary": f"stop quantizing {', '.join(sorted(unfused_ops))}: onnxruntime "
                                                    "has no int8 kernel for them, so their Q/DQ pairs ran unfused",
                     "predicted": {"latency_ms_delta": -qdq, "latency_note": f"saves up to ≈{qdq:.3g} ms per call"},
                     "command": _command(context, {"op_types": ",".join(keep)}),
                     "yaml": _yaml(context, {"op_types": keep})})
    if speed.get("slower") and any(c["cause"] == "cast" for c in speed.get("causes") or []):
        recs.append({"kind": "mode", "summary": "on this CPU use INT8 (mode dynamic or static) instead of FP16; keep "
                                                "FP16 for GPUs (TensorRT)",
                     "predicted": {"latency_ms_delta": None, "latency_note": "no Cast kernels; int8 kernels"},
                     "command": _command(context, {"mode": "dynamic"}), "yaml": _yaml(context, {"mode": "dynamic"})})
    return recs


def _cost_note(cost: list[float], names: list[str]) -> str:
    if len(cost) != len(names):
        return "cost unknown: not every layer was found in both profiles"
    delta = sum(cost)
    return f"≈{delta:+.3g} ms per call (their FP32 time minus their int8 time)"


def _exclude_rec(*, kind: str, names: list[str], context: dict[str, Any], summary: str,
                 predicted: dict[str, Any]) -> dict[str, Any]:
    quant = context.get("quantization") or {}
    already = list(((quant.get("excluded_nodes") or {}).get("user")) or [])
    nodes = [*already, *(n for n in names if n not in already)]
    return {"kind": kind, "summary": summary, "nodes": names, "predicted": predicted,
            "command": _command(context, {"exclude_nodes": ",".join(nodes)}),
            "yaml": _yaml(context, {"exclude_nodes": nodes})}


def _option_rec(kind: str, flag: str, params: dict[str, Any], context: dict[str, Any], summary: str,
                predicted: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "summary": summary, "predicted": predicted, "flag": flag,
            "command": _command(context, params), "yaml": _yaml(context, params)}


def _base_params(context: dict[str, Any]) -> dict[str, Any]:
    quant = context.get("quantization") or {}
    mode = quant.get("mode") or context.get("mode") or "dynamic"
    params: dict[str, Any] = {"mode": mode}
    if quant.get("calibrator"):
        params["calibrate"] = quant["calibrator"]
    if quant.get("per_channel") is False:
        params["per_channel"] = False
    return params


def _command(context: dict[str, Any], changes: dict[str, Any]) -> str:
    params = {**_base_params(context), **changes}
    parts = ["modelpress", "quantize", context.get("reference_ref") or "REFERENCE"]
    for key, value in params.items():
        flag = "--" + key.replace("_", "-")
        if key == "per_channel":
            parts.append("--per-channel" if value else "--per-tensor")
        elif isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(map(str, value))]
        else:
            parts += [flag, str(value)]
    parts += ["--data", context.get("data_ref") or "DATA", "-o", context.get("out_ref") or "quantized-fixed"]
    return " ".join(shlex.quote(p) for p in parts)


def _yaml(context: dict[str, Any], changes: dict[str, Any]) -> str:
    import json

    params = {**_base_params(context), **changes}
    lines = ["- type: quantize"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in params.items()]  # JSON scalars are valid YAML
    return "\n".join(lines)
