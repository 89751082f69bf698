"""What the command families share: invocation state, notes, output folders, and a stage run as a one-stage pipeline.

Nothing here parses options (that is :mod:`.options`) or prints results (the commands do).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..sources import parse_model

DEFAULT_OUT = Path("reports")


class _State:
    debug = False
    notes: list[str] = []  # InputNote messages of this invocation (main resets it)


def note(message: str) -> None:
    """An accepted but questionable input: printed as ``note:`` and, in evaluate, recorded in the report."""
    import warnings

    from ..artifacts import InputNote

    warnings.warn(message, InputNote, stacklevel=2)


def prepare_output_folder(out: Path, inputs: Sequence[str | None], *, force: bool) -> None:
    """Refuse an output equal to an input, a non-empty folder (without --force) or a read-only place."""
    from ..pipeline import check_output_folder, refuse_inside_inputs

    refuse_inside_inputs(out, inputs, option="-o")
    check_output_folder(out, option="-o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output folder {out} exists and is not empty", hint="choose another -o or pass --force")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} (read-only)", hint="choose another -o folder")


def prepare_report_folder(folder: Path, inputs: Sequence[str | None], *, force: bool) -> None:
    """evaluate/explain: OUT/NAME must be a folder outside every input; an earlier report there needs --force."""
    from ..pipeline import check_output_folder, refuse_inside_inputs
    from ..reports import REPORT_FILENAME

    refuse_inside_inputs(folder, inputs, option="--out")
    check_output_folder(folder)
    if (folder / REPORT_FILENAME).exists() and not force:
        raise InputError(f"{folder} already holds a report", hint="pass --force to replace it, or choose --name/--out")


def commit_folder(staging: Path, out: Path) -> None:
    """Replace ``out`` with the finished ``staging`` folder; the old one is removed only after the swap."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_single_stage(config: Any, model: str, *, data: str | None, weights: str | None, out: Path, force: bool,
                     threads: int, label_column: str = "label", trust_checkpoint: bool = False,
                     extra_inputs: Sequence[str] = ()) -> Any:
    """A CLI stage command is a one-stage pipeline: load, run the registered stage, save an artifact folder."""
    from ..sources import trusted_code

    with trusted_code([model, *extra_inputs]):  # factories the user named here may be rebuilt from saved folders
        return _run_single_stage(config, model, data=data, weights=weights, out=out, force=force, threads=threads,
                                 label_column=label_column, trust_checkpoint=trust_checkpoint,
                                 extra_inputs=extra_inputs)


def _run_single_stage(config: Any, model: str, *, data: str | None, weights: str | None, out: Path, force: bool,
                      threads: int, label_column: str, trust_checkpoint: bool, extra_inputs: Sequence[str]) -> Any:
    from ..compress.registry import StageContext, run_stage
    from ..pipeline import DataSpec, load_run_data
    from ..sources import load_model

    prepare_output_folder(out, [model, *extra_inputs, weights, data], force=force)
    run_data = load_run_data(DataSpec(eval=data, label_column=label_column), need_train=True) if data else None
    eval_data = run_data.eval if run_data else None
    artifact = load_model(model, data=eval_data, weights=weights, trust_checkpoint=trust_checkpoint)
    from ..io import make_temp_dir

    staging = make_temp_dir(out.resolve().parent, prefix=f".{out.name}.")
    try:
        ctx = StageContext(work_dir=staging, train=run_data.train if run_data else None, eval=eval_data,
                           calibration=run_data.calibration if run_data else None, original=artifact,
                           threads=threads)
        result = run_stage(artifact, config, ctx).save(staging)
        commit_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result.evolve(path=out / Path(result.path).name if result.format != "torch" else out), ctx.notes


def slug(ref: str) -> str:
    parsed = parse_model(ref)
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(parsed.base).name or ref)
    return keep.strip("-.") or "model"
