"""Run a search's trials: a local process pool (default) or Ray, one shared stage store, resumable, crash-tolerant.

The search folder ``OUT/<name>/``::

    trials.json          the ledger: every finished trial (status, params, objective values, gates), written
                         atomically after each one; a killed search reruns only what is not in it
    trials/tNNN/         each trial is an ordinary run folder (``modelpress compare`` works between any two)
    trials/tNNN.yaml     the trial's pipeline, runnable as is
    store/<key>/         committed stage folders by stage cache key (:class:`~modelpress.pipeline.cache.StageStore`)

A trial is one :func:`~modelpress.pipeline.execute_pipeline` call in a worker process with the store attached, so a
stage that an earlier trial (or a worker running at the same time) computed with the same key is copied, not rerun.
Statuses: ``ok`` (ran, meets the constraints), ``infeasible`` (ran, misses a gate or a bound), ``failed`` (an error,
or its worker died twice: a trial whose worker dies is retried once on a fresh worker).

Workers: ``--workers N`` starts N spawned processes (nothing to install); ``--ray`` starts a local Ray with N CPUs,
``--ray ADDRESS`` joins a running cluster (its workers need modelpress installed and the search folder on a shared
file system). An address that does not answer fails in :data:`RAY_CONNECT_TIMEOUT_S` seconds, exit 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, GateFailed, InputError, ModelpressError
from ..io import read_json, write_json, write_text
from ..pipeline.run_folder import EVAL_FILE, STAGES_DIR, check_output_folder, locked
from .pareto import Estimate, median_interval, wilson_interval
from .samplers import make_sampler
from .spec import SearchSpec

__all__ = ["RAY_CONNECT_TIMEOUT_S", "SearchResult", "run_search", "run_trial", "trial_estimates"]

TRIALS_FILE = "trials.json"
TRIALS_DIR = "trials"
STORE_DIR = "store"
LOCK_FILE = ".search.lock"
MAX_ATTEMPTS = 2  # a trial whose worker dies is retried once, then marked failed
RAY_CONNECT_TIMEOUT_S = 30.0


@dataclass
class SearchResult:
    folder: Path
    trials: list[dict[str, Any]]
    resumed: int = 0
    stage_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# ---- one trial, in a worker ----------------------------------------------------------------------------------------
def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """Run one trial's pipeline into its run folder with the shared store; never raises (the status says)."""
    from .. import progress
    from ..pipeline import parse_spec
    from ..pipeline.cache import StageStore
    from ..pipeline.runner import execute_pipeline

    progress.set_quiet(True)
    start = time.perf_counter()
    store = StageStore(task["store"])
    out: dict[str, Any] = {"id": task["id"], "status": "failed", "error": None, "stages": {}}
    try:
        base_dir = Path(task["base_dir"]) if task.get("base_dir") else None
        spec = parse_spec(task["yaml"], source=task["yaml_path"], base_dir=base_dir)
        try:
            outcome = execute_pipeline(spec, out_dir=Path(task["run_dir"]), store=store)
            out["status"] = "ok"
            out["stages"] = {s.name: s.status for s in outcome.stages}
        except GateFailed as exc:
            out["status"], out["error"] = "infeasible", exc.format_message()
    except ModelpressError as exc:
        out["error"] = exc.format_message()
    except Exception as exc:  # a trial's bug must not end the search: recorded, the search goes on
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc(limit=8)
    finally:
        store.release()
    out["seconds"] = round(time.perf_counter() - start, 3)
    out["store_hits"], out["stage_runs"] = store.hits, store.published
    return out


