"""The stage cache: keys, content digests, and the stage records and evaluations a run may reuse.

stage.json records a key = sha256 of (stage kind + params, the digest of the input artifact's files, the digest of the
original model, the data hashes, the seed, the cache format and the modelpress version). A stage whose key matches
and whose artifact files still hash to the recorded digest is not recomputed. Its evaluation is reused as well when
the evaluation key (artifact digest, evaluate settings, data, fidelity reference) matches — latency included, so a
fully cached run reproduces the previous report's numbers exactly; ``resume=False`` recomputes and re-measures
everything. The thread count is not part of the stage key (it changes timings, not what a stage makes).

:class:`StageStore` shares committed stage folders between runs (a search's trials) by their key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import MANIFEST, ModelArtifact
from ..errors import InputError
from ..evaluate.evaluator import EXTRA_SECTIONS, EvalResult
from ..io import TMP_SUFFIX, atomic_write, read_json, sha256_arrays, sha256_file
from .run_folder import EVAL_FILE, KEY_FILE, STAGE_FILE, commit

CACHE_VERSION = 1


def modelpress_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("modelpress")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def sha(parts: list[Any]) -> str:
    return hashlib.sha256(canonical(parts).encode()).hexdigest()


def artifact_digest(artifact: ModelArtifact) -> str:
    """Content digest of a loaded model: its files, or (in memory) its tensors, plus how it is rebuilt."""
    digest = hashlib.sha256(canonical([artifact.format, artifact.source, artifact.n_classes,
                                       [s.to_json() for s in artifact.inputs], artifact.builder,
                                       artifact.transforms]).encode())
    files = artifact.files()
    if files:
        for f in files:
            digest.update(sha256_file(f).encode())
    elif artifact.module is not None:
        state = artifact.module.state_dict()
        digest.update(canonical(sorted(state)).encode())
        digest.update(sha256_arrays(*(v.detach().cpu().numpy() for v in state.values())).encode())
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """Digest of what a stage folder's artifact computes: every file but the cache records and temp files, and of
    manifest.json only how the model is rebuilt, not its ``metadata`` (training logs, wall-clock costs), so a stage
    recomputed into byte-identical weights leaves the stages after it cached."""
    digest = hashlib.sha256()
    skip = {STAGE_FILE, EVAL_FILE, KEY_FILE}
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
            digest.update(f"{rel}\0{sha([manifest])}\n".encode())
            continue
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def cached_record(folder: Path, key: str) -> dict[str, Any] | None:
    """The stage record in ``folder`` when it is committed, made with ``key`` and its files are intact."""
    if not (folder / STAGE_FILE).is_file():
        return None
    try:
        record = read_json(folder / STAGE_FILE)
    except InputError:
        return None
    if not isinstance(record, dict) or record.get("key") != key or "stage" not in record:
        return None
    if record.get("artifact_sha256") != folder_digest(folder):
        return None  # files changed or damaged since: recompute
    return record


def save_eval(path: Path, result: EvalResult) -> str:
    """eval.npz beside the artifact: what a cached stage needs to be reported again without re-running it."""
    arrays = {"logits": result.logits.astype(np.float32), "probabilities": result.probabilities.astype(np.float32)}
    arrays.update({f"latency::{k}": np.asarray(v) for k, v in result.latency_samples.items()})
    if result.embeddings is not None:
        arrays["embeddings"] = result.embeddings.astype(np.float32)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return sha256_file(path)


def cached_eval(folder: Path, record: dict[str, Any], eval_key: str) -> EvalResult | None:
    """The evaluation saved with a stage when its key still matches and eval.npz is intact; else ``None``."""
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


class StageStore:
    """A content-addressed store of committed stage folders, shared by the runs of a search (``store/<key>/``).

    Runs that share a prefix (same model, same first stages with the same params, data and seed) compute each shared
    stage once, whichever process gets there first: :meth:`fetch` takes an exclusive lock on the key (``flock`` on
    ``.locks/<key>.lock``; the kernel drops it when a holder dies) and either copies the stored folder into the run,
    or — on a miss — keeps the lock so that other processes wanting the same stage wait while this one computes it;
    :meth:`publish` copies the committed folder in (temp folder, then one atomic rename) and lets the lock go.
    :meth:`release` lets go of every lock still held (a stage that failed or was skipped). Entries are checked like
    the run folder's own cache (:func:`cached_record`: the key and the files' digest), so a damaged entry is
    recomputed, never trusted.
    """

    LOCKS = ".locks"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / self.LOCKS).mkdir(exist_ok=True)
        self._held: dict[str, Any] = {}
        self.hits = 0
        self.published = 0

    def entry(self, key: str) -> Path:
        return self.root / key

    def fetch(self, key: str, folder: Path) -> bool:
        """Put the stored stage ``key`` at ``folder`` (a run's final stage folder); ``False`` on a miss, holding the
        key's lock until :meth:`publish` or :meth:`release` (a partial folder or a key already held: ``False``)."""
        if folder.name.startswith(".") or key in self._held:
            return False
        handle = self._lock(key)
        entry = self.entry(key)
        if entry.is_dir() and cached_record(entry, key) is not None:
            try:
                _copy_into(entry, folder)
            finally:
                self._unlock(handle)
            self.hits += 1
            return True
        self._held[key] = handle  # a miss: compute it while others wait on this lock
        return False

    def publish(self, key: str, folder: Path) -> None:
        """Store the committed stage ``folder`` under ``key`` (kept when already there), then release its lock."""
        entry = self.entry(key)
        try:
            if not entry.is_dir() and cached_record(folder, key) is not None:
                tmp = self.root / f".{key}.{os.getpid()}{TMP_SUFFIX}"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("checkpoints", f"*{TMP_SUFFIX}"))
                try:
                    os.rename(tmp, entry)  # atomic: readers see the whole entry or none
                    self.published += 1
                except OSError:  # another writer got there first (no lock held, e.g. a resumed run)
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            handle = self._held.pop(key, None)
            if handle is not None:
                self._unlock(handle)

    def release(self) -> None:
        """Let go of every lock still held (stages that failed or were skipped after a miss)."""
        for key in list(self._held):
            self._unlock(self._held.pop(key))

    def _lock(self, key: str) -> Any:
        handle = open(self.root / self.LOCKS / f"{key}.lock", "a+b")  # noqa: SIM115  (held across calls)
        try:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no advisory locks; the atomic rename still keeps entries whole
            pass
        return handle

    @staticmethod
    def _unlock(handle: Any) -> None:
        handle.close()  # closing the file drops its flock


def _copy_into(entry: Path, folder: Path) -> None:
    """Copy a stored stage folder to ``folder`` whole: into a temp sibling, then renamed into place."""
    tmp = folder.with_name(f".{folder.name}.fetch{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(entry, tmp)
    commit(tmp, folder)
