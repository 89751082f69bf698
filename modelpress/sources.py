"""Model references → :class:`ModelArtifact`. One syntax everywhere (CLI, ``--teacher``, ``--reference``, YAML).

``zoo:NAME`` · ``pkg.module:factory`` (+ ``--weights`` or ``@weights.safetensors``) · ``hf:DIR`` · ``model.onnx`` ·
``model.engine`` · a modelpress artifact folder (holding ``manifest.json``).

Trust model: the Python code a user names is trusted; files never are. Checkpoints load as safetensors or with
``torch.load(weights_only=True)``; there is no silent fallback to full unpickling.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .artifacts import MANIFEST, InputSpec, ModelArtifact, apply_transforms, read_manifest
from .data import PY_REF, Dataset
from .errors import InputError

ModelLoader = Callable[..., ModelArtifact]
_SCHEMES: dict[str, ModelLoader] = {}
_SUFFIXES: dict[str, ModelLoader] = {}


def register_model_scheme(scheme: str) -> Callable[[ModelLoader], ModelLoader]:
    def decorate(fn: ModelLoader) -> ModelLoader:
        _SCHEMES[scheme] = fn
        return fn

    return decorate


def register_model_suffix(suffix: str) -> Callable[[ModelLoader], ModelLoader]:
    def decorate(fn: ModelLoader) -> ModelLoader:
        _SUFFIXES[suffix] = fn
        return fn

    return decorate


def load_model(
    ref: str,
    *,
    data: Dataset | None = None,
    weights: str | None = None,
    trust_checkpoint: bool = False,
    **options: Any,
) -> ModelArtifact:
    """Resolve a model reference. ``data`` sizes zoo/factory models (input shape, class count)."""
    ref = str(ref).strip()
    if not ref:
        raise InputError("empty model reference", hint="use zoo:NAME, pkg.module:factory, hf:DIR, *.onnx or a folder")
    if "@" in ref and weights is None and not ref.startswith(("hf:",)):
        ref, weights = ref.rsplit("@", 1)
    path = Path(ref)
    scheme = ref.split(":", 1)[0] if ":" in ref else ""
    if scheme == "hf" and scheme not in _SCHEMES:
        from . import hf  # noqa: F401  (registers the hf: source; needs the optional transformers extra)
    if scheme in _SCHEMES:
        return _SCHEMES[scheme](ref, data=data, weights=weights, trust_checkpoint=trust_checkpoint, **options)
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()](ref, data=data, weights=weights, **options)
    if path.is_dir():
        return _load_folder(path, trust_checkpoint=trust_checkpoint)
    if PY_REF.match(ref):
        return _load_factory(ref, data=data, weights=weights, trust_checkpoint=trust_checkpoint)
    if path.suffix or "/" in ref:
        raise InputError(f"model {ref} does not exist or has an unknown type", hint=_KNOWN)
    raise InputError(f"unknown model reference {ref!r}", hint=_KNOWN)


_KNOWN = "use zoo:NAME, pkg.module:factory[@weights.safetensors], hf:DIR, model.onnx or a modelpress artifact folder"




def _need_data(ref: str, data: Dataset | None) -> Dataset:
    if data is None:
        raise InputError(f"{ref} needs data to size its inputs and classes", hint="pass --data")
    return data


def _torch_inputs(data: Dataset) -> tuple[InputSpec, ...]:
    return tuple(
        InputSpec(name, (None, *array.shape[1:]), str(array.dtype)) for name, array in data.inputs.items()
    )


@register_model_scheme("zoo")
def _load_zoo(ref: str, *, data: Dataset | None, weights: str | None, trust_checkpoint: bool = False,
              **kw: Any) -> ModelArtifact:
    data = _need_data(ref, data)
    kwargs = {"input_shape": list(data.sample_shape), "n_classes": data.n_classes, **kw.get("kwargs", {})}
    builder = {"ref": ref, "kwargs": kwargs}
    module = _build(builder, seed=kw.get("seed", 0))
    artifact = ModelArtifact(
        "torch", _torch_inputs(data), data.n_classes, ref, module=module, builder=builder, class_names=data.class_names
    )
    if weights:
        load_weights_into(artifact.module, weights, trust_checkpoint=trust_checkpoint)
    return artifact


def _load_factory(ref: str, *, data: Dataset | None, weights: str | None, trust_checkpoint: bool) -> ModelArtifact:
    data = _need_data(ref, data)
    fn = resolve_callable(ref)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    if "input_shape" in params:
        kwargs["input_shape"] = list(data.sample_shape)
    if "n_classes" in params:
        kwargs["n_classes"] = data.n_classes
    builder = {"ref": ref, "kwargs": kwargs}
    module = _build(builder)
    artifact = ModelArtifact(
        "torch", _torch_inputs(data), data.n_classes, ref, module=module, builder=builder, class_names=data.class_names
    )
    if weights:
        load_weights_into(module, weights, trust_checkpoint=trust_checkpoint)
    return artifact


def resolve_callable(ref: str) -> Callable[..., Any]:
    module_name, _, attr = ref.partition(":")
    if not attr:
        raise InputError(f"{ref!r} names no factory", hint="write pkg.module:factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # trusted code, but its import errors are the user's input problem
        raise InputError(f"cannot import {module_name!r} for {ref!r}: {type(exc).__name__}: {exc}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise InputError(f"{ref} is not callable")
    return fn


def _build(builder: dict[str, Any], *, seed: int = 0) -> Any:
    """Instantiate a module from a builder record, seeded so that an untrained zoo model is reproducible."""
    import torch
    from torch import nn

    ref = builder["ref"]
    kwargs = dict(builder.get("kwargs", {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if ref.startswith("zoo:"):
            from .zoo import build_zoo

            module = build_zoo(ref.split(":", 1)[1], **kwargs)
        elif ref.startswith("hf:"):
            module = _SCHEMES["hf"].build(builder)  # type: ignore[attr-defined]
        else:
            try:
                module = resolve_callable(ref)(**kwargs)
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"model factory {ref} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise InputError(f"{ref} returned {type(module).__name__}, not a torch.nn.Module")
    return module.eval()


# ---- checkpoints ------------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Tensors from a safetensors file or a ``torch.save``-d state_dict, never unpickling arbitrary objects."""
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"weights file {path} does not exist")
    if not path.is_file():
        raise InputError(f"weights path {path} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, OSError, ValueError, … all mean a damaged file
            raise InputError(f"{path} is truncated or corrupt ({_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol warnings on corrupt files; the error below says it all
            obj = torch.load(str(path), map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "unsupported global" not in str(exc).lower():
            raise InputError(f"{path} is truncated or corrupt ({_first_line(exc)})") from None
        raise InputError(
            f"{path} is a pickle that torch.load(weights_only=True) refused ({_first_line(exc)}); it was not run",
            hint="save a state_dict or safetensors (or pass --trust-checkpoint for a file you made yourself)",
        ) from None
    except Exception as exc:  # a corrupt file surfaces as EOFError, RuntimeError, UnicodeDecodeError, IndexError, …
        raise InputError(f"{path} is truncated or corrupt ({_first_line(exc)})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if isinstance(obj, torch.nn.Module):
        raise InputError(f"{path} holds a whole pickled module", hint="save a state_dict or safetensors")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} is not a state_dict of tensors", hint="save a state_dict or safetensors")
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def load_weights_into(module: Any, weights: str | Path, *, trust_checkpoint: bool = False) -> None:
    load_state_into(module, read_state_dict(weights, trust_checkpoint=trust_checkpoint), source=str(weights))


def load_state_into(module: Any, state: dict[str, Any], *, source: str) -> None:
    """load_state_dict(strict) with one error listing missing/unexpected keys, shape and dtype mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    ]
    dtypes = [
        f"{k}: model {own[k].dtype} vs file {state[k].dtype}"
        for k in own
        if k in state and own[k].is_floating_point() != state[k].is_floating_point()
    ]
    if missing or unexpected or shapes or dtypes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes), ("dtype", dtypes)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{', …' if len(items) > 3 else ''})")
        raise InputError(f"weights {source} do not match the model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)


def resize_to_state(module: Any, shapes: dict[str, list[int]]) -> None:
    """Give parameters/buffers the saved shapes (structurally pruned layers) and fix the layers' size attributes."""
    import torch
    from torch import nn

    for key, shape in shapes.items():
        owner_name, _, attr = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        current = getattr(owner, attr, None)
        if not isinstance(current, torch.Tensor) or list(current.shape) == list(shape):
            continue
        fresh = torch.zeros(shape, dtype=current.dtype)
        if isinstance(current, nn.Parameter):
            setattr(owner, attr, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            owner._buffers[attr] = fresh
    for sub in module.modules():
        if isinstance(sub, nn.modules.conv._ConvNd):
            sub.out_channels = sub.weight.shape[0]
            sub.in_channels = sub.weight.shape[1] * sub.groups
        elif isinstance(sub, nn.Linear):
            sub.out_features, sub.in_features = sub.weight.shape
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.num_features = sub.weight.shape[0] if sub.weight is not None else sub.running_mean.shape[0]
        elif isinstance(sub, nn.LayerNorm) and sub.weight is not None:
            sub.normalized_shape = tuple(sub.weight.shape)


def _load_folder(folder: Path, *, trust_checkpoint: bool = False) -> ModelArtifact:
    if not (folder / MANIFEST).exists():
        raise InputError(f"{folder} is a folder without {MANIFEST}", hint="point at a modelpress artifact folder or a model file")
    m = read_manifest(folder)
    common = dict(
        inputs=tuple(InputSpec.from_json(i) for i in m["inputs"]),
        n_classes=int(m["n_classes"]),
        source=str(m["source"]),
        transforms=list(m.get("transforms") or []),
        history=list(m.get("history") or []),
        metadata=dict(m.get("metadata") or {}),
        class_names=tuple(m["class_names"]) if m.get("class_names") else None,
    )
    if m["format"] == "torch":
        builder = m.get("builder")
        if not isinstance(builder, dict) or "ref" not in builder:
            raise InputError(f"{folder / MANIFEST} has no builder record; cannot rebuild the module")
        module = _build(builder)
        state = read_state_dict(folder / "model.safetensors")
        if builder.get("resized"):
            resize_to_state(module, builder.get("shapes", {}))
        load_state_into(module, state, source=str(folder / "model.safetensors"))
        if common["transforms"]:
            module._modelpress_float_state = {k: v.clone() for k, v in module.state_dict().items()}
            module = apply_transforms(module, common["transforms"])
        return ModelArtifact("torch", module=module.eval(), path=folder, builder=builder, **common)
    name = "model.onnx" if m["format"] == "onnx" else "model.engine"
    path = folder / name
    if m["format"] == "onnx":
        from .onnx_utils import load_onnx

        load_onnx(path, with_data=False)  # validates protobuf + external data before anyone reads it
    elif not path.is_file():
        raise InputError(f"{path} is missing")
    return ModelArtifact(m["format"], path=path, builder=m.get("builder"), **common)


@register_model_suffix(".onnx")
def _load_onnx_file(ref: str, *, data: Dataset | None = None, **_: Any) -> ModelArtifact:
    from .onnx_utils import graph_inputs, load_onnx

    path = Path(ref)
    model = load_onnx(path, with_data=False)
    inputs, outputs = graph_inputs(model)
    if not inputs or not outputs:
        raise InputError(f"{path} has no inputs or no outputs")
    specs = tuple(InputSpec(name, tuple(None if i == 0 else d for i, d in enumerate(shape)), dtype)
                  for name, shape, dtype in inputs)
    floats = [i for i, o in enumerate(model.graph.output) if o.type.tensor_type.elem_type in (1, 10, 11, 16)]
    scores = outputs[floats[0] if floats else 0]  # the scores, as the runner picks them (not an int label output)
    n_classes = scores[-1] if scores and scores[-1] else None
    if n_classes in (None, 1) and data is not None:
        n_classes = data.n_classes if n_classes is None else 2
    if n_classes is None:
        raise InputError(f"{path}: cannot tell the class count from its output shape", hint="pass --data")
    return ModelArtifact(
        "onnx", specs, int(n_classes), str(path), path=path, class_names=data.class_names if data else None
    )
