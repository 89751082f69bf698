"""Safe ONNX loading: external data must stay inside the model's folder, checked before any byte is read."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError

_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 9: "bool", 3: "int8", 2: "uint8"}


def _load_proto(path: Path) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise InputError(f"ONNX model {path} does not exist")
    if not path.is_file():
        raise InputError(f"ONNX model {path} is not a file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path} is not a valid ONNX model (truncated or not protobuf: {type(exc).__name__})") from None


def _external_locations(model: Any) -> list[str]:
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    locations = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            locations.append(info.get("location", ""))
    return sorted(set(locations))


def checked_external_files(path: Path, model: Any | None = None) -> list[Path]:
    """External data files of ``path``, each verified to be a regular file inside the model's folder."""
    path = Path(path)
    model = _load_proto(path) if model is None else model
    base = path.parent.resolve()
    files = []
    for location in _external_locations(model):
        pure = PurePosixPath(location.replace("\\", "/"))
        if not location or pure.is_absolute() or os.path.isabs(location) or ".." in pure.parts:
            raise InputError(f"{path}: external data location {location!r} leaves the model's folder; refused")
        candidate = base / Path(*pure.parts)
        if candidate.is_symlink() or any(p.is_symlink() for p in candidate.parents if base in p.parents):
            raise InputError(f"{path}: external data {location!r} is a symlink; refused")
        real = Path(os.path.realpath(candidate))
        if base not in real.parents:
            raise InputError(f"{path}: external data {location!r} resolves outside the model's folder; refused")
        if not real.is_file():
            raise InputError(f"{path}: external data file {location!r} is missing")
        files.append(real)
    return files


def external_data_files(path: Path) -> list[Path]:
    return checked_external_files(Path(path))


def load_onnx(path: str | os.PathLike[str], *, with_data: bool = True) -> Any:
    """Load an ONNX model; external data only after every location has been checked."""
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    model = _load_proto(path)
    checked_external_files(path, model)
    if with_data:
        load_external_data_for_model(model, str(path.parent))
    return model


def graph_inputs(
    model: Any,
) -> tuple[list[tuple[str, tuple[int | None, ...] | None, str]], list[tuple[int | None, ...] | None]]:
    """(name, shape, dtype) of each real graph input (initializers excluded) and the output shapes.

    A shape is ``None`` when the graph declares a type but no shape (any rank: valid ONNX), as opposed to ``()``,
    a declared scalar.
    """
    initializers = {i.name for i in model.graph.initializer}

    def shape_of(value: Any) -> tuple[int | None, ...] | None:
        if not value.type.tensor_type.HasField("shape"):
            return None
        dims = value.type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)

    inputs = [
        (v.name, shape_of(v), _ONNX_TO_NUMPY.get(v.type.tensor_type.elem_type, "float32"))
        for v in model.graph.input
        if v.name not in initializers
    ]
    outputs = [shape_of(v) for v in model.graph.output]
    return inputs, outputs
