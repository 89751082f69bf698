"""Run stages in order, evaluate every result with the same evaluator and data, write one report; cache and resume.

Layout of a run folder ``<out>/<name>/``::

    stages/00-original/   the model as given (evaluated unless the pipeline starts with train stages)
    stages/NN-<kind>/     one folder per stage: the artifact (manifest.json written last), eval.npz (logits,
                          probabilities, raw latency samples) and stage.json, the stage's commit marker
    report.html  predictions.npz  report.md  report.json   (report.json last; rewritten after every stage)

A stage runs in ``stages/.NN-<kind>.partial/`` and the finished folder is renamed into place, so a stage folder is
either complete or absent. The partial folder survives Ctrl-C and SIGKILL: a stage that checkpoints into its work
folder (``train`` does, per epoch) continues there on the next run when its inputs are unchanged.

Cache: stage.json records a key = sha256 of (stage kind + params, the digest of the input artifact's files, the
digest of the original model, the data hashes, the seed, the cache format and the modelpress version). A stage whose
key matches and whose artifact files still hash to the recorded digest is not recomputed. Its evaluation is reused
as well when the evaluation key (artifact digest, evaluate settings, data, fidelity reference) matches — latency
included, so a fully cached run reproduces the previous report's numbers exactly; ``resume=False`` recomputes and
re-measures everything. The thread count is not part of the stage key (it changes timings, not what a stage makes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import compress  # noqa: F401  (registers the stages)
from . import progress
from .artifacts import MANIFEST, ModelArtifact, check_inputs
from .compress.registry import COST_KEY, StageConfig, StageContext, run_stage
from .data import Dataset, load_data
from .errors import BackendUnavailable, GateFailed, InputError
from .evaluate.evaluator import EXTRA_SECTIONS, EvalResult, evaluate
from .io import TMP_SUFFIX, atomic_write, read_json, remove_stale_temps, sha256_file, write_json
from .reports import REPORT_FILENAME, new_report, write_report
from .sources import load_model, trusted_code
from .spec import DataSpec, PipelineSpec, load_spec, parse_spec

__all__ = [
    "DataSpec", "PipelineSpec", "PlannedStage", "RunData", "RunOutcome", "StageOutcome", "execute_pipeline",
    "load_original", "load_run_data", "load_spec", "parse_spec", "plan_pipeline", "predictions_of", "run_pipeline",
    "stage_dir_name", "stage_result",
]

CACHE_VERSION = 1
STAGE_FILE = "stage.json"
EVAL_FILE = "eval.npz"
STAGES_DIR = "stages"
PARTIAL = ".partial"
_KEY_FILE = ".key"


@dataclass
class RunData:
    eval: Dataset
    train: Dataset | None
    calibration: Dataset | None

    def sha256(self) -> str:
        parts = [d.sha256() if d is not None else "-" for d in (self.eval, self.train, self.calibration)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def load_run_data(spec: DataSpec, *, need_train: bool) -> RunData:
    """Eval data from the test split; training and calibration data from the train split unless named."""
    eval_data = load_data(spec.eval, split="test", label_column=spec.label_column)
    base = spec.eval.split("#", 1)[0]
    train = load_data(spec.train or f"{base}#train", label_column=spec.label_column) if (
        spec.train or need_train) else None
    calib = load_data(spec.calibration, split="train", label_column=spec.label_column) if spec.calibration else train
    return RunData(eval_data, train, calib)


def tensorboard_dir(spec: PipelineSpec, out_dir: Path) -> Path:
    """Where ``tensorboard:`` writes: ``true`` → ``<run folder>/tensorboard``; a folder (relative to the spec's
    folder, like every path in a spec) → that folder. Runs go to ``<folder>/<name>/<stage>/``."""
    return out_dir / "tensorboard" if spec.tensorboard is True else Path(str(spec.tensorboard))


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


@dataclass
class StageOutcome:
    """What happened to one stage in this run: ``ran``, ``cached``, ``re-evaluated`` or ``skipped``."""

    name: str
    kind: str
    status: str
    seconds: float
    note: str = ""


@dataclass
class RunOutcome:
    report: dict[str, Any]
    out_dir: Path
    stages: list[StageOutcome] = field(default_factory=list)


def run_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True) -> dict[str, Any]:
    """Run every stage of ``spec`` into the run folder ``out_dir`` and return the report written there."""
    return execute_pipeline(spec, out_dir=out_dir, resume=resume).report


def execute_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True) -> RunOutcome:
    """Validate inputs (data, model), then run, cache and report every stage; see the module docstring.

    Raises:
        InputError: a data reference or the model does not load, or data and model do not fit (before any stage).
        GateFailed: a gate in ``spec.gates`` failed (the report, with the gate results, is written first).
    """
    with trusted_code(spec.named_code()):  # artifact folders may rebuild only with factories the spec names
        return _execute(spec, out_dir=Path(out_dir), resume=resume)


def _inputs(spec: PipelineSpec) -> list[str | None]:
    return [*spec.named_code(), spec.weights, spec.data.eval, spec.data.train, spec.data.calibration]


def _execute(spec: PipelineSpec, *, out_dir: Path, resume: bool) -> RunOutcome:
    refuse_inside_inputs(out_dir, _inputs(spec))
    _check_run_folder(out_dir)
    if spec.tensorboard:
        from .evaluate.tensorboard import require_tensorboard

        require_tensorboard()  # exit 3 before any stage runs, not after
    data = load_run_data(spec.data, need_train=bool(spec.stages))
    original = load_original(spec, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        remove_stale_temps(out_dir)
        stages_dir = out_dir / STAGES_DIR
        stages_dir.mkdir(exist_ok=True)
        for old in stages_dir.glob(".*.old"):
            shutil.rmtree(old, ignore_errors=True)
        return _Runner(spec, out_dir, data, resume=resume).run(original)


@dataclass
class PlannedStage:
    """One line of a dry run: the stage folder, its kind and params, and ``cached`` or ``will run``."""

    name: str
    kind: str
    params: dict[str, Any]
    status: str
    optional: bool = False


def plan_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True) -> tuple[RunData, list[PlannedStage]]:
    """Validate everything a run would (data loads and is non-empty, the model loads and fits the data) and say
    which stages a run would reuse from ``out_dir`` and which it would compute. Writes nothing."""
    out_dir = Path(out_dir)
    refuse_inside_inputs(out_dir, _inputs(spec))
    _check_run_folder(out_dir)
    data = load_run_data(spec.data, need_train=bool(spec.stages))
    with trusted_code(spec.named_code()):
        original = load_original(spec, data)
    runner = _Runner(spec, out_dir, data, resume=resume)
    leading_train = _leading_train(spec)
    digest: str | None = _artifact_digest(original)
    teacher = digest
    items: list[PlannedStage] = []
    entries: list[tuple[str, str, dict[str, Any], list[Any] | None, bool]] = []
    if leading_train == 0:
        entries.append(("00-original", "original", {"model": spec.model}, [digest], False))
    for index, config in enumerate(spec.stages, start=1):
        entries.append((stage_dir_name(index, config.kind), config.kind, config.params(), None,
                        (index - 1) in spec.optional))
    for position, (name, kind, params, parts, optional) in enumerate(entries):
        if parts is None:
            parts = [digest, teacher, kind, _canonical(params)]
        record = None
        if digest is not None and teacher is not None:
            key = runner.key(parts)
            record = runner.cached(out_dir / STAGES_DIR / name, key) or runner.cached(
                out_dir / STAGES_DIR / f".{name}{PARTIAL}", key)
        items.append(PlannedStage(name, kind, params, "cached" if record else "will run", optional))
        digest = record["artifact_sha256"] if record else None
        if leading_train and position + 1 == leading_train:
            teacher = digest
    return data, items


def _leading_train(spec: PipelineSpec) -> int:
    count = 0
    while count < len(spec.stages) and spec.stages[count].kind == "train":
        count += 1
    return count


def load_original(spec: PipelineSpec, data: RunData) -> ModelArtifact:
    """Load the pipeline's model and check that the eval data fits it (inputs and class count)."""
    options: dict[str, Any] = {}
    if spec.model.startswith("zoo:"):
        options = {"kwargs": dict(spec.model_kwargs), "seed": spec.seed}
    artifact = load_model(spec.model, data=data.eval, weights=spec.weights, **options)
    first = next(data.eval.batches(1))[0]
    check_inputs(artifact.inputs, first, model=artifact.source)
    if data.eval.n_classes > artifact.n_classes:
        raise InputError(f"data {data.eval.source} has {data.eval.n_classes} classes but model {spec.model} "
                         f"outputs {artifact.n_classes}")
    return artifact


