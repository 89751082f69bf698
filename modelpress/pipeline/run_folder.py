"""The run folder ``<out>/<name>/`` and the rules every command that writes follows.

Layout::

    stages/00-original/   the model as given (evaluated unless the pipeline starts with train stages)
    stages/NN-<kind>/     one folder per stage: the artifact (manifest.json written last), eval.npz (logits,
                          probabilities, raw latency samples) and stage.json, the stage's commit marker
    report.html  predictions.npz  report.md  report.json   (report.json last; rewritten after every stage)

A stage runs in ``stages/.NN-<kind>.partial/`` and the finished folder is renamed into place (:func:`commit`), so a
stage folder is either complete or absent. The partial folder survives Ctrl-C and SIGKILL: a stage that checkpoints
into its work folder (``train`` does, per epoch) continues there on the next run when its inputs are unchanged
(:func:`prepare_partial`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data import parse_data
from ..errors import InputError
from ..io import atomic_write
from ..reports import REPORT_FILENAME
from ..sources import parse_model

STAGE_FILE = "stage.json"
EVAL_FILE = "eval.npz"
STAGES_DIR = "stages"
PARTIAL = ".partial"
KEY_FILE = ".key"
LOCK_FILE = ".lock"


def stage_dir_name(index: int, kind: str) -> str:
    return f"{index:02d}-{kind}"


def partial_dir(stages_dir: Path, name: str) -> Path:
    return stages_dir / f".{name}{PARTIAL}"


def prepare_partial(partial: Path, key: str, *, resume: bool) -> None:
    """Reuse the partial folder of an interrupted attempt with the same key (e.g. train checkpoints)."""
    key_file = partial / KEY_FILE
    same = resume and key_file.is_file() and key_file.read_text(encoding="utf-8").strip() == key
    if not same:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with atomic_write(key_file, "w") as handle:
            handle.write(key)
    (partial / STAGE_FILE).unlink(missing_ok=True)


def commit(partial: Path, final: Path) -> None:
    """Rename the finished partial folder into place; an older final folder is moved aside, then removed."""
    (partial / KEY_FILE).unlink(missing_ok=True)
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def prune_stale(stages_dir: Path, keep: set[str]) -> None:
    """After a complete run, drop stage folders that are no longer in the plan (older, longer pipelines)."""
    for child in stages_dir.iterdir():
        stale_final = child.is_dir() and not child.name.startswith(".") and child.name not in keep
        if stale_final or (child.name.endswith(PARTIAL) and child.name[1:-len(PARTIAL)] not in keep):
            shutil.rmtree(child, ignore_errors=True)


def remove_moved_aside(stages_dir: Path) -> None:
    """Folders :func:`commit` moved aside and a kill left behind."""
    for old in stages_dir.glob(".*.old"):
        shutil.rmtree(old, ignore_errors=True)


def refuse_inside_inputs(out: Path, inputs: Sequence[str | None], *, option: str = "--out") -> None:
    """One rule for every command that writes: an output may not be an input, contain one, or lie inside one
    (``prune ART -o ART/sub`` would write into the artifact it reads)."""
    resolved = Path(out).resolve()
    for ref in inputs:
        if not ref:
            continue
        for candidate in _files_named(str(ref)):
            if not candidate.exists():
                continue
            inp = candidate.resolve()
            if inp == resolved or resolved in inp.parents:
                how = "is" if inp == resolved else "contains"
                raise InputError(f"output {out} {how} the input {ref}", hint=f"choose another {option} folder")
            if inp.is_dir() and inp in resolved.parents:
                raise InputError(f"output {out} is inside the input {ref}",
                                 hint=f"choose an {option} folder outside the input")


def _files_named(ref: str) -> list[Path]:
    """The files and folders a model or data reference reads (``DIR@w.safetensors`` both, ``d.npz#test`` the file,
    ``hf:DIR`` the folder), parsed by refs.py; the text itself too, since an existing file wins."""
    paths = [Path(ref)]
    for parse in (parse_model, parse_data):
        try:
            parsed = parse(ref)
        except InputError:
            continue
        paths += [Path(p) for p in (parsed.body if parsed.is_path else None, parsed.weights) if p]
    return paths


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


def check_run_folder(out_dir: Path) -> None:
    """A run writes only into an empty folder or one of its own earlier run folders, in a writable place."""
    check_output_folder(out_dir)
    ours = any((out_dir / n).exists() for n in (STAGES_DIR, REPORT_FILENAME, LOCK_FILE))
    if out_dir.is_dir() and any(out_dir.iterdir()) and not ours:
        raise InputError(f"output folder {out_dir} exists, is not empty and is not a modelpress run folder",
                         hint="choose another --out or pipeline name")
    parent = out_dir.resolve().parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} (read-only)", hint="choose another --out")


@contextlib.contextmanager
def locked(out_dir: Path, *, lock_file: str = LOCK_FILE, holder: str = "modelpress run") -> Iterator[None]:
    """One run (or search: ``holder``, ``lock_file``) per folder at a time: a second one on the same folder fails
    instead of interleaving writes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield
        return
    with open(out_dir / lock_file, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another {holder} is writing {out_dir}",
                             hint="wait for it to finish or choose another --out") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