# ---- pools -----------------------------------------------------------------------------------------------------
class _Pool:
    """``submit(task)`` when :meth:`idle`; :meth:`wait` → finished ``(task, result)`` pairs, result ``None`` when the
    worker died."""

    def idle(self) -> int:
        raise NotImplementedError

    def submit(self, task: dict[str, Any]) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _worker_main(conn: Connection, threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(json.dumps(run_trial(task), default=str))


class LocalPool(_Pool):
    """N spawned worker processes (spawn: no forked torch or thread state), one trial at a time each."""

    def __init__(self, workers: int, threads: int) -> None:
        self.ctx = mp.get_context("spawn")
        self.workers, self.threads = workers, threads
        self.slots: list[dict[str, Any]] = [self._start() for _ in range(workers)]

    def _start(self) -> dict[str, Any]:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.threads), daemon=True)
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "task": None}

    def idle(self) -> int:
        return sum(1 for s in self.slots if s["task"] is None)

    def submit(self, task: dict[str, Any]) -> None:
        slot = next(s for s in self.slots if s["task"] is None)
        if not slot["proc"].is_alive():
            slot.update(self._start())
        slot["task"] = task
        slot["conn"].send(task)

    def wait(self, timeout: float | None = None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        busy = [s for s in self.slots if s["task"] is not None]
        if not busy:
            return []
        ready = wait([s["conn"] for s in busy] + [s["proc"].sentinel for s in busy], timeout)
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for slot in busy:
            result = None
            if slot["conn"] in ready:
                with contextlib.suppress(EOFError, OSError):
                    result = json.loads(slot["conn"].recv())
            if result is None and slot["proc"].sentinel not in ready and slot["conn"] not in ready:
                continue
            done.append((slot["task"], result))
            slot["task"] = None
            if result is None:  # the worker died mid-trial: a fresh one takes its place
                slot["proc"].join(timeout=5)
                with contextlib.suppress(OSError):
                    slot["conn"].close()
                slot.update(self._start())
        return done

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError, BrokenPipeError):
                slot["conn"].send(None)
        for slot in self.slots:
            slot["proc"].join(timeout=5)
            if slot["proc"].is_alive():
                slot["proc"].terminate()
                slot["proc"].join(timeout=5)


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--ray needs ray, which is not installed",
                                 hint="pip install 'modelpress[ray]' (or drop --ray to use local processes)") from None
    return ray


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """A ``host:port`` that accepts a TCP connection within ``timeout`` seconds, else exit 2 (no hang)."""
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray address {address!r} is not HOST:PORT", hint="e.g. --ray 10.0.0.5:6379, or --ray "
                         "alone for a local Ray")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(f"the Ray cluster at {address} does not answer ({exc.strerror or exc})",
                         hint="check the head node's address and port (ray start --head prints it)") from None


