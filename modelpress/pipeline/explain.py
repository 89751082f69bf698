"""``modelpress explain`` as a report folder: the reference and the candidate as two stages, the explanation under
the candidate stage's key ``"explain"``.

It lives with the pipeline, above ``diagnose/``, ``evaluate/`` and ``reports/``, because it runs all three
(diagnose/ may not import its siblings or the reports above it).

Layout of ``OUT/NAME/``: report.html, predictions.npz, report.md, then report.json last (the commit marker, as for
every report). Both stages carry metrics on the whole test split, the candidate its fidelity to the reference, and
latency rows measured by :func:`~modelpress.diagnose.explain.explain` on the same batch and threads (so report.md's
summary table shows the speed-up); the FP16 copy's latency is in the Explain section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import ModelArtifact
from ..data import load_data
from ..diagnose.explain import ExplainConfig, explain
from ..evaluate.evaluator import EvalConfig, EvalResult, evaluate
from ..reports import new_report, write_report
from ..reports.html import write_html
from ..sources import load_model
from .record import stage_result

_LATENCY_KEYS = ("backend", "batch_size", "threads", "n", "median_ms", "p90_ms", "iqr_ms", "unstable",
                 "cold_start_ms")


def run_explain(candidate_ref: str, reference_ref: str, data_ref: str, *, out_dir: Path, name: str,
                config: ExplainConfig, weights: str | None = None, label_column: str = "label",
                trust_checkpoint: bool = False) -> tuple[dict[str, Any], dict[str, Path]]:
    """Load both models and the data (test split), explain, evaluate both, write the report folder.

    Returns:
        ``(explain result, written paths)``; paths under ``"md"``, ``"json"``, ``"html"``, ``"predictions"``.

    Raises:
        InputError: a reference does not load, or the models or data do not fit each other (exit code 2).
    """
    data = load_data(data_ref, split="test", label_column=label_column)
    candidate = load_model(candidate_ref, data=data, weights=weights, trust_checkpoint=trust_checkpoint)
    reference = load_model(reference_ref, data=data, trust_checkpoint=trust_checkpoint)
    result = explain(candidate, reference, data, config=config,
                     context={"reference_ref": reference_ref, "data_ref": data_ref})
    eval_config = EvalConfig(threads=config.threads, measure_latency=False)
    ref_eval = evaluate(reference, data, config=eval_config)
    cand_eval = evaluate(candidate, data, config=eval_config, reference_logits=ref_eval.logits,
                         reference_name="reference")
    rows = {row["name"]: {k: row[k] for k in _LATENCY_KEYS if k in row} for row in result["latency"]}
    report = new_report(name, data=data.describe(), threads=config.threads)
    report["stages"] = [
        _stage("reference", "reference", {"model": reference_ref}, reference, ref_eval, out_dir, [rows["reference"]]),
        {**_stage("candidate", "explain", {"model": candidate_ref, "reference": reference_ref, "data": data_ref},
                  candidate, cand_eval, out_dir, [rows["candidate"]]), "explain": result},
    ]
    predictions = {"y_true": data.y}
    for stage_name, ev in (("reference", ref_eval), ("candidate", cand_eval)):
        predictions[f"proba::{stage_name}"] = ev.probabilities.astype("float32")
        predictions[f"logits::{stage_name}"] = ev.logits.astype("float32")
    html = write_html(report, out_dir, predictions=predictions, with_plots=False)  # the tables are the point
    paths = write_report(report, out_dir, predictions=predictions)
    return result, {**paths, "html": html}


def _stage(name: str, kind: str, params: dict[str, Any], artifact: ModelArtifact, result: EvalResult, out_dir: Path,
           latency: list[dict[str, Any]]) -> dict[str, Any]:
    """The report entry, with the latency rows explain measured on its own batch instead of the evaluator's."""
    entry = stage_result(name, kind, params, artifact, result, out_dir=out_dir, notes=[])
    entry["latency"] = latency
    return entry
