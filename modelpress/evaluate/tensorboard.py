"""TensorBoard export of a report: per-stage scalars and training curves, so runs can be browsed side by side.

``write_tensorboard(report, DIR)`` writes one TensorBoard run per stage, ``DIR/<run name>/<stage name>/``, with

* scalars at step = the stage's position in the report (0 = the first stage), so that in TensorBoard every stage is
  a point at its own x and all stages of a run, or of several runs, line up: ``metrics/*`` (accuracy, F1, ROC-AUC…),
  ``fidelity/*``, ``latency/<backend>_b<batch>/{median_ms,p99_ms,throughput_per_s}``, ``size/*``, and, where
  measured, ``memory/*``, ``knn/*``, ``robustness/accuracy_at_<level>`` and ``cost/*``;
* training curves of stages that trained, at step = epoch (1-based): ``train/loss``, ``train/val_loss``,
  ``train/val_accuracy`` (from the stage's ``cost.curves``);
* the stage's kind and parameters as text.

It reads the report only (it never runs a model), through ``torch.utils.tensorboard``, which needs the
``tensorboard`` package: asking for TensorBoard without it is :class:`~modelpress.errors.BackendUnavailable`
(exit 3). Event files are appended by TensorBoard's writer and cannot be written atomically; earlier event files in
a stage's folder are removed first, so a rerun replaces the stage's curves instead of doubling them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, InputError
from ..metric_schema import finite_number as _number, scalars

__all__ = ["require_tensorboard", "stage_scalars", "write_tensorboard"]

_COST = ("stage_wall_s", "train_wall_s", "epochs", "calibration_wall_s", "peak_rss_bytes")
_CURVES = {"loss": "train/loss", "val_loss": "train/val_loss", "val_accuracy": "train/val_accuracy"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def require_tensorboard() -> None:
    """Raise :class:`BackendUnavailable` (exit 3) when ``torch.utils.tensorboard`` cannot be used."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise BackendUnavailable("TensorBoard output was asked for but the tensorboard package is not installed",
                                 hint="pip install tensorboard (or modelpress[dev])") from None


def _tag(text: Any) -> str:
    return _SAFE.sub("_", str(text)).strip("_") or "_"


def stage_scalars(stage: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` of every finite number a stage's report entry holds that TensorBoard should show.

    The declared metrics with ``tensorboard=True`` (:mod:`modelpress.metric_schema`) in declaration order, latency
    ones per backend and batch size; then the cost, memory and robustness measurements.
    """
    declared = scalars()
    for m in declared:
        block = stage.get(m.section)
        if m.section != "latency" and isinstance(block, Mapping):
            value = _number(block.get(m.key))
            if value is not None:
                yield m.tag, value
    cost = stage.get("cost")
    if isinstance(cost, Mapping):
        for key in _COST:
            value = _number(cost.get(key))
            if value is not None:
                yield f"cost/{key}", value
    for row in stage.get("latency") or []:
        if isinstance(row, Mapping):
            for m in declared:
                value = _number(row.get(m.key)) if m.section == "latency" else None
                if value is not None:
                    yield f"latency/{_tag(row.get('backend'))}_b{_tag(row.get('batch_size'))}/{m.key}", value
    memory = stage.get("memory")
    if isinstance(memory, Mapping):
        if _number(memory.get("weight_bytes")) is not None:
            yield "memory/weight_bytes", float(memory["weight_bytes"])
        for row in memory.get("rows") or []:
            for key in ("peak_rss_bytes", "peak_delta_bytes", "load_delta_bytes"):
                value = _number(row.get(key)) if isinstance(row, Mapping) else None
                if value is not None:
                    yield f"memory/{_tag(row.get('backend'))}_b{_tag(row.get('batch_size'))}/{key}", value
    robustness = stage.get("robustness")
    if isinstance(robustness, Mapping):
        for row in robustness.get("levels") or []:
            if isinstance(row, Mapping) and _number(row.get("level")) is not None:
                for key in ("accuracy", "f1_macro"):
                    value = _number(row.get(key))
                    if value is not None:
                        yield f"robustness/{key}_at_{row['level']:g}", value


def write_tensorboard(report: Mapping[str, Any], log_dir: str | Path) -> list[Path]:
    """Write the report's stages as TensorBoard runs under ``log_dir/<run name>/``; returns the stage folders.

    Raises:
        BackendUnavailable: the tensorboard package is missing.
        InputError: ``log_dir`` exists and is not a folder.
    """
    require_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    root = Path(log_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"tensorboard folder {root} exists and is not a folder", hint="choose another --tensorboard")
    run = _tag((report.get("run") or {}).get("name", "run"))
    folders = []
    for step, stage in enumerate(report.get("stages") or []):
        if not isinstance(stage, Mapping):
            continue
        folder = root / run / _tag(stage.get("name", f"stage{step}"))
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = SummaryWriter(log_dir=str(folder))
        try:
            for tag, value in stage_scalars(stage):
                writer.add_scalar(tag, value, global_step=step)
            curves = (stage.get("cost") or {}).get("curves") if isinstance(stage.get("cost"), Mapping) else None
            for key, tag in _CURVES.items():
                for epoch, value in enumerate((curves or {}).get(key) or [], start=1):
                    if _number(value) is not None:
                        writer.add_scalar(tag, float(value), global_step=epoch)
            params = json.dumps(stage.get("params") or {}, sort_keys=True, default=str)
            writer.add_text("stage", f"{stage.get('kind', '')}: {params}", global_step=step)
        finally:
            writer.close()
        folders.append(folder)
    return folders