class RayPool(_Pool):
    """Trials as Ray tasks (1 CPU each, no automatic retries: the search retries a dead worker's trial once)."""

    def __init__(self, address: str | None, workers: int, threads: int) -> None:
        ray = require_ray()
        self.ray = ray
        self.workers = workers
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
        if address:
            check_ray_address(address)  # an address that does not answer: exit 2 now, not Ray's long retry loop
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers
        try:
            ray.init(**kwargs)  # in the main thread: Ray installs signal handlers and watches its GCS from here
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise InputError(f"could not start or join {where}: {' '.join(str(exc).split())[:300]}",
                             hint="check the address (ray start --head prints it), or run without --ray") from None
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)
        self.running: dict[Any, dict[str, Any]] = {}

    def idle(self) -> int:
        return max(0, self.workers - len(self.running))

    def submit(self, task: dict[str, Any]) -> None:
        self.running[self.remote.remote(task)] = task

    def wait(self, timeout: float | None = None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        if not self.running:
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for ref in ready:
            task = self.running.pop(ref)
            try:
                done.append((task, self.ray.get(ref)))
            except self.ray.exceptions.RayError:  # the worker process died (or was lost with its node)
                done.append((task, None))
        return done

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ray.shutdown()


# ---- the search loop -----------------------------------------------------------------------------------------------
def load_ledger(folder: Path, spec: SearchSpec) -> list[dict[str, Any]]:
    """The finished trials of an earlier run of this same search (``[]`` when none); another search's: exit 2."""
    path = folder / TRIALS_FILE
    if not path.is_file():
        return []
    ledger = read_json(path)
    if not isinstance(ledger, dict) or not isinstance(ledger.get("trials"), list):
        raise InputError(f"{path} is not a search ledger", hint="choose another --out")
    if ledger.get("spec_digest") != spec.digest():
        raise InputError(f"{folder} holds the trials of a different search (the base, space, objectives or "
                         f"constraints changed)", hint="choose another --out, or --restart to discard them")
    return [t for t in ledger["trials"] if isinstance(t, dict) and t.get("status") in ("ok", "infeasible", "failed")]


def write_ledger(folder: Path, spec: SearchSpec, trials: list[dict[str, Any]]) -> None:
    write_json(folder / TRIALS_FILE, {"search": spec.name, "spec": spec.source, "spec_digest": spec.digest(),
                                      "objectives": [o.name for o in spec.objectives], "trials": trials})


def run_search(spec: SearchSpec, *, out: Path, workers: int = 1, ray: str | None = None, restart: bool = False,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) the search into ``out/<name>/``; see the module docstring. ``ray``: ``"local"`` or an
    address. Returns every trial recorded (earlier ones included)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers must be an integer ≥ 1, got {workers!r}")
    folder = Path(out) / spec.name
    check_output_folder(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / TRIALS_FILE).exists() and not (
            folder / LOCK_FILE).exists():
        raise InputError(f"output folder {folder} exists, is not empty and is not a search folder",
                         hint="choose another --out or search name")
    folder.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    start = time.monotonic()
    with locked(folder, lock_file=LOCK_FILE, holder="modelpress search"):
        if restart:
            (folder / TRIALS_FILE).unlink(missing_ok=True)
        finished = load_ledger(folder, spec)
        trials: list[dict[str, Any]] = list(finished)
        if finished:
            say(f"resuming: {len(finished)} finished trial(s) in {folder / TRIALS_FILE} are not rerun")
        sampler = make_sampler(spec, finished)
        limit = spec.trials if spec.trials is not None else math.inf
        deadline = start + spec.minutes * 60 if spec.minutes else math.inf
        (folder / TRIALS_DIR).mkdir(exist_ok=True)
        numbers = [int(t["id"][1:]) for t in trials if str(t.get("id", "")).startswith("t")]
        next_number = max(numbers, default=-1) + 1
        pool: _Pool = RayPool(None if ray == "local" else ray, workers, spec.threads) if ray else LocalPool(
            workers, spec.threads)
        attempts: dict[str, int] = {}
        running = 0
        exhausted = False
        try:
            while True:
                while (not exhausted and pool.idle() > 0 and len(trials) + running < limit
                       and time.monotonic() < deadline):
                    values = sampler.ask()
                    if values is None:
                        exhausted = True
                        break
                    task = _task(spec, folder, f"t{next_number:03d}", values)
                    next_number += 1
                    attempts[task["id"]] = 1
                    pool.submit(task)
                    running += 1
                    say(f"{task['id']} started: {_params_text(values)}")
                if running == 0:
                    break
                for task, result in pool.wait(timeout=1.0):
                    if result is None and attempts[task["id"]] < MAX_ATTEMPTS:
                        attempts[task["id"]] += 1
                        say(f"{task['id']}: its worker died; retrying once")
                        pool.submit(task)  # the slot it held is free again
                        continue
                    running -= 1
                    if result is None:
                        result = {"id": task["id"], "status": "failed", "seconds": None, "stages": {},
                                  "error": f"its worker died {MAX_ATTEMPTS} times (killed, out of memory, crashed)"}
                    record = _record(spec, folder, task, result, attempts[task["id"]])
                    trials.append(record)
                    sampler.tell(task["values"], record.get("objective_values"), record.get("violation"))
                    trials.sort(key=lambda t: t["id"])
                    write_ledger(folder, spec, trials)
                    say(_summary_line(spec, record))
        finally:
            pool.close()
        if not trials:
            raise InputError("the search ran no trial", hint="raise budget.trials / budget.minutes")
        write_ledger(folder, spec, trials)
    counts = {"stage_runs": sum(t.get("stage_runs") or 0 for t in trials),
              "stages_from_store": sum(t.get("store_hits") or 0 for t in trials)}
    return SearchResult(folder, trials, resumed=len(finished), stage_counts=counts,
                        seconds=time.monotonic() - start)


def _task(spec: SearchSpec, folder: Path, trial_id: str, values: dict[str, Any]) -> dict[str, Any]:
    name = f"{spec.base.name}-{trial_id}"[:100]
    yaml_path = folder / TRIALS_DIR / f"{trial_id}.yaml"
    header = f"# {spec.name} trial {trial_id}: {_params_text(values)}\n"
    text = spec.trial_yaml(values, name=name, header=header)
    write_text(yaml_path, text)
    return {"id": trial_id, "values": values, "yaml": text, "yaml_path": str(yaml_path),
            "base_dir": str(spec.base_dir) if spec.base_dir else None,
            "run_dir": str((folder / TRIALS_DIR / trial_id).resolve()), "store": str((folder / STORE_DIR).resolve())}


def _params_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('stages.')}={json.dumps(v)}" for k, v in values.items()) or "(base)"


def _summary_line(spec: SearchSpec, record: dict[str, Any]) -> str:
    parts = [f"{record['id']} {record['status']}"]
    for objective, value in zip(spec.objectives, record.get("objective_values") or [], strict=False):
        if value is not None:
            parts.append(f"{objective.label} {objective.metric.format(value)}")
    if record.get("error"):
        parts.append(str(record["error"])[:160])
    return "  ".join(parts)


# ---- reading a finished trial --------------------------------------------------------------------------------------
def _final_stage(report: dict[str, Any]) -> dict[str, Any]:
    stages = report.get("stages") or []
    return stages[-1] if stages else {}


def _latency_row(stage: dict[str, Any], batch: int | None, backend: str | None) -> dict[str, Any] | None:
    for row in stage.get("latency") or []:
        if row.get("batch_size") == batch and (backend is None or row.get("backend") == backend):
            return row
    return None


