"""The report folder on disk: write predictions.npz, report.md and report.json (last), read predictions back.

report.json is the commit marker: each file is written atomically (temp file, fsync, rename) and report.json goes
last, so a run killed midway leaves the previous report.json byte-identical. Predictions are numeric arrays only,
read with ``allow_pickle=False``: a predictions file from elsewhere is data, never code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_write, write_json, write_text
from .markdown import render_markdown
from .schema import REPORT_FILENAME, validate_report

__all__ = ["MARKDOWN_FILENAME", "MAX_PREDICTIONS_BYTES", "PREDICTIONS_FILENAME", "load_predictions",
           "load_predictions_for_plots", "report_path", "write_report"]

MARKDOWN_FILENAME = "report.md"
PREDICTIONS_FILENAME = "predictions.npz"
#: report.html skips the plots that need predictions above this size rather than load them.
MAX_PREDICTIONS_BYTES = 512 * 1024 * 1024


def write_report(
    report: Mapping[str, Any],
    out_dir: str | Path,
    *,
    predictions: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write the report folder: predictions.npz (when given), report.md, and report.json last.

    The report is validated before anything is written.

    Args:
        report: The report dict.
        out_dir: The run folder; created when missing.
        predictions: Per-sample arrays for paired tests in ``compare``: ``y_true`` and one probability array per
            stage, keyed by name. Object arrays are refused (they would need pickle to load).

    Returns:
        The written paths under the keys ``"predictions"`` (when given), ``"md"`` and ``"json"``.

    Raises:
        InputError: the report does not validate, or a prediction array is not numeric.
        ModelpressError: the disk is full ("no space left writing X"); earlier files are intact.
    """
    out = Path(out_dir)
    json_path = out / REPORT_FILENAME
    checked = validate_report(dict(report), source=str(json_path))
    arrays = _check_predictions(predictions) if predictions is not None else None
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if arrays is not None:
        npz_path = out / PREDICTIONS_FILENAME
        with atomic_write(npz_path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        paths["predictions"] = npz_path
    md_path = out / MARKDOWN_FILENAME
    write_text(md_path, render_markdown(checked))
    paths["md"] = md_path
    write_json(json_path, checked)
    paths["json"] = json_path
    return paths


def report_path(given: str | os.PathLike[str]) -> Path:
    """The report.json that ``given`` names: the file itself, the run folder holding it, or a reports folder holding
    exactly one run (``DIR/NAME/report.json``: what ``evaluate --out DIR`` and ``run --out DIR`` write).

    Raises:
        InputError: nothing there, no report in the folder or its runs, or several runs (they are listed).
    """
    path = Path(given)
    if not path.exists():
        raise InputError(f"{path} does not exist; pass a report.json or the folder that holds it")
    if not path.is_dir() or (path / REPORT_FILENAME).is_file():
        return path / REPORT_FILENAME if path.is_dir() else path
    try:
        runs = sorted(d.name for d in path.iterdir() if d.is_dir() and (d / REPORT_FILENAME).is_file())
    except OSError as exc:
        raise InputError(f"cannot list {path} ({exc.strerror or exc})") from None
    if len(runs) == 1:
        return path / runs[0] / REPORT_FILENAME
    if not runs:
        raise InputError(f"{path} holds no {REPORT_FILENAME}, and no run folder with one",
                         hint="pass a report.json or the run folder that holds it")
    shown = ", ".join(runs[:10]) + (f", … ({len(runs)} in all)" if len(runs) > 10 else "")
    raise InputError(f"{path} holds {len(runs)} runs ({shown}); name one: {path / runs[0]}")


def load_predictions(report_path: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The predictions.npz beside a report (``report_path`` is the report.json or its folder); None if absent.

    Raises:
        InputError: the file is truncated or corrupt (``compare`` must not judge gates on half a file).
    """
    path = _predictions_path(report_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is truncated or corrupt ({' '.join(str(exc).split())})") from None


def load_predictions_for_plots(run_dir: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """predictions.npz of a run folder as numeric arrays, or ``None`` when absent, too large or unreadable.

    report.html's ROC curves are optional: a damaged or hostile file costs the plots, never the report.
    """
    path = _predictions_path(run_dir)
    if not path.is_file() or path.stat().st_size > MAX_PREDICTIONS_BYTES:
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception:  # damaged or hostile: the report renders without the plots that need it
        return None
    return {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}


def _predictions_path(given: str | os.PathLike[str]) -> Path:
    path = Path(given)
    return (path if path.is_dir() else path.parent) / PREDICTIONS_FILENAME


def _check_predictions(predictions: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, value in predictions.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise InputError(f"prediction names must be non-empty strings without '/', got {key!r}")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise InputError(f"predictions {key!r} must be numeric (bool, int or float), got dtype {array.dtype}")
        arrays[key] = array
    return arrays