@dataclass
class _Done:
    name: str
    stage: dict[str, Any]
    result: EvalResult
    digest: str
    folder: Path


class _Runner:
    def __init__(self, spec: PipelineSpec, out_dir: Path, data: RunData, *, resume: bool) -> None:
        self.spec, self.out_dir, self.data, self.resume = spec, out_dir, data, resume
        self.stages_dir = out_dir / STAGES_DIR
        self.version = _modelpress_version()
        self.data_sha = data.sha256()
        self.eval_data_sha = data.eval.sha256()
        self.eval_json = json.dumps(dataclasses.asdict(spec.evaluate), sort_keys=True, default=str)
        self.outcomes: list[StageOutcome] = []

    def run(self, original: ModelArtifact) -> RunOutcome:
        spec = self.spec
        leading_train = _leading_train(spec)
        planned = (["00-original"] if leading_train == 0 else []) + [
            stage_dir_name(i, c.kind) for i, c in enumerate(spec.stages, start=1)]
        report = new_report(spec.name, data=self.data.eval.describe(), threads=spec.evaluate.threads)
        report["pipeline"] = {"spec": spec.source, "stages_planned": planned, "complete": False, "skipped": [],
                              "gates": dict(spec.gates), "cache": "resume" if self.resume else "recomputed"}
        done: list[_Done] = []
        orig_digest = _artifact_digest(original)
        teacher: Callable[[], ModelArtifact] = lambda: original  # noqa: E731
        teacher_digest = orig_digest
        current: Callable[[], ModelArtifact] = lambda: original  # noqa: E731
        current_digest = orig_digest
        reference: _Done | None = None
        with progress.bar(len(planned), spec.name, unit="stage", leave=True) as bar:
            if leading_train == 0:
                bar.set_description_str(f"{spec.name} [1/{len(planned)}] original")
                step = self._step("00-original", "original", {"model": spec.model}, [orig_digest],
                                  lambda work, _notes: original.save(work), reference=None, optional=False)
                if step is None:  # only optional stages are skipped; the original never is
                    raise RuntimeError("the original model was skipped")
                self._record(report, done, step, bar)
                reference, current, current_digest = step, _loader(step.folder), step.digest
            for index, config in enumerate(spec.stages, start=1):
                name = stage_dir_name(index, config.kind)
                bar.set_description_str(f"{spec.name} [{len(done) + 1}/{len(planned)}] {config.kind}")
                produce = self._producer(config, current, teacher)
                step = self._step(name, config.kind, config.params(),
                                  [current_digest, teacher_digest, config.kind, _canonical(config.params())],
                                  produce, reference=reference, optional=(index - 1) in spec.optional)
                if step is None:
                    report["pipeline"]["skipped"].append({"name": name, "kind": config.kind,
                                                          "reason": self.outcomes[-1].note})
                    bar.update(1)
                    continue
                self._record(report, done, step, bar)
                current, current_digest = _loader(step.folder), step.digest
                if index == leading_train:
                    teacher, teacher_digest, reference = _loader(step.folder), step.digest, step
        if not done:
            raise InputError("the pipeline produced no stage to report")
        for skip in report["pipeline"]["skipped"]:
            done[-1].stage["notes"].append(f"optional stage {skip['name']} was skipped: {skip['reason']}")
        report["pipeline"]["complete"] = True
        failed = self._gates(report, done, reference)
        self._write(report, done, final=True)
        if spec.tensorboard:
            from .evaluate.tensorboard import write_tensorboard

            write_tensorboard(report, tensorboard_dir(spec, self.out_dir))
        self._prune_stale({d.name for d in done})
        if failed:
            raise GateFailed(f"{done[-1].name}: {failed}", hint=f"see {self.out_dir / 'report.md'}")
        return RunOutcome(report, self.out_dir, self.outcomes)

    def _producer(self, config: StageConfig, current: Callable[[], ModelArtifact],
                  teacher: Callable[[], ModelArtifact]) -> Callable[[Path, list[str]], ModelArtifact]:
        """The stage's work: input and original artifacts (loaded only when the stage really runs) → saved."""

        def produce(work: Path, notes: list[str]) -> ModelArtifact:
            ctx = StageContext(work_dir=work, train=self.data.train, eval=self.data.eval,
                               calibration=self.data.calibration, original=teacher(), seed=self.spec.seed,
                               threads=self.spec.evaluate.threads, notes=notes)
            return run_stage(current(), config, ctx).save(work)

        return produce

    def _record(self, report: dict[str, Any], done: list[_Done], step: _Done, bar: Any) -> None:
        done.append(step)
        report["stages"].append(step.stage)
        self._write(report, done)
        bar.update(1)

    def _write(self, report: dict[str, Any], done: list[_Done], *, final: bool = False) -> None:
        """report.html, then predictions.npz, report.md and report.json last. Plots are drawn for the final report
        only (about a second each time); an interrupted run's page shows the table and says it is incomplete."""
        from .reports.html import write_html

        predictions = predictions_of(self.data.eval.y, [(d.name, d.result) for d in done])
        write_html(report, self.out_dir, predictions=predictions, with_plots=final)
        write_report(report, self.out_dir, predictions=predictions)

    # ---- one stage: cached, or run in its partial folder and committed -------------------------------------------
    def _step(self, name: str, kind: str, params: dict[str, Any], key_parts: list[Any],
              produce: Callable[[Path, list[str]], ModelArtifact], *, reference: _Done | None,
              optional: bool) -> _Done | None:
        start = time.perf_counter()
        key = self.key(key_parts)
        final = self.stages_dir / name
        partial = self.stages_dir / f".{name}{PARTIAL}"
        record, folder = self.cached(final, key), final
        if record is None:
            record, folder = self.cached(partial, key), partial  # finished, but killed before its rename
        status = "cached"
        if record is None:
            self._prepare_partial(partial, key)
            notes: list[str] = []
            try:
                produce(partial, notes)
            except BackendUnavailable as exc:
                if not optional:
                    raise
                shutil.rmtree(partial, ignore_errors=True)
                self.outcomes.append(StageOutcome(name, kind, "skipped", time.perf_counter() - start,
                                                  exc.format_message()))
                return None
            record = {"cache_version": CACHE_VERSION, "key": key, "kind": kind, "params": params,
                      "modelpress_version": self.version, "artifact_sha256": _folder_digest(partial),
                      "notes": notes, "stage_seconds": round(time.perf_counter() - start, 3)}
            status, folder = "ran", partial
        ref_logits = reference.result.logits if reference else None
        eval_key = _sha([record["artifact_sha256"], self.eval_json, self.eval_data_sha, self.version,
                         reference.name if reference else None,
                         hashlib.sha256(ref_logits.tobytes()).hexdigest() if ref_logits is not None else None])
        result = self._cached_eval(folder, record, eval_key) if status == "cached" else None
        if result is None:
            artifact = load_model(str(folder))  # judge what was saved, exactly as a user will load it
            result = evaluate(artifact, self.data.eval, config=self.spec.evaluate, reference_logits=ref_logits,
                              reference_name=reference.name if reference else None,
                              reference_embeddings=reference.result.embeddings if reference else None)
            described = artifact.describe(relative_to=folder)
            described["path"] = f"{STAGES_DIR}/{name}/{described['path']}" if described["path"] else None
            stage = {"name": name, "kind": kind, "params": params, "notes": [*record["notes"], *result.notes],
                     "artifact": described, **result.as_stage_fields(), "gates": []}
            for key in ("verification", "explain", "quantization"):
                if artifact.metadata.get(key):
                    stage[key] = artifact.metadata[key]
            if kind != "original":  # what making it cost: the stage's own record (COST_KEY) and its wall time
                stage["cost"] = {**(artifact.metadata.get(COST_KEY) or {}), "stage_wall_s": record.get("stage_seconds")}
            eval_sha = _save_eval(folder / EVAL_FILE, result)
            record.update(eval_key=eval_key, eval_sha256=eval_sha, stage=stage)
            write_json(folder / STAGE_FILE, record)  # the commit marker, last
            status = "re-evaluated" if status == "cached" else status
        if folder != final:
            _commit(folder, final)
        stage = json.loads(json.dumps(record["stage"]))  # a private copy: notes may be appended later
        self.outcomes.append(StageOutcome(name, kind, status, time.perf_counter() - start))
        return _Done(name, stage, result, record["artifact_sha256"], final)

    def key(self, parts: list[Any]) -> str:
        """The stage cache key: ``parts`` (input digests, kind, params) plus data, seed and versions."""
        return _sha([CACHE_VERSION, self.version, self.data_sha, self.spec.seed, *parts])

    def cached(self, folder: Path, key: str) -> dict[str, Any] | None:
        """The stage record in ``folder`` when it is committed, made with ``key`` and its files are intact."""
        if not self.resume or not (folder / STAGE_FILE).is_file():
            return None
        try:
            record = read_json(folder / STAGE_FILE)
        except InputError:
            return None
        if not isinstance(record, dict) or record.get("key") != key or "stage" not in record:
            return None
        if record.get("artifact_sha256") != _folder_digest(folder):
            return None  # files changed or damaged since: recompute
        return record

    def _cached_eval(self, folder: Path, record: dict[str, Any], eval_key: str) -> EvalResult | None:
        path = folder / EVAL_FILE
        if record.get("eval_key") != eval_key or not path.is_file() or sha256_file(path) != record.get("eval_sha256"):
            return None
        stage = record["stage"]
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception:  # a damaged cache is recomputed, never trusted
            return None
        samples = {k.split("::", 1)[1]: v for k, v in arrays.items() if k.startswith("latency::")}
        return EvalResult(stage["metrics"], stage["fidelity"], stage["latency"], stage["footprint"],
                          arrays["logits"], arrays["probabilities"], samples, [],
                          {k: stage[k] for k in EXTRA_SECTIONS if k in stage}, arrays.get("embeddings"))

    def _prepare_partial(self, partial: Path, key: str) -> None:
        """Reuse the partial folder of an interrupted attempt with the same key (e.g. train checkpoints)."""
        key_file = partial / _KEY_FILE
        same = self.resume and key_file.is_file() and key_file.read_text(encoding="utf-8").strip() == key
        if not same:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            with atomic_write(key_file, "w") as handle:
                handle.write(key)
        (partial / STAGE_FILE).unlink(missing_ok=True)

    def _gates(self, report: dict[str, Any], done: list[_Done], reference: _Done | None) -> str | None:
        """Judge ``spec.gates`` on the final stage against the reference (the original, or the trained model) with
        the compare module's paired tests; store the verdicts in the final stage. Returns the failure summary."""
        baseline = reference or done[0]
        if not self.spec.gates or done[-1] is baseline:
            return None
        from .reports.compare import compare_reports

        predictions = predictions_of(self.data.eval.y, [(d.name, d.result) for d in done])
        comparison = compare_reports(report, report, gates=self.spec.gates, baseline_stage=baseline.name,
                                     candidate_stage=done[-1].name, baseline_predictions=predictions,
                                     candidate_predictions=predictions, baseline_source=str(self.out_dir),
                                     candidate_source=str(self.out_dir))
        report["stages"][-1]["gates"] = comparison.gate_entries()
        report["stages"][-1]["notes"].extend(f"gates: {note}" for note in comparison.notes)
        return None if comparison.passed else comparison.summary()

    def _prune_stale(self, keep: set[str]) -> None:
        """After a complete run, drop stage folders that are no longer in the plan (older, longer pipelines)."""
        for child in self.stages_dir.iterdir():
            stale_final = child.is_dir() and not child.name.startswith(".") and child.name not in keep
            if stale_final or (child.name.endswith(PARTIAL) and child.name[1:-len(PARTIAL)] not in keep):
                shutil.rmtree(child, ignore_errors=True)


