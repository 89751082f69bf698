"""The ``modelpress`` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok · 1 a gate or verification failed · 2 bad usage or input · 3 an optional backend is unavailable.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .errors import InputError, ModelpressError

DEFAULT_OUT = Path("reports")


class _State:
    debug = False


def _options_from_env() -> None:
    if os.environ.get("MODELPRESS_DEBUG"):
        _State.debug = True


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.version_option(package_name="modelpress")
def cli(debug: bool, quiet: bool) -> None:
    """Make trained PyTorch models smaller and faster, and prove with numbers what it cost.

    \b
    Quick start:
      modelpress demo
      modelpress evaluate zoo:cnn@model.safetensors --data sklearn:digits
    """
    from . import progress

    _State.debug = _State.debug or debug
    progress.set_quiet(quiet)


# ---- shared helpers ------------------------------------------------------------------------------------------
def _threads_option(fn: Any) -> Any:
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        help="Intra-op threads, the same for every backend.")(fn)


def _prepare_output_folder(out: Path, inputs: Sequence[str], *, force: bool) -> None:
    """Refuse an output equal to an input, a non-empty folder (without --force) or a read-only place."""
    resolved = out.resolve()
    for ref in inputs:
        candidate = Path(ref.split("@", 1)[0])
        if candidate.exists() and (candidate.resolve() == resolved or resolved in candidate.resolve().parents):
            raise InputError(f"output {out} is the input {ref}", hint="choose another -o folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder", hint="choose another -o folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output folder {out} exists and is not empty", hint="choose another -o or pass --force")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} (read-only)", hint="choose another -o folder")


def _commit_folder(staging: Path, out: Path) -> None:
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
    from .compress.registry import StageContext, run_stage
    from .pipeline import DataSpec, load_run_data
    from .sources import load_model

    _prepare_output_folder(out, [model, *extra_inputs], force=force)
    run_data = load_run_data(DataSpec(eval=data, label_column=label_column), need_train=True) if data else None
    eval_data = run_data.eval if run_data else None
    artifact = load_model(model, data=eval_data, weights=weights, trust_checkpoint=trust_checkpoint)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.resolve().parent))
    try:
        ctx = StageContext(work_dir=staging, train=run_data.train if run_data else None, eval=eval_data,
                           calibration=run_data.calibration if run_data else None, original=artifact,
                           threads=threads)
        result = run_stage(artifact, config, ctx).save(staging)
        _commit_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result.evolve(path=out / Path(result.path).name if result.format != "torch" else out), ctx.notes


# ---- commands ----------------------------------------------------------------------------------------------
@cli.command()
@click.argument("model")
@click.option("--data", "data_ref", required=True, help="sklearn:NAME, *.npz, *.csv or pkg.module:fn (test split).")
@click.option("--weights", help="Weights for zoo:/factory models (.safetensors, or a state_dict .pt).")
@click.option("--backend", type=click.Choice(["torch", "onnxruntime", "tensorrt"]), multiple=True,
              help="Backend(s) to time; default: the model's own (torch or onnxruntime).")
@click.option("--batch-size", "batch_sizes", type=click.IntRange(min=1), multiple=True, default=(1, 32),
              show_default=True, help="Latency batch size; repeat for several.")
@_threads_option
@click.option("--reference", help="Model to measure fidelity against (e.g. the uncompressed original).")
@click.option("--precise", is_flag=True, help="≥1000 calls and ≥10 s per latency row instead of ≥100 / ≥1 s.")
@click.option("--no-latency", is_flag=True, help="Metrics and footprint only.")
@click.option("--label-column", default="label", show_default=True, help="Label column of a CSV file.")
@click.option("--name", help="Run name (default: evaluate-<model>).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the report goes to OUT/NAME/.")
@click.option("--json", "as_json", is_flag=True, help="Print the stage result as JSON on stdout.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of a checkpoint you made yourself.")
def evaluate(model: str, data_ref: str, weights: str | None, backend: tuple[str, ...], batch_sizes: tuple[int, ...],
             threads: int, reference: str | None, precise: bool, no_latency: bool, label_column: str,
             name: str | None, out: Path, as_json: bool, trust_checkpoint: bool) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, latency, size and fidelity of MODEL on DATA.

    \b
    Example:
      modelpress evaluate reports/demo/stages/02-export --data sklearn:digits --reference zoo:cnn@w.safetensors
    """
    from .data import load_data
    from .evaluate.evaluator import EvalConfig, evaluate as run_eval, predict
    from .evaluate.latency import LatencyConfig
    from .pipeline import predictions_of, stage_result
    from .reports import new_report, render_markdown, write_report
    from .sources import load_model

    data = load_data(data_ref, split="test", label_column=label_column)
    artifact = load_model(model, data=data, weights=weights, trust_checkpoint=trust_checkpoint)
    config = EvalConfig(backends=backend, batch_sizes=batch_sizes, threads=threads,
                        latency=LatencyConfig.precise() if precise else LatencyConfig(), measure_latency=not no_latency)
    ref_logits = None
    if reference:
        ref_artifact = load_model(reference, data=data, trust_checkpoint=trust_checkpoint)
        ref_logits = predict(ref_artifact, data, threads=threads)
    result = run_eval(artifact, data, config=config, reference_logits=ref_logits, reference_name=reference)
    run_name = name or "evaluate-" + _slug(model)
    report = new_report(run_name, data=data.describe(), threads=threads)
    stage = stage_result("evaluate", "evaluate", {"model": model, "backends": list(backend) or None},
                         artifact, result, out_dir=out / run_name, notes=[])
    report["stages"].append(stage)
    paths = write_report(report, out / run_name, predictions=predictions_of(data.y, [("evaluate", result)]))
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text())["stages"][0], indent=2))
    else:
        click.echo(render_markdown(report))
        click.echo(f"report: {paths['json']}", err=True)


