"""The stage cache: keys, content digests, and the stage records and evaluations a run may reuse.

stage.json records a key = sha256 of (stage kind + params, the digest of the input artifact's files, the digest of the
original model, the data hashes, the seed, the cache format and the modelpress version). A stage whose key matches
and whose artifact files still hash to the recorded digest is not recomputed. Its evaluation is reused as well when
the evaluation key (artifact digest, evaluate settings, data, fidelity reference) matches — latency included, so a
fully cached run reproduces the previous report's numbers exactly; ``resume=False`` recomputes and re-measures
everything. The thread count is not part of the stage key (it changes timings, not what a stage makes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import MANIFEST, ModelArtifact
from ..errors import InputError
from ..evaluate.evaluator import EXTRA_SECTIONS, EvalResult
from ..io import TMP_SUFFIX, atomic_write, read_json, sha256_arrays, sha256_file
from .run_folder import EVAL_FILE, KEY_FILE, STAGE_FILE

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