# ---- helpers -----------------------------------------------------------------------------------------------------
def _modelpress_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("modelpress")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _loader(folder: Path) -> Callable[[], ModelArtifact]:
    cache: list[ModelArtifact] = []

    def load() -> ModelArtifact:
        if not cache:
            cache.append(load_model(str(folder)))
        return cache[0]

    return load


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _sha(parts: list[Any]) -> str:
    return hashlib.sha256(_canonical(parts).encode()).hexdigest()


def _artifact_digest(artifact: ModelArtifact) -> str:
    """Content digest of a loaded model: its files, or (in memory) its tensors, plus how it is rebuilt."""
    digest = hashlib.sha256(_canonical([artifact.format, artifact.source, artifact.n_classes,
                                        [s.to_json() for s in artifact.inputs], artifact.builder,
                                        artifact.transforms]).encode())
    files = artifact.files()
    if files:
        for f in files:
            digest.update(sha256_file(f).encode())
    elif artifact.module is not None:
        from .io import sha256_arrays

        state = artifact.module.state_dict()
        digest.update(_canonical(sorted(state)).encode())
        digest.update(sha256_arrays(*(v.detach().cpu().numpy() for v in state.values())).encode())
    return digest.hexdigest()


def _folder_digest(folder: Path) -> str:
    """Digest of what a stage folder's artifact computes: every file but the cache records and temp files, and of
    manifest.json only how the model is rebuilt, not its ``metadata`` (training logs, wall-clock costs), so a stage
    recomputed into byte-identical weights leaves the stages after it cached."""
    digest = hashlib.sha256()
    skip = {STAGE_FILE, EVAL_FILE, _KEY_FILE}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip or path.name.endswith(TMP_SUFFIX) or rel.startswith("checkpoints/"):
            continue
        if rel == MANIFEST:
            try:
                manifest = read_json(path)
            except (InputError, RecursionError):  # damaged: hash the bytes, so the cache record no longer matches
                manifest = sha256_file(path)
            if isinstance(manifest, dict):
                manifest.pop("metadata", None)
            digest.update(f"{rel}\0{_sha([manifest])}\n".encode())
            continue
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _save_eval(path: Path, result: EvalResult) -> str:
    arrays = {"logits": result.logits.astype(np.float32), "probabilities": result.probabilities.astype(np.float32)}
    arrays.update({f"latency::{k}": np.asarray(v) for k, v in result.latency_samples.items()})
    if result.embeddings is not None:
        arrays["embeddings"] = result.embeddings.astype(np.float32)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return sha256_file(path)