def _slug(ref: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(ref.split("@")[0]).name or ref)
    return keep.strip("-.") or "model"


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt"]), default="onnx", show_default=True)
@click.option("--opset", type=click.IntRange(13, 23), default=18, show_default=True)
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True, help="Dynamic batch axis.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare onnxruntime outputs with torch on real samples; exit 1 over tolerance.")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True)
@click.option("--data", "data_ref", help="Data to size zoo/factory models and to verify on.")
@click.option("--weights", help="Weights for zoo:/factory models.")
@click.option("--label-column", default="label", show_default=True)
@_threads_option
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Artifact folder to write.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling of a checkpoint you made yourself.")
def export(model: str, fmt: str, opset: int, dynamic_batch: bool, verify: bool, atol: float, rtol: float,
           exporter: str, data_ref: str | None, weights: str | None, label_column: str, threads: int, out: Path,
           force: bool, trust_checkpoint: bool) -> None:
    """Export MODEL to ONNX (or TensorRT), check it and verify its outputs against torch.

    \b
    Example:
      modelpress export zoo:cnn@model.safetensors --data sklearn:digits -o out/cnn-onnx
    """
    from .compress.export import ExportConfig

    config = ExportConfig(format=fmt, opset=opset, dynamic_batch=dynamic_batch, verify=verify, atol=atol, rtol=rtol,
                          exporter=exporter)
    artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    v = artifact.metadata.get("verification")
    if v:
        click.echo(f"verified: max abs diff {v['max_abs_diff']:.3g}, max rel diff {v['max_rel_diff']:.3g}, "
                   f"top-1 agreement {v['top1_agreement']:.4f} on {v['n_samples']} samples")
    click.echo(f"wrote {artifact.path}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
def report(run_dir: Path, fmt: str) -> None:
    """Print the report of RUN_DIR (a run folder or its report.json) as Markdown or JSON.

    \b
    Example:
      modelpress report reports/demo --format md
    """
    from .reports import load_report, render_markdown

    loaded = load_report(run_dir)
    click.echo(render_markdown(loaded) if fmt == "md" else json.dumps(loaded, indent=2))


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--epochs", type=click.IntRange(1, 200), default=15, show_default=True)
@_threads_option
def demo(out: Path, epochs: int, threads: int) -> None:
    """Train zoo:cnn on sklearn digits, export it to ONNX, evaluate torch vs onnxruntime, write OUT/demo/.

    \b
    Example:
      modelpress demo && cat reports/demo/report.md
    """
    from .compress.export import ExportConfig
    from .compress.train import TrainConfig
    from .evaluate.evaluator import EvalConfig
    from .pipeline import DataSpec, PipelineSpec, run_pipeline
    from .reports import render_markdown

    spec = PipelineSpec(
        name="demo", model="zoo:cnn", data=DataSpec(eval="sklearn:digits"),
        stages=(TrainConfig(epochs=epochs), ExportConfig()),
        evaluate=EvalConfig(batch_sizes=(1, 32), threads=threads),
    )
    result = run_pipeline(spec, out_dir=out / "demo")
    click.echo(render_markdown(result))
    click.echo(f"report: {out / 'demo' / 'report.json'}", err=True)


# ---- entry point ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 gate failed, 2 bad input, 3 backend unavailable)."""
    _options_from_env()
    args = list(sys.argv[1:] if argv is None else argv)
    _State.debug = _State.debug or "--debug" in args
    try:
        cli.main(args=args, prog_name="modelpress", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: interrupted; finished stages are kept, run again to resume", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        return 2
    except ModelpressError as exc:
        if _State.debug:
            traceback.print_exc()
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted; finished stages are kept, run again to resume", err=True)
        return 130
    except Exception as exc:  # the last line of defence: one line, traceback only with --debug
        if _State.debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: unexpected {type(exc).__name__}: {first} (rerun with --debug for the traceback)", err=True)
        return 1
    return 0



def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
