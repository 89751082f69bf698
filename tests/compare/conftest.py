"""Synthetic runs for the compare tests: reports built with new_report/write_report, no model training."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from modelpress.runtime.latency import summarize_samples
from modelpress.runtime.metrics import classification_metrics
from modelpress.reports import new_report, write_report

STAGE = "02-quantize"
N_CLASSES = 4
CLASS_NAMES = ["cat", "dog", "a|b", "<script>"]


def noisy_proba(y: np.ndarray, correct: np.ndarray, rng: np.random.Generator, n_classes: int) -> np.ndarray:
    """Probabilities whose argmax is y where ``correct`` and a random other class elsewhere, with random spread."""
    wrong = (y + rng.integers(1, n_classes, size=y.size)) % n_classes
    predicted = np.where(correct, y, wrong)
    proba = rng.dirichlet(np.ones(n_classes), size=y.size) * 0.5
    proba[np.arange(y.size), predicted] += 0.5
    return proba


def flip(correct: np.ndarray, *, to_wrong: int, to_right: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``correct`` with ``to_wrong`` right samples made wrong and ``to_right`` wrong ones made right."""
    out = correct.copy()
    out[rng.choice(np.flatnonzero(correct), size=to_wrong, replace=False)] = False
    out[rng.choice(np.flatnonzero(~correct), size=to_right, replace=False)] = True
    return out


@dataclass
class Run:
    """A synthetic run: report dict plus its predictions.npz arrays."""

    report: dict[str, Any]
    predictions: dict[str, np.ndarray]
    folder: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_RUN_INFO: dict[str, Any] = {}


def build_run(
    y: np.ndarray,
    proba: np.ndarray,
    *,
    name: str = "run",
    stage: str = STAGE,
    latency_ms: np.ndarray | None = None,
    size_bytes: int = 40_000,
    class_names: list[str] | None = None,
    sha256: str = "ab" * 32,
    run: dict[str, Any] | None = None,
    with_earlier_stage: bool = True,
) -> Run:
    """A report with an ``00-original`` stage (when asked) and ``stage``, metrics computed from ``proba``."""
    n_classes = proba.shape[1]
    names = class_names or (CLASS_NAMES if n_classes == N_CLASSES else [f"c{i}" for i in range(n_classes)])
    data = {"source": "synthetic.npz", "split": "test", "n_samples": int(y.size), "n_classes": n_classes,
            "class_names": names, "sha256": sha256}
    if not _RUN_INFO:
        _RUN_INFO.update(new_report("template", data=data, threads=1)["run"])
    report = {"schema_version": 1, "run": {**copy.deepcopy(_RUN_INFO), "name": name, **(run or {})},
              "data": data, "stages": []}
    predictions: dict[str, np.ndarray] = {"y_true": y.astype(np.int64)}
    stages = (["00-original"] if with_earlier_stage else []) + [stage]
    for index, stage_name in enumerate(stages):
        p = proba if stage_name == stage else np.eye(n_classes)[y] * 0.9 + 0.1 / n_classes
        latency, samples = [], latency_ms if stage_name == stage else None
        if samples is not None:
            latency.append(summarize_samples(samples, batch_size=1, threads=(run or {}).get("threads", 1),
                                             backend="onnxruntime", warmup=10))
            predictions[f"latency_ms::{stage_name}::onnxruntime::b1"] = np.asarray(samples, dtype=np.float64)
        report["stages"].append({
            "name": stage_name, "kind": "quantize" if index else "original", "params": {}, "notes": [],
            "artifact": {"path": f"stages/{stage_name}/model.onnx", "format": "onnx", "sha256": "cd" * 32,
                         "size_bytes": size_bytes},
            "metrics": classification_metrics(y, p, n_classes=n_classes, class_names=names),
            "fidelity": None,
            "latency": latency,
            "footprint": {"params": 10_000, "nonzero_params": 9_000, "sparsity": 0.1, "size_bytes": size_bytes,
                          "macs": None},
            "gates": [],
        })
        predictions[f"proba::{stage_name}"] = p.astype(np.float32)
    return Run(report, predictions)


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Run]:
    """``make_run("a", y, proba, ...)`` builds a run and writes its folder tmp_path/a (report.json, predictions)."""

    def make(folder: str, y: np.ndarray, proba: np.ndarray, **kwargs: Any) -> Run:
        built = build_run(y, proba, name=kwargs.pop("name", folder), **kwargs)
        built.folder = tmp_path / folder
        write_report(built.report, built.folder, predictions=built.predictions)
        return built

    return make


@pytest.fixture
def pair(make_run: Callable[..., Run]) -> Callable[..., tuple[Run, Run]]:
    """``pair(to_wrong=30, to_right=0)``: baseline at ~90 % accuracy on 1,000 samples and a paired candidate."""

    def make(*, to_wrong: int = 0, to_right: int = 0, seed: int = 0, n: int = 1000, **candidate_kwargs: Any
             ) -> tuple[Run, Run]:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, N_CLASSES, size=n)
        correct = rng.random(n) < 0.9
        base = make_run("baseline", y, noisy_proba(y, correct, rng, N_CLASSES),
                        latency_ms=candidate_kwargs.pop("baseline_latency_ms", None))
        cand_correct = flip(correct, to_wrong=to_wrong, to_right=to_right, rng=rng)
        cand = make_run("candidate", y, noisy_proba(y, cand_correct, rng, N_CLASSES), **candidate_kwargs)
        return base, cand

    return make


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The builders above for test modules (with --import-mode=importlib they cannot import conftest)."""
    return SimpleNamespace(build_run=build_run, noisy_proba=noisy_proba, flip=flip, STAGE=STAGE,
                           N_CLASSES=N_CLASSES, CLASS_NAMES=CLASS_NAMES)
