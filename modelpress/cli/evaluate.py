"""``evaluate`` and ``explain``: judge one model on data, or explain what it lost against a reference.

``evaluate``'s measurement options are generated from :class:`~modelpress.evaluate.evaluator.EvalConfig`'s fields
(the YAML ``evaluate:`` section reads the same declarations).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..evaluate.evaluator import EvalConfig
from ..runtime.sessions import backend_names
from ..runtime.target import TARGET_NAMES
from .common import DEFAULT_OUT, _State, note, prepare_report_folder, slug
from .options import config_from_options, config_options, threads_option, trust_option

#: EvalConfig fields ``evaluate`` sets another way, and why (tests/cli/test_config_parity.py reads this).
EVAL_EXCLUDED = {
    "backends": "--backend: a Choice over the backend registry, repeatable (the field has no declared choices: "
                "backends come from entry points too)",
    "threads": "--threads: the shared option that notes oversubscription",
    "noise": "--noise: one comma-separated list (0.1,0.5,1) rather than a repeated option",
}


@click.command()
@click.argument("model")
@click.option("--data", "data_ref", required=True,
              help="sklearn:NAME (its seeded test split), or *.npz, *.csv, *.jsonl, images:DIR, pkg.module:fn (used "
                   "whole; FILE#test for a seeded 25 %% split).")
@click.option("--weights", help="Weights for zoo:/factory models (.safetensors, or a state_dict .pt).")
@click.option("--backend", type=click.Choice(backend_names()), multiple=True,
              help="Backend(s) to time; default: the model's own (torch or onnxruntime).")
@threads_option
@click.option("--reference", help="Model to measure fidelity against (e.g. the uncompressed original).")
@click.option("--precise", is_flag=True, help="≥1000 calls and ≥10 s per latency row instead of ≥100 / ≥1 s.")
@click.option("--label-column", default="label", show_default=True, help="Label column of a CSV file.")
@click.option("--name", help="Run name (default: evaluate-<model>).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Reports folder; the report goes to OUT/NAME/.")
@click.option("--json", "as_json", is_flag=True, help="Print the stage result as JSON on stdout.")
@click.option("--force", is_flag=True, help="Replace an earlier report in OUT/NAME/.")
@trust_option
@click.option("--noise", "noise_text", metavar="SIGMAS",
              help="Robustness: comma-separated noise levels, e.g. 0.1,0.5,1 (σ in units of the input's std; token "
                   "inputs: perturbation probability).")
@click.option("--tensorboard", type=click.Path(path_type=Path),
              help="Also write TensorBoard scalars under this folder (needs the tensorboard package).")
@config_options(EvalConfig, exclude=EVAL_EXCLUDED)
def evaluate(model: str, data_ref: str, weights: str | None, backend: tuple[str, ...], threads: int,
             reference: str | None, precise: bool, label_column: str, name: str | None, out: Path, as_json: bool,
             force: bool, trust_checkpoint: bool, noise_text: str | None, tensorboard: Path | None,
             **fields: Any) -> None:
    """Accuracy, precision, recall, F1, ROC-AUC, latency, size and fidelity of MODEL on DATA.

    \b
    Example:
      modelpress evaluate reports/demo/stages/02-export --data sklearn:digits --reference zoo:cnn@w.safetensors
    """
    from ..data import load_data
    from ..evaluate.evaluator import evaluate as run_eval, predict
    from ..runtime.latency import LatencyConfig
    from ..pipeline import predictions_of, stage_result
    from ..reports import new_report, render_markdown, write_report
    from ..sources import load_model

    config = config_from_options(EvalConfig, fields, backends=backend, threads=threads, noise=_noise_levels(noise_text),
                                 latency=LatencyConfig.precise() if precise else LatencyConfig())
    if tensorboard is not None:
        from ..evaluate.tensorboard import require_tensorboard

        require_tensorboard()
    run_name = name or "evaluate-" + slug(model)
    prepare_report_folder(out / run_name, [model, weights, reference, data_ref], force=force)
    if precise and not config.measure_latency:
        note("--precise has no effect with --no-latency (no latency is measured)")
    data = load_data(data_ref, split="test", label_column=label_column)
    artifact = load_model(model, data=data, weights=weights, trust_checkpoint=trust_checkpoint)
    ref_logits = ref_embeddings = None
    if reference:
        ref_artifact = load_model(reference, data=data, trust_checkpoint=trust_checkpoint)
        ref_logits = predict(ref_artifact, data, threads=threads)
        if config.knn is not None:
            from ..evaluate.knn import LayerUnavailable, embeddings

            try:
                ref_embeddings = embeddings(ref_artifact, data, layer=config.knn_layer, threads=threads)
            except LayerUnavailable as exc:
                click.echo(f"note: no embedding cosine similarity to the reference: {exc}", err=True)
    result = run_eval(artifact, data, config=config, reference_logits=ref_logits, reference_name=reference,
                      reference_embeddings=ref_embeddings)
    # the class count is the model's: the data may hold a subset of its classes (predictions.npz has one column each)
    report = new_report(run_name, data={**data.describe(), "n_classes": len(result.class_names),
                                        "class_names": list(result.class_names)}, threads=threads)
    stage = stage_result("evaluate", "evaluate", {"model": model, "backends": list(backend) or None},
                         artifact, result, out_dir=out / run_name, notes=list(_State.notes))
    if artifact.metadata.get("cost"):  # what the stage that made this artifact cost (training, calibration)
        stage["cost"] = artifact.metadata["cost"]
    report["stages"].append(stage)
    paths = write_report(report, out / run_name, predictions=predictions_of(data.y, [("evaluate", result)]))
    if tensorboard is not None:
        from ..evaluate.tensorboard import write_tensorboard

        write_tensorboard(report, tensorboard)
        click.echo(f"tensorboard: {tensorboard} (tensorboard --logdir {tensorboard})", err=True)
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text())["stages"][0], indent=2))
    else:
        click.echo(render_markdown(report))
        click.echo(f"report: {paths['json']}", err=True)


def _noise_levels(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--noise must be comma-separated numbers, e.g. 0.1,0.5,1; got {text!r}") from None


@click.command("explain")
@click.argument("model")
@click.option("--reference", required=True, help="The model MODEL was made from (e.g. the FP32 original).")
@click.option("--data", "data_ref", required=True, help="Data (test split): layer errors, metrics, profiled batch.")
@click.option("--weights", help="Weights for a zoo:/factory MODEL.")
@threads_option
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
@trust_option
def explain_command(model: str, reference: str, data_ref: str, weights: str | None, threads: int, batch_size: int,
                    samples: int, runs: int, fp16: bool, label_column: str, name: str | None, out: Path,
                    as_json: bool, target: str | None, force: bool, trust_checkpoint: bool) -> None:
    """Explain why MODEL is slower or less accurate than REFERENCE, layer by layer.

    First the real onnxruntime session's agreement with REFERENCE (the kernels of this CPU) beside the exact Q/DQ
    arithmetic, naming layers where u8×s8 pairs saturate (CPUs without VNNI); with --target, the outputs predicted
    on that CPU kind by emulation. Then per-operator time of both models on the same batch and threads, Q/DQ pairs
    vs int8 kernels that ran, each layer's error against the reference (worst first, with its share of the time),
    FP32/FP16 baselines beside the candidate, and recommendations with the command that applies them. The result goes to OUT/NAME/report.json
    (candidate stage, key "explain"), report.md and report.html.

    \b
    Example:
      modelpress explain out/cnn-int8 --reference out/cnn-onnx --data sklearn:digits --target x86-avx2
    """
    from ..diagnose import ExplainConfig
    from ..pipeline.explain import run_explain
    from ..reports.explain_md import explain_markdown

    if target == "auto":
        from ..runtime.target import detect_host

        target = detect_host().name
    config = ExplainConfig(threads=threads, batch_size=batch_size, samples=samples, runs=runs, fp16_baseline=fp16,
                           target=target)
    run_name = name or "explain-" + slug(model)
    prepare_report_folder(out / run_name, [model, reference, weights, data_ref], force=force)
    result, paths = run_explain(model, reference, data_ref, out_dir=out / run_name, name=run_name, config=config,
                                weights=weights, label_column=label_column, trust_checkpoint=trust_checkpoint)
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text())["stages"][-1]["explain"], indent=2))
    else:
        click.echo(explain_markdown(result), nl=False)
    click.echo(f"report: {paths['json']} (also report.md, report.html)", err=True)
