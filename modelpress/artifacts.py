"""ModelArtifact: a torch module, an ONNX file or a TensorRT engine, plus what is needed to rebuild and judge it.

A saved artifact is a folder: the weights (``model.safetensors``) or the graph (``model.onnx`` and any external
data), then ``manifest.json`` written last as the commit marker. The manifest says how to rebuild the torch module
without pickle: the builder reference and keyword arguments, the saved tensor shapes (so structurally pruned layers
are resized before loading) and post-load transforms (e.g. dynamic INT8 quantization, re-applied deterministically).

The manifest also records the sha256 of every file it covers (``files``, since manifest version 2); loading checks
them, so a swapped, truncated or tampered weight file is exit 2 instead of a silently different model. Version-1
manifests (no hashes, written before modelpress 0.x added them) still load, with a note that nothing was verified.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import read_json, sha256_file, write_json
from .registry import Registry

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: no file hashes (loaded with an InputNote)


class InputNote(UserWarning):
    """An input that loads but was coerced or not verified (an unhashed manifest, float labels, float16 weights).

    Raised with :func:`warnings.warn`, so library users can filter it; the CLI prints each as ``note: …`` and
    ``evaluate`` records them in the report's stage notes."""
FORMATS = ("torch", "onnx", "tensorrt")
TASKS = ("classification", "embedding")  # what an artifact's outputs are: class scores, or sentence/sample embeddings


@dataclass(frozen=True)
class InputSpec:
    """One named model input; ``None`` in ``shape`` marks a dynamic axis (the batch axis always is)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> InputSpec:
        return cls(str(obj["name"]), tuple(None if d is None else int(d) for d in obj["shape"]), str(obj["dtype"]))

    def describe(self) -> str:
        dims = ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(self.shape))
        return f"{self.name!r} of shape ({dims}) {self.dtype}"


def check_inputs(specs: tuple[InputSpec, ...], batch: dict[str, np.ndarray], *, model: str) -> None:
    """Raise InputError, expected vs got, when a batch does not fit the model's inputs."""
    missing = [s.name for s in specs if s.name not in batch]
    if len(specs) == 1 and len(batch) == 1 and missing:
        # a single input maps to the single model input by position; its shape and dtype are still checked
        _check_one(specs[0], next(iter(batch.values())), model)
        return
    if missing:
        raise InputError(f"model {model} expects inputs {[s.name for s in specs]} but the data has {sorted(batch)}")
    for spec in specs:
        _check_one(spec, batch[spec.name], model)


def _check_one(spec: InputSpec, array: np.ndarray, model: str) -> None:
    got = f"got shape {tuple(array.shape)} {array.dtype}"
    if array.ndim != len(spec.shape) or any(
        want is not None and want != have for want, have in zip(spec.shape, array.shape)
    ):
        raise InputError(f"model {model} expects input {spec.describe()}, {got}")
    want_kind = np.dtype(spec.dtype).kind
    if want_kind == "f" and array.dtype.kind not in "f":
        raise InputError(f"model {model} expects input {spec.describe()}, {got}")
    if want_kind in "iu" and array.dtype.kind not in "iu":
        raise InputError(f"model {model} expects input {spec.describe()}, {got}")


