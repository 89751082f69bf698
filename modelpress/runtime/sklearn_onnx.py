"""Models from other frameworks, through ONNX: scikit-learn via skl2onnx (here), TensorFlow/Keras via tf2onnx
(README "More measurements").

Once converted, such a model is an ONNX file like any other: ``modelpress evaluate model.onnx --data ...`` and
``modelpress quantize model.onnx --mode dynamic`` treat it as they treat an exported torch model. Two things make a
converted classifier fit modelpress's contract (named inputs in, one ``(n, n_classes)`` score tensor out):

* ``zipmap`` is disabled, so the probabilities are a tensor and not a list of ``{class: probability}`` maps, and the
  ``label`` output is dropped (with the nodes only it needed), so the probabilities are the first and only output;
* the input keeps the converter's name (``X``, ``float_input``): a single model input receives the data's single
  array whatever its name (by position); a model with several inputs receives the data's arrays BY NAME, so name
  the arrays of the ``.npz`` (or the keys of the ``Dataset.inputs`` a ``pkg.module:fn`` returns) as the model's
  inputs. Floating arrays are cast to the input's declared float type (float64 for ``DoubleTensorType``).

The conversion is verified like an export: the ONNX probabilities (read by the evaluator's onnxruntime runner) are
compared with ``predict_proba`` on a sample (:func:`~.compare.compare_outputs`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, GateFailed, InputError
from ..io import write_bytes
from .compare import compare_outputs
from .sessions import ort_runner

__all__ = ["keep_outputs", "sklearn_to_onnx"]


def _skl2onnx() -> Any:
    try:
        import skl2onnx
    except ImportError:
        raise BackendUnavailable("converting a scikit-learn model needs skl2onnx, which is not installed",
                                 hint="pip install skl2onnx (or modelpress[interop])") from None
    return skl2onnx


def keep_outputs(model: Any, names: list[str]) -> Any:
    """Keep only the graph outputs ``names`` and the nodes and initializers they depend on (in place).

    ONNX graphs list nodes in topological order, so one backward pass collects every tensor the outputs need.
    """
    outputs = {o.name: o for o in model.graph.output}
    missing = [n for n in names if n not in outputs]
    if missing:
        raise InputError(f"the ONNX graph has no output {missing[0]!r}; outputs are {sorted(outputs)}")
    if any(a.g.node or a.graphs for node in model.graph.node for a in node.attribute):
        del model.graph.output[:]  # subgraphs (If/Loop) read outer tensors implicitly: keep every node
        model.graph.output.extend(outputs[n] for n in names)
        return model
    needed = set(names)
    kept = []
    for node in reversed(list(model.graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del model.graph.output[:]
    model.graph.output.extend(outputs[n] for n in names)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    used = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)
    return model


def sklearn_to_onnx(estimator: Any, path: str | os.PathLike[str], *, sample: np.ndarray, input_name: str = "X",
                    target_opset: int | None = None, atol: float = 1e-4) -> dict[str, Any]:
    """Convert a fitted scikit-learn classifier to ``path`` (atomically) and verify it on ``sample``.

    Args:
        estimator: A fitted classifier with ``predict_proba`` (a ``Pipeline`` ending in one works too).
        path: The ``.onnx`` file to write.
        sample: ``(n, n_features)`` rows to verify on; their dtype picks the input type (float64 → double).
        input_name: Name of the graph input (the data's single array is mapped to it by position).
        target_opset: Default ONNX opset for the conversion (default: skl2onnx's choice).
        atol: Largest allowed absolute difference between ONNX and ``predict_proba`` probabilities.

    Returns:
        ``{"path", "input", "n_classes", "max_abs_diff", "top1_agreement", "n_samples"}``.

    Raises:
        BackendUnavailable: skl2onnx is not installed (exit 3).
        InputError: the estimator is not a fitted classifier, or the sample is not a 2-D numeric array.
        GateFailed: the converted model's probabilities differ from ``predict_proba`` by more than ``atol``.
    """
    import onnx

    skl2onnx = _skl2onnx()
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    x = np.asarray(sample)
    if x.ndim != 2 or x.dtype.kind != "f" or len(x) == 0:
        raise InputError(f"sample must be a non-empty 2-D float array, got shape {x.shape} dtype {x.dtype}")
    if not hasattr(estimator, "predict_proba"):
        raise InputError(f"{type(estimator).__name__} has no predict_proba; modelpress evaluates classifiers")
    try:
        expected = np.asarray(estimator.predict_proba(x), dtype=np.float64)
    except Exception as exc:  # sklearn's NotFittedError and shape errors: the estimator does not fit the sample
        raise InputError(f"{type(estimator).__name__}.predict_proba failed on the sample: {exc}") from None
    tensor = DoubleTensorType if x.dtype == np.float64 else FloatTensorType
    options = {id(step): {"zipmap": False} for step in _classifiers(estimator)}
    try:
        model = skl2onnx.convert_sklearn(estimator, initial_types=[(input_name, tensor([None, x.shape[1]]))],
                                         options=options, target_opset=target_opset)
    except Exception as exc:  # skl2onnx raises RuntimeError/NameError/MissingShapeCalculator for unsupported models
        raise InputError(f"skl2onnx cannot convert {type(estimator).__name__}: {str(exc).splitlines()[0][:200]}") \
            from None
    scores = [o.name for o in model.graph.output if o.type.tensor_type.elem_type in _FLOAT_TYPES]
    if not scores:
        raise InputError(f"the converted {type(estimator).__name__} has no probability tensor output")
    model = keep_outputs(model, scores[:1])
    onnx.checker.check_model(model)
    target = Path(path)
    write_bytes(target, model.SerializeToString())
    got = np.asarray(ort_runner(target, threads=1)({input_name: x}), dtype=np.float64)
    diff, agreement = float("inf"), 0.0
    if got.shape == expected.shape:
        check = compare_outputs(expected, got)
        diff, agreement = check.max_abs_diff, check.top1_agreement
    report = {"path": str(target), "input": input_name, "n_classes": int(expected.shape[1]), "max_abs_diff": diff,
              "top1_agreement": agreement, "n_samples": int(len(x))}
    if not diff <= atol:
        raise GateFailed(f"converted {type(estimator).__name__} differs from predict_proba by {diff:.3g} "
                         f"(tolerance {atol:g}) on {len(x)} samples; {target} was written for inspection")
    return report


# TensorProto FLOAT, DOUBLE, FLOAT16, BFLOAT16
_FLOAT_TYPES = (1, 11, 10, 16)


def _classifiers(estimator: Any) -> list[Any]:
    """The classifier whose zipmap option is set: the estimator, or a pipeline's final step."""
    steps = getattr(estimator, "steps", None)
    return _classifiers(steps[-1][1]) if steps else [estimator]