def trial_estimates(spec: SearchSpec, run_dir: Path) -> tuple[list[float | None], list[list[float | None]],
                                                              dict[str, Any]]:
    """Objective values, their 95 % intervals, and the final stage's gates from a trial's run folder."""
    report = read_json(run_dir / "report.json")
    stage = _final_stage(report)
    n = int((report.get("data") or {}).get("n_samples") or 0)
    values: list[float | None] = []
    intervals: list[list[float | None]] = []
    for objective in spec.objectives:
        metric = objective.metric
        estimate: Estimate | None = None
        if metric.section == "latency":
            row = _latency_row(stage, objective.batch, objective.backend)
            if row is not None and row.get(metric.key) is not None:
                estimate = Estimate.exact(row[metric.key])
                samples = _latency_samples(run_dir, stage, row)
                if metric.key == "median_ms" and samples is not None and samples.size:
                    low, high = median_interval(samples)
                    if low <= float(row[metric.key]) <= high:  # the samples are the row's own
                        estimate = Estimate(float(row[metric.key]), low, high)
        else:
            raw = (stage.get(metric.section) or {}).get(metric.key)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
                if metric.unit == "fraction" and metric.section in ("metrics", "fidelity") and n:
                    estimate = Estimate(float(raw), *wilson_interval(float(raw), n))
                else:
                    estimate = Estimate.exact(raw)
        values.append(None if estimate is None else estimate.value)
        intervals.append([None, None] if estimate is None else [estimate.low, estimate.high])
    return values, intervals, {"gates": stage.get("gates") or [], "stage": stage.get("name"), "final": stage}


def _latency_samples(run_dir: Path, stage: dict[str, Any], row: dict[str, Any]) -> np.ndarray | None:
    """The per-call samples behind a latency row: the run's predictions.npz (what the report's rows were computed
    from, re-timed at the end of the run), else the stage's eval.npz."""
    key = f"{row.get('backend')}::b{row.get('batch_size')}"
    for path, name in ((run_dir / "predictions.npz", f"latency_ms::{stage.get('name')}::{key}"),
                       (run_dir / STAGES_DIR / str(stage.get("name")) / EVAL_FILE, f"latency::{key}")):
        try:
            with np.load(path, allow_pickle=False) as npz:
                if name in npz.files:
                    return np.asarray(npz[name], dtype=np.float64)
        except (OSError, ValueError):
            continue
    return None


def _record(spec: SearchSpec, folder: Path, task: dict[str, Any], result: dict[str, Any],
            attempts: int) -> dict[str, Any]:
    run_dir = folder / TRIALS_DIR / task["id"]
    record: dict[str, Any] = {"id": task["id"], "params": task["values"], "status": result["status"],
                              "attempts": attempts, "seconds": result.get("seconds"), "error": result.get("error"),
                              "stages": result.get("stages") or {}, "run_dir": f"{TRIALS_DIR}/{task['id']}",
                              "pipeline": f"{TRIALS_DIR}/{task['id']}.yaml", "store_hits": result.get("store_hits"),
                              "stage_runs": result.get("stage_runs")}
    if result["status"] in ("ok", "infeasible") and (run_dir / "report.json").is_file():
        values, intervals, extra = trial_estimates(spec, run_dir)
        record["objective_values"], record["intervals"] = values, intervals
        record["gates"] = [{k: g.get(k) for k in ("name", "status", "value", "threshold", "unit", "message")}
                           for g in extra["gates"]]
        violation, reasons = _violation(spec, extra["final"], record["gates"])
        record["violation"], record["violations"] = violation, reasons
        if record["status"] == "ok" and reasons:
            record["status"] = "infeasible"
        if any(v is None for v in values):
            missing = [o.name for o, v in zip(spec.objectives, values, strict=True) if v is None]
            record["status"], record["error"] = "failed", f"the final stage reports no {', '.join(missing)}"
    return record


def _violation(spec: SearchSpec, stage: dict[str, Any], gates: list[dict[str, Any]]) -> tuple[float, list[str]]:
    """How far a trial misses the constraints (0: it meets them; a relative distance summed over misses)."""
    total, reasons = 0.0, []
    for gate in gates:
        if gate.get("status") != "failed":
            continue
        value, threshold = gate.get("value"), gate.get("threshold")
        if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
            total += abs(value - threshold) / max(abs(threshold), 1e-9)
        else:
            total += 1.0
        reasons.append(str(gate.get("message") or gate.get("name")))
    for constraint in spec.constraints:
        if constraint.gate:
            continue
        section, key = constraint.name.split(".", 1)
        value = (stage.get(section) or {}).get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            total += 1.0
            reasons.append(f"{constraint.name} is not reported")
            continue
        if constraint.low is not None and value < constraint.low:
            total += (constraint.low - value) / max(abs(constraint.low), 1e-9)
            reasons.append(f"{constraint.name} {value:g} < {constraint.low:g}")
        if constraint.high is not None and value > constraint.high:
            total += (value - constraint.high) / max(abs(constraint.high), 1e-9)
            reasons.append(f"{constraint.name} {value:g} > {constraint.high:g}")
    return total, reasons
