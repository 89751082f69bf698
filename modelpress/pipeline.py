"""Run stages in order, evaluate every result with the same evaluator and data, write one report.

Each stage's artifact lives in ``<out>/stages/NN-<kind>/``; the report (``report.json`` last) is rewritten atomically
after every stage, so an interrupted run leaves every finished stage and a readable report behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import compress  # noqa: F401  (registers the stages)
from .artifacts import ModelArtifact
from .compress.registry import StageConfig, StageContext, run_stage
from .data import Dataset, load_data
from .errors import InputError
from .evaluate.evaluator import EvalConfig, EvalResult, evaluate
from .io import remove_stale_temps
from .reports import new_report, write_report
from .sources import load_model


@dataclass(frozen=True)
class DataSpec:
    """Data references per role; ``train``/``calibration`` default to the eval source's other split."""

    eval: str
    train: str | None = None
    calibration: str | None = None
    label_column: str = "label"


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    model: str
    data: DataSpec
    stages: tuple[StageConfig, ...] = ()
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    weights: str | None = None
    seed: int = 0


@dataclass
class RunData:
    eval: Dataset
    train: Dataset | None
    calibration: Dataset | None


def load_run_data(spec: DataSpec, *, need_train: bool) -> RunData:
    """Eval data from the test split; training and calibration data from the train split unless named."""
    eval_data = load_data(spec.eval, split="test", label_column=spec.label_column)
    base = spec.eval.split("#", 1)[0]
    train = load_data(spec.train or f"{base}#train", label_column=spec.label_column) if (
        spec.train or need_train) else None
    calib = load_data(spec.calibration, split="train", label_column=spec.label_column) if spec.calibration else train
    return RunData(eval_data, train, calib)


def stage_dir_name(index: int, kind: str) -> str:
    return f"{index:02d}-{kind}"


def stage_result(name: str, kind: str, params: dict[str, Any], artifact: ModelArtifact, result: EvalResult,
                 *, out_dir: Path, notes: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "params": params,
        "notes": [*notes, *result.notes],
        "artifact": artifact.describe(relative_to=out_dir),
        **result.as_stage_fields(),
        "gates": [],
    }


def predictions_of(y_true: np.ndarray, results: list[tuple[str, EvalResult]]) -> dict[str, np.ndarray]:
    """predictions.npz content: y_true, per-stage probabilities and logits, raw latency samples.

    Keys: ``y_true``, ``proba::STAGE``, ``logits::STAGE``, ``latency_ms::STAGE::BACKEND::bBATCH``.
    """
    arrays: dict[str, np.ndarray] = {"y_true": np.asarray(y_true)}
    for name, r in results:
        arrays[f"proba::{name}"] = r.probabilities.astype(np.float32)
        arrays[f"logits::{name}"] = r.logits.astype(np.float32)
        for key, samples in r.latency_samples.items():
            arrays[f"latency_ms::{name}::{key}"] = samples
    return arrays


def run_pipeline(spec: PipelineSpec, *, out_dir: Path) -> dict[str, Any]:
    """Run every stage of ``spec`` into ``out_dir`` and return the report written there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)
    data = load_run_data(spec.data, need_train=any(s.kind in ("train", "distill") for s in spec.stages))
    artifact = load_model(spec.model, data=data.eval, weights=spec.weights)
    report = new_report(spec.name, data=data.eval.describe(), threads=spec.evaluate.threads)
    results: list[tuple[str, EvalResult]] = []
    leading_train = 0
    while leading_train < len(spec.stages) and spec.stages[leading_train].kind == "train":
        leading_train += 1
    reference: tuple[np.ndarray, str] | None = None
    if leading_train == 0:
        result = evaluate(artifact, data.eval, config=spec.evaluate)
        reference = (result.logits, "00-original")
        report["stages"].append(stage_result("00-original", "original", {"model": spec.model}, artifact, result,
                                             out_dir=out_dir, notes=[]))
        results.append(("00-original", result))
    original = artifact
    for index, config in enumerate(spec.stages, start=1):
        name = stage_dir_name(index, config.kind)
        ctx = StageContext(work_dir=out_dir / "stages" / name, train=data.train, eval=data.eval,
                           calibration=data.calibration, original=original, seed=spec.seed,
                           threads=spec.evaluate.threads)
        artifact = run_stage(artifact, config, ctx).save(ctx.work_dir)
        ref_logits, ref_name = reference if reference else (None, None)
        result = evaluate(artifact, data.eval, config=spec.evaluate, reference_logits=ref_logits,
                          reference_name=ref_name)
        if index == leading_train:
            original, reference = artifact, (result.logits, name)
        stage = stage_result(name, config.kind, config.params(), artifact, result, out_dir=out_dir, notes=ctx.notes)
        verification = artifact.metadata.get("verification")
        if verification:
            stage["verification"] = verification
        report["stages"].append(stage)
        results.append((name, result))
        write_report(report, out_dir, predictions=predictions_of(data.eval.y, results))
    if not spec.stages:
        write_report(report, out_dir, predictions=predictions_of(data.eval.y, results))
    if not report["stages"]:
        raise InputError("the pipeline produced no stage to report")
    return report
