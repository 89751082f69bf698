"""A pipeline's latency and speed-ups: every stage and the reference timed again, interleaved, on this machine.

Each stage is timed when it is evaluated, one after another, and a cached stage keeps the latency of the run (and
machine) that evaluated it. Neither may back a speed-up. So once all stages of a run are evaluated, :func:`retime`
times every stage again together with the reference (the original, or the trained model) in interleaved rounds in
this process (:func:`~modelpress.runtime.interleaved.time_interleaved`), one group per backend and batch size, all
with the run's threads, and replaces the stages' latency rows with these. A speed-up is then always the same
backend, batch and threads against the reference, with a CI over rounds:

- a stage on a backend the reference does not run on (an ONNX stage of a torch original) is compared with the
  reference exported to ONNX for the comparison (row marked ``timed_as``); where that is impossible, the row has
  ``speedup: null`` and a ``speedup_reason``, never a ratio across backends;
- backends that time themselves on a device (TensorRT) are timed by their own hook at the end, without a
  speed-up.

With re-timing on, the runner does not time a stage when it evaluates it (the rows would be replaced).

Every row carries ``machine_id`` (:func:`~modelpress.reports.schema.machine_fingerprint`). With
``evaluate.latency.interleaved: false`` nothing is re-timed: rows keep their evaluation, a row measured on another
machine is marked, and no speed-up is shown.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from ..artifacts import ModelArtifact
from ..data import Dataset
from ..evaluate.evaluator import EvalConfig, EvalResult
from ..runtime.interleaved import Contestant, rounds_ratio, time_interleaved
from ..runtime.latency import measure_cold_start
from ..runtime.sessions import BACKENDS, make_runner, native_backend, runs_format
from ..runtime.timing import latency_batch
from ..sources import load_model

__all__ = ["TimedStage", "retime"]


@dataclass
class TimedStage:
    """One evaluated stage: its report entry (rows replaced in place), its folder and evaluation (samples)."""

    name: str
    entry: dict[str, Any]
    folder: Path
    result: EvalResult


def retime(stages: Sequence[TimedStage], reference: TimedStage, *, data: Dataset, config: EvalConfig,
           machine: Mapping[str, Any], work_dir: Path, export: Mapping[str, Any] | None = None,
           timer: Callable[[], float] | None = None) -> dict[str, Any] | None:
    """Time ``stages`` and ``reference`` interleaved (see the module docstring); returns the run's timing block
    (``report["pipeline"]["latency"]``), or None when latency is off.

    Args:
        machine: this run's :func:`~modelpress.reports.schema.machine_fingerprint`.
        work_dir: where the reference's ONNX copy is written (removed afterwards).
        export: opset / exporter of the pipeline's export stage, used for the reference's ONNX copy.
        timer: injectable clock (tests).
    """
    if not config.measure_latency:
        return None
    if not config.latency.interleaved:
        return _mark_only(stages, machine)
    artifacts = {s.name: load_model(str(s.folder)) for s in stages}
    if reference.name not in artifacts:
        artifacts[reference.name] = load_model(str(reference.folder))
    groups: dict[tuple[str, int], list[tuple[str, ModelArtifact]]] = {}
    device: list[str] = []
    for stage in stages:
        artifact = artifacts[stage.name]
        for backend in config.backends or (native_backend(artifact),):
            if not runs_format(backend, artifact.format):
                stage.entry.setdefault("notes", []).append(
                    f"latency on {backend} skipped: it does not run {artifact.format} models")
                continue
            if BACKENDS.get(backend).latency is not None:  # timed on the device with its own clock
                device.append(backend)
                continue
            for bs in config.batch_sizes:
                groups.setdefault((backend, int(bs)), []).append((stage.name, artifact))
    tmp = Path(tempfile.mkdtemp(prefix=".timing-", dir=work_dir))
    try:
        ref_on: dict[str, tuple[ModelArtifact | None, str]] = {}  # backend → (reference artifact, timed_as / reason)
        native = native_backend(artifacts[reference.name])  # the reference's own backend first, as evaluated
        for (backend, bs), members in sorted(groups.items(), key=lambda g: (g[0][0] != native, g[0])):
            if backend not in ref_on:
                ref_on[backend] = _reference_on(artifacts[reference.name], backend, tmp, data, export)
            ref_artifact, how = ref_on[backend]
            if all(name != reference.name for name, _ in members) and ref_artifact is not None:
                members = [(reference.name, ref_artifact), *members]
            _time_group(backend, bs, members, reference.name, how if ref_artifact is None else None,
                        {s.name: s for s in [*stages, reference]}, data, config, machine, timer,
                        timed_as=how if ref_artifact is not None and ref_artifact is not artifacts[reference.name]
                        else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stage in stages:
        artifact = artifacts[stage.name]
        for backend in sorted(set(device)):
            if not runs_format(backend, artifact.format):
                continue
            hook = BACKENDS.get(backend).latency
            for bs in config.batch_sizes:
                for stats, s in hook(artifact, latency_batch(data, int(bs)), batch_size=int(bs),
                                     threads=config.threads, latency=config.latency):
                    stats.update(machine_id=machine["id"], timing="on the device, at the end of this run",
                                 speedup=None, speedup_reason=f"{backend} times itself on the device, not "
                                 "interleaved with the reference, so no speed-up is claimed")
                    _put_row(stage.entry, stats)
                    stage.result.latency_samples[f"{stats['backend']}::b{bs}"] = np.asarray(s)
    return {"timing": "interleaved", "rounds": int(config.latency.rounds), "reference": reference.name,
            "threads": int(config.threads), "machine_id": machine["id"],
            "note": f"every latency row was measured in this run on this machine ({machine.get('cpu')}, "
                    f"{config.threads} thread(s)), all stages and the reference interleaved in "
                    f"{config.latency.rounds} rounds per backend and batch size; speed-ups are against "
                    f"{reference.name} on the same backend, batch and threads, with a 95 % CI over rounds"}


def _reference_on(artifact: ModelArtifact, backend: str, tmp: Path, data: Dataset,
                  export: Mapping[str, Any] | None) -> tuple[ModelArtifact | None, str]:
    """The reference as ``backend`` runs it: itself, its ONNX export (for onnxruntime), or None and why not."""
    if runs_format(backend, artifact.format):
        return artifact, ""
    if runs_format(backend, "onnx") and artifact.format == "torch" and artifact.module is not None:
        from ..runtime.onnx_export import export_torch_onnx

        opset, exporter = int((export or {}).get("opset", 18)), str((export or {}).get("exporter", "dynamo"))
        try:
            onnx = export_torch_onnx(artifact, tmp / "reference.onnx", opset=opset, exporter=exporter,
                                     dynamic_batch=True)
            make_runner(onnx, backend)(latency_batch(data, 1))
        except Exception as exc:  # noqa: BLE001 - any failure only means: no speed-up on this backend, said why
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            return None, (f"the reference could not be exported to ONNX to time it on {backend} "
                          f"({type(exc).__name__}: {first}), and a ratio across backends is not a speed-up")
        return onnx, f"the reference exported to ONNX (opset {opset}, {exporter} exporter) for this comparison"
    return None, (f"the reference ({artifact.format}) does not run on {backend}, and a ratio across backends is "
                  "not a speed-up")


def _time_group(backend: str, bs: int, members: list[tuple[str, ModelArtifact]], reference: str,
                no_reference: str | None, by_name: Mapping[str, TimedStage], data: Dataset, config: EvalConfig,
                machine: Mapping[str, Any], timer: Callable[[], float] | None, *, timed_as: str | None) -> None:
    batch = latency_batch(data, bs)
    contestants = []
    for name, artifact in members:
        def make(artifact: ModelArtifact = artifact) -> Callable[[], object]:
            runner = make_runner(artifact, backend, threads=config.threads)
            return lambda: runner(batch)

        cold, fn = measure_cold_start(make)
        contestants.append(Contestant(name, fn, backend, bs, int(config.threads), cold))
    kwargs = {"timer": timer} if timer is not None else {}
    with progress.bar(None, f"interleaved latency {backend} b{bs}", unit="round"):
        timed = time_interleaved(contestants, config=config.latency, **kwargs)
    samples = {c.name: s for c, (_, s) in zip(contestants, timed, strict=True)}
    for c, (stats, s) in zip(contestants, timed, strict=True):
        stats["machine_id"] = machine["id"]
        if c.name == reference:
            stats["speedup"] = None
            stats["speedup_reason"] = "this is the reference"
            if timed_as:
                stats["timed_as"] = timed_as
        elif reference in samples:
            stats["speedup"] = {"reference": reference, **rounds_ratio(samples[reference], s)}
        else:
            stats["speedup"] = None
            stats["speedup_reason"] = no_reference or f"the reference was not timed on {backend}"
        stage = by_name[c.name]
        _put_row(stage.entry, stats)
        stage.result.latency_samples[f"{backend}::b{bs}"] = np.ascontiguousarray(s.ravel())


def _put_row(entry: dict[str, Any], stats: dict[str, Any]) -> None:
    """Replace the entry's row of the same backend, batch and threads (or add it)."""
    rows = entry.setdefault("latency", [])
    key = (stats["backend"], stats["batch_size"], stats["threads"])
    for i, row in enumerate(rows):
        if (row.get("backend"), row.get("batch_size"), row.get("threads")) == key:
            rows[i] = stats
            return
    rows.append(stats)


def _mark_only(stages: Sequence[TimedStage], machine: Mapping[str, Any]) -> dict[str, Any]:
    """Interleaved timing off: rows keep their evaluation; another machine's rows are marked; no speed-ups."""
    for stage in stages:
        other = 0
        for row in stage.entry.get("latency") or []:
            row["timing"] = "at evaluation"
            row["speedup"] = None
            row["speedup_reason"] = ("evaluate.latency.interleaved is off: stages were timed one after another, "
                                     "so no speed-up is claimed")
            if row.get("machine_id") != machine["id"]:
                other += 1
                row["machine_note"] = ("measured on another machine or setup (machine "
                                       f"{row.get('machine_id') or 'not recorded'}, this run {machine['id']}), "
                                       "not re-timed")
        if other:
            stage.entry.setdefault("notes", []).append(
                f"latency: {other} row(s) come from an earlier run on another machine or setup and were not "
                "re-timed (evaluate.latency.interleaved is off)")
    return {"timing": "at evaluation", "machine_id": machine["id"],
            "note": "interleaved re-timing is off: each stage's latency is from its own evaluation (a cached "
                    "stage's from the run that evaluated it); no speed-ups"}
