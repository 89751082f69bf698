"""Run stages in order, evaluate every result with the same evaluator and data, write one report; cache and resume.

The run folder's layout and commit rules are in :mod:`.run_folder`, the cache keys and what a run may reuse in
:mod:`.cache`, a stage's report entry in :mod:`.record`. This module decides the order: load and check the inputs
before any stage, then for each stage reuse it or run it in its partial folder, evaluate what was saved exactly as a
user will load it, rewrite the report, and judge the gates at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import progress
from ..artifacts import MANIFEST, ModelArtifact, check_inputs
from ..compress.registry import COST_KEY, StageConfig, StageContext, run_stage
from ..data import Dataset, load_data, overlap, parse_data
from ..errors import BackendUnavailable, GateFailed, InputError
from ..evaluate.evaluator import EvalResult, evaluate
from ..io import read_json, remove_stale_temps, write_json
from ..reports import new_report, write_report
from ..reports.schema import machine_fingerprint
from ..sources import load_model, parse_model, trusted_code
from . import run_folder
from .cache import (
    CACHE_VERSION,
    StageStore,
    artifact_digest,
    cached_eval,
    cached_record,
    canonical,
    folder_digest,
    modelpress_version,
    save_eval,
    sha,
)
from .record import predictions_of, stage_entry, stage_record
from .run_folder import EVAL_FILE, STAGE_FILE, STAGES_DIR, stage_dir_name
from .spec import DataSpec, PipelineSpec
from .timing import TimedStage, retime


@dataclass
class RunData:
    eval: Dataset
    train: Dataset | None
    calibration: Dataset | None

    def sha256(self) -> str:
        parts = [d.sha256() if d is not None else "-" for d in (self.eval, self.train, self.calibration)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def load_run_data(spec: DataSpec, *, need_train: bool) -> RunData:
    """Eval data as named (a file whole, a bundled ``sklearn:`` set's test split); training and calibration data as
    named, else ``EVAL#train`` (which overlaps a whole-file eval: :func:`overlap_warnings` says so)."""
    eval_data = load_data(spec.eval, split="test", label_column=spec.label_column)
    train = None
    if spec.train or need_train:
        unsplit = dataclasses.replace(parse_data(spec.eval), split=None)
        train = load_data(spec.train or f"{unsplit}#train", label_column=spec.label_column)
    calib = load_data(spec.calibration, split="train", label_column=spec.label_column) if spec.calibration else train
    return RunData(eval_data, train, calib)


def overlap_warnings(data: RunData) -> list[str]:
    """A warning per training / calibration set that holds evaluation samples: a stage that trains or calibrates
    on them is judged on samples it saw (a data file is used whole for evaluation, so ``FILE#train`` overlaps it)."""
    warnings: list[str] = []
    seen: list[Dataset] = []
    for role, used in (("training", data.train), ("calibration", data.calibration)):
        if used is None or any(used is s for s in seen):
            continue
        seen.append(used)
        shared = overlap(used, data.eval)
        if shared:
            warnings.append(f"{role} data {used.source} ({used.split}) holds {shared} of the {len(data.eval)} "
                            f"evaluation samples: a stage that trains or calibrates on it is evaluated on samples "
                            f"it saw; give data.eval FILE#test or separate data.train / data.calibration")
    return warnings


def tensorboard_dir(spec: PipelineSpec, out_dir: Path) -> Path:
    """Where ``tensorboard:`` writes: ``true`` → ``<run folder>/tensorboard``; a folder (relative to the spec's
    folder, like every path in a spec) → that folder. Runs go to ``<folder>/<name>/<stage>/``."""
    return out_dir / "tensorboard" if spec.tensorboard is True else Path(str(spec.tensorboard))


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


@dataclass
class PlannedStage:
    """One line of a dry run: the stage folder, its kind and params, and ``cached`` or ``will run``."""

    name: str
    kind: str
    params: dict[str, Any]
    status: str
    optional: bool = False


def run_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True,
                 store: StageStore | None = None) -> dict[str, Any]:
    """Run every stage of ``spec`` into the run folder ``out_dir`` and return the report written there."""
    return execute_pipeline(spec, out_dir=out_dir, resume=resume, store=store).report