@dataclass
class ModelArtifact:
    """A model in one of :data:`FORMATS`, with its inputs, classes and the history of stages that made it."""

    format: str
    inputs: tuple[InputSpec, ...]
    n_classes: int
    source: str
    module: Any = None  # torch.nn.Module for format "torch"
    path: Path | None = None  # ONNX / engine file, or the folder a torch artifact was saved to
    builder: dict[str, Any] | None = None  # {"ref": "zoo:cnn", "kwargs": {...}}
    transforms: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] | None = None
    task: str = "classification"  # or "embedding": outputs are embeddings (n_classes is their width), not logits

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown artifact format {self.format!r}", hint=f"use one of {FORMATS}")
        if self.task not in TASKS:
            raise InputError(f"unknown artifact task {self.task!r}", hint=f"use one of {TASKS}")

    @property
    def name(self) -> str:
        return self.history[-1]["kind"] if self.history else self.source

    def evolve(self, **changes: Any) -> ModelArtifact:
        """A copy with ``changes``; history, transforms and metadata are copied, never shared."""
        base = replace(
            self,
            history=[dict(h) for h in self.history],
            transforms=[dict(t) for t in self.transforms],
            metadata=dict(self.metadata),
        )
        return replace(base, **changes)

    # ---- files -----------------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """Every file that makes up the deployable artifact (graph + external data, or weights)."""
        if self.path is None:
            return []
        if self.format == "torch":
            weights = self.path / "model.safetensors"
            return [weights] if weights.exists() else []
        files = [self.path]
        if self.format == "onnx":
            from .onnx_utils import external_data_files

            files += external_data_files(self.path)
        return files

    def size_bytes(self) -> int | None:
        files = self.files()
        return sum(f.stat().st_size for f in files) if files else None

    def describe(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        files = self.files()
        path = files[0] if files else self.path
        shown = path
        if path is not None and relative_to is not None:
            try:
                shown = Path(os.path.relpath(path, relative_to))
            except ValueError:
                shown = path
        return {
            "path": str(shown) if shown is not None else self.source,  # an unsaved model: its reference
            "format": self.format,
            "sha256": sha256_file(files[0]) if files else None,
            "size_bytes": self.size_bytes(),
        }

    def manifest(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "format": self.format,
            "source": self.source,
            "inputs": [s.to_json() for s in self.inputs],
            "n_classes": self.n_classes,
            "class_names": list(self.class_names) if self.class_names else None,
            **({"task": self.task} if self.task != "classification" else {}),  # absent: a classifier, as before
            "builder": self.builder,
            "transforms": self.transforms,
            "history": self.history,
            "metadata": self.metadata,
            "files": self._file_hashes(),
        }

    def _file_hashes(self) -> dict[str, str]:
        """``{path relative to the artifact folder: sha256}`` of every file this artifact is made of."""
        if self.path is None:
            return {}
        folder = self.path if self.format == "torch" else Path(self.path).parent
        return {f.relative_to(folder).as_posix(): sha256_file(f) for f in self.files()}

    def save(self, folder: str | os.PathLike[str]) -> ModelArtifact:
        """Write the artifact into ``folder`` (data first, manifest last) and return it pointing there."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete until the manifest is back
        if self.format == "torch":
            saved = self._save_torch(folder)
        else:
            saved = self._save_file(folder)
        write_json(folder / MANIFEST, saved.manifest())
        return saved

    def _save_torch(self, folder: Path) -> ModelArtifact:
        from safetensors.torch import save as st_save

        if self.module is None:
            raise InputError("a torch artifact without a module cannot be saved")
        if self.builder is None:
            raise InputError(
                f"cannot save {self.source}: modelpress does not know how to rebuild this module",
                hint="load it from zoo:NAME or pkg.module:factory",
            )
        state = _weights_state(self.module, self.transforms)
        from .io import write_bytes

        write_bytes(folder / "model.safetensors", st_save(state, metadata={"format": "pt"}))
        builder = dict(self.builder)
        builder["shapes"] = {k: list(v.shape) for k, v in state.items()}
        return self.evolve(path=folder, builder=builder)

    def _save_file(self, folder: Path) -> ModelArtifact:
        if self.path is None:
            raise InputError(f"{self.format} artifact has no file to save")
        src = Path(self.path)
        dst = folder / ("model.onnx" if self.format == "onnx" else "model.engine")
        if src.resolve() != dst.resolve():
            from .io import atomic_write

            extra = []
            if self.format == "onnx":
                from .onnx_utils import external_data_files

                extra = external_data_files(src)
            for ext in extra:
                rel = ext.relative_to(src.parent)
                with atomic_write(folder / rel) as out, open(ext, "rb") as inp:
                    shutil.copyfileobj(inp, out)
            with atomic_write(dst) as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out)
        return self.evolve(path=dst)


def _weights_state(module: Any, transforms: list[dict[str, Any]]) -> dict[str, Any]:
    """The float state dict to save. Modules changed by a transform save the pre-transform weights."""
    pre = getattr(module, "_modelpress_float_state", None)
    state = pre if (transforms and pre is not None) else module.state_dict()
    return {k: v.detach().contiguous().clone() for k, v in state.items() if hasattr(v, "detach")}


# ---- post-load transforms -----------------------------------------------------------------------------------------
#: ``transform(module, params) -> module``: deterministic, re-applied every time an artifact is loaded.
Transform = Callable[[Any, dict[str, Any]], Any]
#: Transforms by the name a manifest records. They live on this floor, not with the stages that create them, so that
#: loading an artifact never imports the stages (before, this module imported ``modelpress.compress`` to find them);
#: third-party transforms come through the ``modelpress.transforms`` entry-point group.
TRANSFORMS: Registry[Transform] = Registry("model transform", entry_points="modelpress.transforms")

TORCH_DYNAMIC_INT8 = "torch_dynamic_int8"
_DYNAMIC_LAYERS = ("Linear", "LSTM", "GRU")


def apply_torch_dynamic_int8(module: Any, params: dict[str, Any]) -> Any:
    """Quantize ``params["layers"]`` (Linear/LSTM/GRU) of ``module`` to int8 weights with dynamic activations.

    ``torch.ao.quantization.quantize_dynamic`` has no calibration, so the same float weights give the same int8
    module every time: the artifact keeps the float weights and this re-applies the transform at load.
    """
    import torch
    from torch import nn
    from torch.ao.quantization import quantize_dynamic

    engine = str(params.get("engine", "x86"))
    if engine not in torch.backends.quantized.supported_engines:
        raise InputError(f"torch quantized engine {engine!r} is not available here",
                         hint=f"available: {', '.join(torch.backends.quantized.supported_engines)}")
    table = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU}
    names = list(params.get("layers", _DYNAMIC_LAYERS))
    unknown = [n for n in names if n not in table]
    if unknown:
        raise InputError(f"torch dynamic quantization handles {sorted(table)}, not {unknown}")
    torch.backends.quantized.engine = engine
    float_state = getattr(module, "_modelpress_float_state", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the torch.ao deprecation notice, once per call
        quantized = quantize_dynamic(module, {table[n] for n in names}, dtype=torch.qint8, inplace=False)
    if float_state is not None:
        quantized._modelpress_float_state = float_state
    return quantized.eval()


def register_builtins(registry: Registry[Transform]) -> None:
    """modelpress's own transforms."""
    registry.add(TORCH_DYNAMIC_INT8, apply_torch_dynamic_int8)


register_builtins(TRANSFORMS)


def apply_transforms(module: Any, transforms: list[dict[str, Any]]) -> Any:
    for t in transforms:
        transform = TRANSFORMS.find(t["name"])
        if transform is None:
            raise InputError(f"unknown model transform {t['name']!r} in manifest", hint="upgrade modelpress")
        try:
            module = transform(module, t.get("params", {}))
        except InputError:
            raise
        except Exception as exc:  # params come from a manifest: bad ones are the file's fault (exit 2)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise InputError(f"model transform {t['name']!r} cannot apply params {t.get('params')!r} "
                             f"({first})") from None
    return module


MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few KB; history with per-layer records stays far below


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if path.is_file() and path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"{path} is {path.stat().st_size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,}")
    try:
        manifest = read_json(path)
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be a modelpress manifest") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") not in READABLE_VERSIONS:
        raise InputError(f"{path} is not a modelpress manifest (version {MANIFEST_VERSION})")
    if manifest.get("format") not in FORMATS:
        raise InputError(f"{folder / MANIFEST}: unknown format {manifest.get('format')!r}")
    return manifest


def verify_manifest_files(folder: Path, manifest: dict[str, Any], needed: list[Path]) -> None:
    """Check the files an artifact is loaded from against the sha256 its manifest records; before parsing any.

    Every file in ``needed`` must be listed, and every listed file must be a relative path inside ``folder`` (not a
    symlink) whose hash matches. A version-1 manifest has no hashes: it loads with an :class:`InputNote`.

    Raises:
        InputError: exit 2 for a missing, unlisted, swapped or tampered file, naming it.
    """
    where = folder / MANIFEST
    if manifest.get("manifest_version") == 1:
        warnings.warn(f"{where} is a version-1 manifest without file hashes; its files were not verified "
                      f"(saving it again with this modelpress adds them)", InputNote, stacklevel=2)
        return
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise InputError(f"{where}: 'files' must map file names to sha256 hex digests")
    root = folder.resolve()
    for name, digest in files.items():
        target = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or target.is_symlink() \
                or root not in target.resolve().parents:
            raise InputError(f"{where}: file {name!r} is not a plain path inside the artifact folder")
    for path in needed:
        name = path.relative_to(folder).as_posix()
        if name not in files:
            raise InputError(f"{where} records no sha256 for {name}", hint="the artifact is incomplete; recreate it")
        if not path.is_file():
            raise InputError(f"{path} is missing")
        if sha256_file(path) != files[name]:
            raise InputError(f"{path} does not match the sha256 recorded in {where} (changed, swapped or "
                             f"corrupt)", hint="recreate the artifact, or restore the original file")