def _commit(partial: Path, final: Path) -> None:
    """Rename the finished partial folder into place; an older final folder is moved aside, then removed."""
    (partial / _KEY_FILE).unlink(missing_ok=True)
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def refuse_inside_inputs(out: Path, inputs: Sequence[str | None], *, option: str = "--out") -> None:
    """One rule for every command that writes: an output may not be an input, contain one, or lie inside one
    (``prune ART -o ART/sub`` would write into the artifact it reads)."""
    resolved = Path(out).resolve()
    for ref in inputs:
        if not ref:
            continue
        candidate = Path(str(ref).split("@", 1)[0])
        if not candidate.exists():
            continue
        inp = candidate.resolve()
        if inp == resolved or resolved in inp.parents:
            how = "is" if inp == resolved else "contains"
            raise InputError(f"output {out} {how} the input {ref}", hint=f"choose another {option} folder")
        if inp.is_dir() and inp in resolved.parents:
            raise InputError(f"output {out} is inside the input {ref}",
                             hint=f"choose an {option} folder outside the input")


def check_output_folder(folder: Path, *, option: str = "--out") -> None:
    """Refuse an output folder that is, or lies under, an existing regular file (exit 2 instead of a
    NotADirectoryError halfway through), or whose nearest existing folder is read-only."""
    for candidate in (folder, *folder.parents):
        if not candidate.exists():
            continue
        if not candidate.is_dir():
            where = "exists" if candidate == folder else f"is under {candidate}, which exists"
            raise InputError(f"output {folder} {where} and is not a folder", hint=f"choose another {option}")
        if candidate != folder and not os.access(candidate, os.W_OK):
            raise InputError(f"cannot write to {candidate} (read-only)", hint=f"choose another {option}")
        return


def _check_run_folder(out_dir: Path) -> None:
    check_output_folder(out_dir)
    ours = any((out_dir / n).exists() for n in (STAGES_DIR, REPORT_FILENAME, ".lock"))
    if out_dir.is_dir() and any(out_dir.iterdir()) and not ours:
        raise InputError(f"output folder {out_dir} exists, is not empty and is not a modelpress run folder",
                             hint="choose another --out or pipeline name")
    parent = out_dir.resolve().parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} (read-only)", hint="choose another --out")


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One run per folder at a time: a second ``run`` on the same folder fails instead of interleaving writes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    with open(out_dir / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another modelpress run is writing {out_dir}",
                             hint="wait for it to finish or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
