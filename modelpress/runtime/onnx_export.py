"""torch → ONNX export and its verification against torch, below the stages that use them.

The export stage, the quantize stage (a torch model is exported before it is quantized) and ``explain`` (a torch
reference is exported so its tensors match an ONNX candidate's) all export through :func:`export_torch_onnx` and
check the result with :func:`verify_torch_onnx`, which runs both models through the evaluator's runners and judges
them with :func:`~.compare.compare_batches`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ..artifacts import ModelArtifact
from ..data import Dataset
from ..errors import GateFailed, InputError
from .compare import compare_batches
from .sessions import make_runner

__all__ = ["EXPORTERS", "STATIC_BATCH", "export_torch_onnx", "verify_torch_onnx"]

EXPORTERS = ("dynamo", "torchscript")


def _dynamic_dims(artifact: ModelArtifact, dynamic_batch: bool) -> dict[str, list[int]]:
    dims: dict[str, list[int]] = {}
    for spec in artifact.inputs:
        axes = [i for i, d in enumerate(spec.shape) if d is None and (i > 0 or dynamic_batch)]
        dims[spec.name] = axes
    return dims


STATIC_BATCH = 1  # --static-batch fixes the batch axis here: one request at a time, the usual fixed-shape server


def _example_inputs(artifact: ModelArtifact, batch: int = 2) -> tuple[Any, ...]:
    import torch

    tensors = []
    for spec in artifact.inputs:
        shape = [batch if i == 0 else (d or 8) for i, d in enumerate(spec.shape)]
        dtype = getattr(torch, spec.dtype)
        tensors.append(torch.ones(shape, dtype=dtype) if not dtype.is_floating_point else torch.randn(shape))
    return tuple(tensors)


@contextlib.contextmanager
def _quiet_torch_onnx_logs() -> Any:
    """The dynamo exporter logs a warning per missing torchvision op; they say nothing about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_torch_onnx(artifact: ModelArtifact, path: Path, *, opset: int, exporter: str,
                      dynamic_batch: bool) -> ModelArtifact:
    """Export a torch artifact to ONNX at ``path``, atomically (export to a temp name in the same folder, check with
    ``onnx.checker``, then rename); ``exporter`` is ``"dynamo"`` or ``"torchscript"``."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    module = artifact.module.eval()
    names = [s.name for s in artifact.inputs]
    dyn = _dynamic_dims(artifact, dynamic_batch)
    kwargs: dict[str, Any] = {"input_names": names, "output_names": ["logits"], "opset_version": int(opset)}
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1)
        seq = torch.export.Dim("seq", min=1)
        kwargs["dynamic_shapes"] = tuple({a: (batch if a == 0 else seq) for a in dyn[n]} or None for n in names)
        kwargs["dynamo"] = True
        kwargs["external_data"] = False
    else:
        axes = {n: {a: ("batch" if a == 0 else f"dim{a}") for a in dyn[n]} for n in names}
        axes["logits"] = {0: "batch"} if dynamic_batch else {}
        kwargs["dynamic_axes"] = axes
        kwargs["dynamo"] = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_torch_onnx_logs():
            warnings.simplefilter("ignore")
            example = _example_inputs(artifact, 2 if dynamic_batch else STATIC_BATCH)
            torch.onnx.export(module, example, str(tmp), **kwargs)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
        os.replace(tmp, path)
    except (InputError, GateFailed):
        raise
    except Exception as exc:
        raise InputError(
            f"ONNX export of {artifact.source} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            hint=f"try exporter: {'torchscript' if exporter == 'dynamo' else 'dynamo'}",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(FileNotFoundError):
            (tmp.parent / (tmp.name + ".data")).unlink()
    return artifact.evolve(format="onnx", module=None, path=path,
                           metadata={**artifact.metadata, "opset": int(opset), "exporter": exporter})


def verify_torch_onnx(reference: ModelArtifact, candidate: ModelArtifact, data: Dataset, *, samples: int,
                      dynamic_batch: bool, atol: float, rtol: float, threads: int = 1) -> dict[str, Any]:
    """Compare torch and onnxruntime outputs at batch sizes 1, an odd size and the full sample (the first
    ``samples`` rows); ``passed`` when ``|onnx − torch| ≤ atol + rtol·|torch|`` elementwise."""
    n = min(len(data), samples)
    sample = data.subset(slice(0, n))
    torch_run = make_runner(reference, "torch", threads=threads)
    ort_run = make_runner(candidate, "onnxruntime", threads=threads)
    # a static batch axis is fixed at the exported example's size: only that size is valid input
    sizes = sorted({1, min(n, 7), n}) if dynamic_batch else [STATIC_BATCH]
    pairs = []
    for size in sizes:
        for batch, _ in sample.batches(size):
            want, got = torch_run(batch), ort_run(batch)
            if want.shape != got.shape:
                raise GateFailed(f"ONNX output shape {got.shape} differs from torch {want.shape} at batch {size}")
            pairs.append((want, got))
    check = compare_batches(pairs, rtol=rtol)
    return {"passed": check.within(atol), "max_abs_diff": check.max_abs_diff,
            "max_rel_diff": check.max_rel_diff, "top1_agreement": check.top1_agreement, "n_samples": n,
            "batch_sizes": sizes, "atol": atol, "rtol": rtol}