def execute_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True,
                     store: StageStore | None = None) -> RunOutcome:
    """Validate inputs (data, model), then run, cache and report every stage; see the module docstring.

    Raises:
        InputError: a data reference or the model does not load, or data and model do not fit (before any stage).
        GateFailed: a gate in ``spec.gates`` failed (the report, with the gate results, is written first).
    """
    with trusted_code(spec.named_code()):  # artifact folders may rebuild only with factories the spec names
        return _execute(spec, out_dir=Path(out_dir), resume=resume, store=store)


def _inputs(spec: PipelineSpec) -> list[str | None]:
    return [*spec.named_code(), spec.weights, spec.data.eval, spec.data.train, spec.data.calibration]


def _execute(spec: PipelineSpec, *, out_dir: Path, resume: bool, store: StageStore | None = None) -> RunOutcome:
    run_folder.refuse_inside_inputs(out_dir, _inputs(spec))
    run_folder.check_run_folder(out_dir)
    if spec.tensorboard:
        from ..evaluate.tensorboard import require_tensorboard

        require_tensorboard()  # exit 3 before any stage runs, not after
    data = load_run_data(spec.data, need_train=bool(spec.stages))
    original = load_original(spec, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_folder.locked(out_dir):
        remove_stale_temps(out_dir)
        stages_dir = out_dir / STAGES_DIR
        stages_dir.mkdir(exist_ok=True)
        run_folder.remove_moved_aside(stages_dir)
        return _Runner(spec, out_dir, data, resume=resume, store=store).run(original)


def plan_pipeline(spec: PipelineSpec, *, out_dir: Path, resume: bool = True) -> tuple[RunData, list[PlannedStage]]:
    """Validate everything a run would (data loads and is non-empty, the model loads and fits the data) and say
    which stages a run would reuse from ``out_dir`` and which it would compute. Writes nothing."""
    out_dir = Path(out_dir)
    run_folder.refuse_inside_inputs(out_dir, _inputs(spec))
    run_folder.check_run_folder(out_dir)
    data = load_run_data(spec.data, need_train=bool(spec.stages))
    with trusted_code(spec.named_code()):
        original = load_original(spec, data)
    runner = _Runner(spec, out_dir, data, resume=resume)
    leading_train = _leading_train(spec)
    digest: str | None = artifact_digest(original)
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
            parts = [digest, teacher, kind, canonical(params)]
        record = None
        if digest is not None and teacher is not None:
            key = runner.key(parts)
            record = runner.cached(out_dir / STAGES_DIR / name, key) or runner.cached(
                run_folder.partial_dir(out_dir / STAGES_DIR, name), key)
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
    if parse_model(spec.model).scheme == "zoo":
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


@dataclass
class _Input:
    """A stage's input: loaded only when the stage really runs; its metadata tells what the next stage added."""

    load: Callable[[], ModelArtifact]
    metadata: Callable[[], dict[str, Any]]
    digest: str


def _from_folder(folder: Path, digest: str) -> _Input:
    cache: list[ModelArtifact] = []

    def load() -> ModelArtifact:
        if not cache:
            cache.append(load_model(str(folder)))
        return cache[0]

    def metadata() -> dict[str, Any]:
        """The saved manifest's metadata (what :func:`load_model` would give), without loading the weights."""
        with suppress(InputError):
            manifest = read_json(folder / MANIFEST)
            if isinstance(manifest, dict) and isinstance(manifest.get("metadata"), dict):
                return manifest["metadata"]
        return load().metadata

    return _Input(load, metadata, digest)


class _Runner:
    def __init__(self, spec: PipelineSpec, out_dir: Path, data: RunData, *, resume: bool,
                 store: StageStore | None = None) -> None:
        self.spec, self.out_dir, self.data, self.resume = spec, out_dir, data, resume
        self.store = store  # shared stage folders by key (a search's trials); None: this run folder only
        self.stages_dir = out_dir / STAGES_DIR
        self.version = modelpress_version()
        self.data_sha = data.sha256()
        self.eval_data_sha = data.eval.sha256()
        evaluation = dataclasses.asdict(spec.evaluate)
        evaluation["latency"].pop("rounds", None)  # how the run re-times its stages at the end, not an evaluation
        self.eval_json = json.dumps(evaluation, sort_keys=True, default=str)
        # With interleaved re-timing on, every stage is timed at the end of the run (pipeline/timing.py): timing it
        # here as well would take as long again for numbers that are replaced.
        self.eval_config = spec.evaluate
        if spec.evaluate.measure_latency and spec.evaluate.latency.interleaved:
            self.eval_config = dataclasses.replace(spec.evaluate, measure_latency=False)
        self.outcomes: list[StageOutcome] = []
        self.machine = machine_fingerprint(threads=spec.evaluate.threads)

    def run(self, original: ModelArtifact) -> RunOutcome:
        spec = self.spec
        leading_train = _leading_train(spec)
        planned = (["00-original"] if leading_train == 0 else []) + [
            stage_dir_name(i, c.kind) for i, c in enumerate(spec.stages, start=1)]
        report = new_report(spec.name, data=self.data.eval.describe(), threads=spec.evaluate.threads)
        overlaps = overlap_warnings(self.data) if spec.stages else []
        if overlaps:
            report["data"]["warnings"] = overlaps
        report["pipeline"] = {"spec": spec.source, "stages_planned": planned, "complete": False, "skipped": [],
                              "gates": dict(spec.gates), "cache": "resume" if self.resume else "recomputed"}
        done: list[_Done] = []
        given = _Input(lambda: original, lambda: {}, artifact_digest(original))
        teacher = current = given
        reference: _Done | None = None
        with progress.bar(len(planned), spec.name, unit="stage", leave=True) as bar:
            if leading_train == 0:
                bar.set_description_str(f"{spec.name} [1/{len(planned)}] original")
                step = self._step("00-original", "original", {"model": spec.model}, [given.digest],
                                  lambda work, _notes: original.save(work), given, reference=None, optional=False)
                if step is None:  # only optional stages are skipped; the original never is
                    raise RuntimeError("the original model was skipped")
                self._record(report, done, step, bar)
                reference, current = step, _from_folder(step.folder, step.digest)
            for index, config in enumerate(spec.stages, start=1):
                name = stage_dir_name(index, config.kind)
                bar.set_description_str(f"{spec.name} [{len(done) + 1}/{len(planned)}] {config.kind}")
                step = self._step(name, config.kind, config.params(),
                                  [current.digest, teacher.digest, config.kind, canonical(config.params())],
                                  self._producer(config, current, teacher), current, reference=reference,
                                  optional=(index - 1) in spec.optional)
                if step is None:
                    report["pipeline"]["skipped"].append({"name": name, "kind": config.kind,
                                                          "reason": self.outcomes[-1].note})
                    bar.update(1)
                    continue
                self._record(report, done, step, bar)
                current = _from_folder(step.folder, step.digest)
                if index == leading_train:
                    teacher, reference = current, step
        if not done:
            raise InputError("the pipeline produced no stage to report")
        for skip in report["pipeline"]["skipped"]:
            done[-1].stage["notes"].append(f"optional stage {skip['name']} was skipped: {skip['reason']}")
        done[-1].stage["notes"].extend(f"warning: {w}" for w in overlaps)
        report["pipeline"]["complete"] = True
        report["pipeline"]["latency"] = self._retime(done, reference)
        failed = self._gates(report, done, reference)
        self._write(report, done, final=True)
        if spec.tensorboard:
            from ..evaluate.tensorboard import write_tensorboard

            write_tensorboard(report, tensorboard_dir(spec, self.out_dir))
        run_folder.prune_stale(self.stages_dir, {d.name for d in done})
        if failed:
            raise GateFailed(f"{done[-1].name}: {failed}", hint=f"see {self.out_dir / 'report.md'}")
        return RunOutcome(report, self.out_dir, self.outcomes)

    def _retime(self, done: list[_Done], reference: _Done | None) -> dict[str, Any] | None:
        """Every stage and the reference timed again, interleaved, on this machine (:mod:`.timing`)."""
        export = next((c.params() for c in self.spec.stages if c.kind == "export"), None)
        return retime([TimedStage(d.name, d.stage, d.folder, d.result) for d in done],
                      next(TimedStage(d.name, d.stage, d.folder, d.result) for d in done
                           if d is (reference or done[0])),
                      data=self.data.eval, config=self.spec.evaluate, machine=self.machine, work_dir=self.out_dir,
                      export=export)

    def _producer(self, config: StageConfig, current: _Input,
                  teacher: _Input) -> Callable[[Path, list[str]], ModelArtifact]:
        """The stage's work: input and original artifacts (loaded only when the stage really runs) → saved."""

        def produce(work: Path, notes: list[str]) -> ModelArtifact:
            ctx = StageContext(work_dir=work, train=self.data.train, eval=self.data.eval,
                               calibration=self.data.calibration, original=teacher.load(), seed=self.spec.seed,
                               threads=self.spec.evaluate.threads, notes=notes)
            return run_stage(current.load(), config, ctx).save(work)

        return produce

    def _record(self, report: dict[str, Any], done: list[_Done], step: _Done, bar: Any) -> None:
        width = int(step.result.probabilities.shape[1]) if step.result.probabilities.ndim == 2 else 0
        if not done and width:  # the class count is the model's, as evaluate reports it (0: embeddings, no scores:
            # the data's block stays)
            names = [str(n) for n in step.result.class_names] if len(step.result.class_names) == width else []
            if not names:
                given = [str(n) for n in self.data.eval.class_names[:width]]
                names = [*given, *(str(i) for i in range(len(given), width))]
            report["data"].update(n_classes=width, class_names=names)
        done.append(step)
        report["stages"].append(step.stage)
        self._write(report, done)
        bar.update(1)

    def _write(self, report: dict[str, Any], done: list[_Done], *, final: bool = False) -> None:
        """report.html, then predictions.npz, report.md and report.json last. Plots are drawn for the final report
        only (about a second each time); an interrupted run's page shows the table and says it is incomplete."""
        from ..reports.html import write_html

        predictions = predictions_of(self.data.eval.y, [(d.name, d.result) for d in done])
        write_html(report, self.out_dir, predictions=predictions, with_plots=final)
        write_report(report, self.out_dir, predictions=predictions)

    # ---- one stage: cached, or run in its partial folder and committed -------------------------------------------
    def _step(self, name: str, kind: str, params: dict[str, Any], key_parts: list[Any],
              produce: Callable[[Path, list[str]], ModelArtifact], given: _Input, *, reference: _Done | None,
              optional: bool) -> _Done | None:
        start = time.perf_counter()
        key = self.key(key_parts)
        final = self.stages_dir / name
        partial = run_folder.partial_dir(self.stages_dir, name)
        record, folder = self.cached(final, key), final
        if record is None:
            record, folder = self.cached(partial, key), partial  # finished, but killed before its rename
        status = "cached"
        if record is None:
            run_folder.prepare_partial(partial, key, resume=self.resume)
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
                      "modelpress_version": self.version, "artifact_sha256": folder_digest(partial),
                      "notes": notes, "stage_seconds": round(time.perf_counter() - start, 3)}
            status, folder = "ran", partial
        ref_logits = reference.result.logits if reference else None
        eval_key = sha([record["artifact_sha256"], self.eval_json, self.eval_data_sha, self.version,
                        reference.name if reference else None,
                        hashlib.sha256(ref_logits.tobytes()).hexdigest() if ref_logits is not None else None])
        result = cached_eval(folder, record, eval_key) if status == "cached" else None
        if result is not None and isinstance(record.get("class_names"), list):
            result.class_names = tuple(str(n) for n in record["class_names"])
        if result is None:
            artifact = load_model(str(folder))  # judge what was saved, exactly as a user will load it
            result = evaluate(artifact, self.data.eval, config=self.eval_config, reference_logits=ref_logits,
                              reference_name=reference.name if reference else None,
                              reference_embeddings=reference.result.embeddings if reference else None)
            described = artifact.describe(relative_to=folder)
            described["path"] = f"{STAGES_DIR}/{name}/{described['path']}" if described["path"] else None
            cost = None
            if kind != "original":  # what making it cost: the stage's own record (COST_KEY) and its wall time
                cost = {**(artifact.metadata.get(COST_KEY) or {}), "stage_wall_s": record.get("stage_seconds")}
            stage = stage_entry(name, kind, params, artifact=described, result=result, notes=record["notes"],
                                record=stage_record(artifact.metadata, before=given.metadata()), cost=cost)
            for row in stage["latency"]:  # where it was measured: a cached row from elsewhere is then known
                row.setdefault("machine_id", self.machine["id"])
            eval_sha = save_eval(folder / EVAL_FILE, result)
            record.update(eval_key=eval_key, eval_sha256=eval_sha, stage=stage, class_names=list(result.class_names))
            write_json(folder / STAGE_FILE, record)  # the commit marker, last
            status = "re-evaluated" if status == "cached" else status
        if folder != final:
            run_folder.commit(folder, final)
        if self.store is not None:
            self.store.publish(key, final)
        stage = json.loads(json.dumps(record["stage"]))  # a private copy: notes may be appended later
        self.outcomes.append(StageOutcome(name, kind, status, time.perf_counter() - start))
        return _Done(name, stage, result, record["artifact_sha256"], final)

    def key(self, parts: list[Any]) -> str:
        """The stage cache key: ``parts`` (input digests, kind, params) plus data, seed and versions."""
        return sha([CACHE_VERSION, self.version, self.data_sha, self.spec.seed, *parts])

    def cached(self, folder: Path, key: str) -> dict[str, Any] | None:
        """The committed stage record in ``folder`` made with ``key`` (``None`` when not resuming)."""
        if not self.resume:
            return None
        record = cached_record(folder, key)
        if record is None and self.store is not None and self.store.fetch(key, folder):
            record = cached_record(folder, key)
        return record

    def _gates(self, report: dict[str, Any], done: list[_Done], reference: _Done | None) -> str | None:
        """Judge ``spec.gates`` on the final stage against the reference (the original, or the trained model) with
        the compare module's paired tests; store the verdicts in the final stage. Returns the failure summary."""
        baseline = reference or done[0]
        if not self.spec.gates or done[-1] is baseline:
            return None
        from ..reports.compare import compare_reports

        predictions = predictions_of(self.data.eval.y, [(d.name, d.result) for d in done])
        comparison = compare_reports(report, report, gates=self.spec.gates, baseline_stage=baseline.name,
                                     candidate_stage=done[-1].name, baseline_predictions=predictions,
                                     candidate_predictions=predictions, baseline_source=str(self.out_dir),
                                     candidate_source=str(self.out_dir))
        report["stages"][-1]["gates"] = comparison.gate_entries()
        report["stages"][-1]["notes"].extend(f"gates: {note}" for note in comparison.notes)
        return None if comparison.passed else comparison.summary()
