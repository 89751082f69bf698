"""Model references → :class:`ModelArtifact`. One syntax everywhere (CLI, ``--teacher``, ``--reference``, YAML).

``zoo:NAME`` · ``pkg.module:factory`` (+ ``--weights`` or ``@weights.safetensors``) · ``hf:DIR`` · ``model.onnx`` ·
``model.engine`` · a modelpress artifact folder (holding ``manifest.json``).

Trust model: the Python code a user names is trusted; files never are. Checkpoints load as safetensors or with
``torch.load(weights_only=True)``; there is no silent fallback to full unpickling. A manifest is data: the builder it
names is checked against :func:`check_builder` *before anything is imported* — modelpress's own builders (``zoo:``,
``hf:``, with validated arguments) always pass; a ``pkg.module:factory`` passes only when the user named that same
factory again (``--model-code``, a pipeline's ``model:``) or trusted all code (``--trust-code``), like
``trust_remote_code`` in transformers.

Sources live in one :data:`SOURCES` registry keyed by scheme (``zoo``, ``hf``) or suffix (``.onnx``), filled here by
:func:`register_builtins` and by plugins through the ``modelpress.sources`` entry-point group; a source is called as
``loader(ref, *, data, trust_checkpoint, **options)`` with the parsed :class:`~modelpress.refs.Reference` (its
``weights`` already merged with ``--weights``). Artifact folders and ``pkg.module:factory`` code are reference kinds,
not registry entries: they are tried after the registered suffixes, in that order.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pickle
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .artifacts import (
    MANIFEST,
    InputNote,
    InputSpec,
    ModelArtifact,
    apply_transforms,
    read_manifest,
    verify_manifest_files,
)
from .data import Dataset
from .errors import InputError
from .refs import Reference, parse_model_ref
from .registry import Registry

#: ``loader(ref: Reference, *, data, trust_checkpoint, **options) -> ModelArtifact``.
ModelLoader = Callable[..., ModelArtifact]
#: Model sources by scheme (``"zoo"``) or suffix (``".onnx"``, a name starting with a dot).
SOURCES: Registry[ModelLoader] = Registry("model source", entry_points="modelpress.sources")


def model_schemes() -> tuple[str, ...]:
    """Scheme names a model reference may start with (built-in and plugins'): what :mod:`modelpress.refs` needs."""
    return tuple(n for n in SOURCES.names() if not n.startswith("."))


def parse_model(ref: str) -> Reference:
    """``ref`` parsed with the registered schemes."""
    return parse_model_ref(str(ref), schemes=model_schemes())


def _builder_ref(ref: str) -> Reference:
    """A builder reference read from a manifest: only modelpress's builders are schemes, and the file system is
    not consulted (a file called ``zoo:mlp`` in the working folder must not change what a manifest means)."""
    return parse_model_ref(ref, schemes=("zoo", "hf"), exists=lambda _: False)


def load_model(
    ref: str,
    *,
    data: Dataset | None = None,
    weights: str | None = None,
    trust_checkpoint: bool = False,
    **options: Any,
) -> ModelArtifact:
    """Resolve a model reference. ``data`` sizes zoo/factory models (input shape, class count).

    ``weights`` (``--weights``) replaces weights attached to the reference with ``@``.
    """
    parsed = parse_model(ref)
    if weights is not None:
        parsed = replace(parsed, weights=str(weights))
    if parsed.kind == "scheme":
        return SOURCES.get(parsed.scheme)(parsed, data=data, trust_checkpoint=trust_checkpoint, **options)
    path = Path(parsed.body)
    suffix = path.suffix.lower()
    if parsed.kind == "path" and suffix and SOURCES.find(suffix) is not None:
        return SOURCES.get(suffix)(parsed, data=data, trust_checkpoint=trust_checkpoint, **options)
    if parsed.kind == "path" and path.is_dir():
        return _load_folder(path, trust_checkpoint=trust_checkpoint)
    if parsed.kind == "code":
        return _load_factory(parsed, data=data, trust_checkpoint=trust_checkpoint)
    if path.suffix or "/" in parsed.body:
        raise InputError(f"model {parsed.body} does not exist or has an unknown type", hint=_KNOWN)
    raise InputError(f"unknown model reference {parsed.base!r}", hint=_KNOWN)


_KNOWN = "use zoo:NAME, pkg.module:factory[@weights.safetensors], hf:DIR, model.onnx or a modelpress artifact folder"


# ---- code trust -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodeTrust:
    """The ``pkg.module:factory`` references a *file* (a manifest) may make modelpress run in this context."""

    refs: frozenset[str] = frozenset()
    everything: bool = False

    def allows(self, ref: str) -> bool:
        return self.everything or ref in self.refs


_CODE_TRUST: ContextVar[CodeTrust] = ContextVar("modelpress_code_trust", default=CodeTrust())


def code_ref(ref: str) -> str | None:
    """``pkg.module:factory`` of a user's model reference (weights after ``@`` dropped), else None."""
    if not str(ref).strip():
        return None
    parsed = parse_model_ref(str(ref), exists=lambda _: False)  # code is named by text, never by a file
    return parsed.body if parsed.kind == "code" else None


@contextlib.contextmanager
def trusted_code(refs: Iterable[str] = (), *, everything: bool = False) -> Iterator[CodeTrust]:
    """Within the block, manifests naming one of ``refs`` (or any code, with ``everything``) may be rebuilt.

    Scopes nest and only ever add trust; leaving the block restores what was trusted before. ``refs`` that are not
    ``pkg.module:factory`` references (zoo:, files, folders) are ignored, so callers may pass every model they were
    given.
    """
    current = _CODE_TRUST.get()
    named = {r for r in (code_ref(x) for x in refs) if r}
    token = _CODE_TRUST.set(CodeTrust(current.refs | named, current.everything or everything))
    try:
        yield _CODE_TRUST.get()
    finally:
        _CODE_TRUST.reset(token)


def allow_code(refs: Iterable[str] = (), *, everything: bool = False) -> None:
    """Add trust for the rest of the current context: the CLI's ``--model-code`` / ``--trust-code``.

    The CLI opens a :func:`trusted_code` scope per invocation, so this never outlives one command.
    """
    for ref in refs:
        if not code_ref(ref):
            raise InputError(f"--model-code {ref!r} is not a pkg.module:factory reference")
    current = _CODE_TRUST.get()
    _CODE_TRUST.set(CodeTrust(current.refs | {code_ref(r) for r in refs}, current.everything or everything))


_BUILDER_KEYS = {"ref", "kwargs", "shapes", "resized"}
_ATTN = ("eager", "sdpa")
_HF_KWARGS = {"n_classes": int, "attn": str, "task": str, "pooling": str, "normalize": bool, "keep_layers": list}
_HF_CHOICES = {"attn": _ATTN, "task": ("classification", "embedding"),
               "pooling": ("mean", "cls", "max", "mean_sqrt_len")}  # hf.TASKS / hf.POOLINGS, as data (no import)


def check_builder(builder: Any, *, where: str) -> dict[str, Any]:
    """Validate a builder record read from a file; nothing is imported or called here.

    Allowed: ``zoo:NAME`` with JSON keyword arguments the zoo factory declares, ``hf:DIR`` with ``n_classes`` and
    ``attn``, and the structurally pruned rebuild (``resized`` + ``shapes``, integer lists). Any other reference runs
    code; it passes only when the current :class:`CodeTrust` allows it.

    Raises:
        InputError: exit 2, naming the reference and what to do, before any import.
    """
    if not isinstance(builder, dict) or not isinstance(builder.get("ref"), str):
        raise InputError(f"{where}: builder must be an object with a string 'ref'; cannot rebuild the module")
    unknown = sorted(set(builder) - _BUILDER_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown builder keys {unknown}", hint=f"allowed: {sorted(_BUILDER_KEYS)}")
    ref = builder["ref"]
    kwargs = builder.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InputError(f"{where}: builder.kwargs must be an object with string keys")
    if not _plain_json(kwargs):
        raise InputError(f"{where}: builder.kwargs may hold only numbers, strings, booleans and lists of them")
    shapes = builder.get("shapes", {})
    if not isinstance(shapes, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and len(v) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in v)
        for k, v in shapes.items()
    ):
        raise InputError(f"{where}: builder.shapes must map tensor names to lists of non-negative integers")
    if not isinstance(builder.get("resized", False), bool):
        raise InputError(f"{where}: builder.resized must be true or false")
    parsed = _builder_ref(ref)
    if parsed.scheme == "zoo":
        from .zoo import ZOO

        name = parsed.body  # zoo:NAME?option=value: options are arguments too
        if name not in ZOO:
            raise InputError(f"{where}: unknown zoo model {name!r}", hint=f"choose one of {', '.join(sorted(ZOO))}")
        accepted = set(inspect.signature(ZOO[name]).parameters)
        extra = sorted((set(kwargs) | {k for k, _ in parsed.options}) - accepted)
        if extra:
            raise InputError(f"{where}: zoo:{name} takes no arguments {extra}", hint=f"it takes {sorted(accepted)}")
        return builder
    if parsed.scheme == "hf":
        for key, value in kwargs.items():
            want = _HF_KWARGS.get(key)
            if want is None or not isinstance(value, want) or (isinstance(value, bool) and want is not bool):
                raise InputError(f"{where}: hf builder argument {key}={value!r} is not allowed",
                                 hint="hf: builders take n_classes (int), attn (eager or sdpa), keep_layers "
                                      "(list of ints) and, for embedding models, task, pooling and normalize "
                                      "(true/false)")
        for key, allowed in _HF_CHOICES.items():
            if key in kwargs and kwargs[key] not in allowed:
                raise InputError(f"{where}: hf builder {key}={kwargs[key]!r}", hint=f"use one of {allowed}")
        if "keep_layers" in kwargs:  # depth pruning (prune --method layers): increasing layer indices, checked
            keep = kwargs["keep_layers"]  # against the folder's layer count when it is rebuilt (hf.build_module)
            if not keep or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 4096 for i in keep) \
                    or keep != sorted(set(keep)):
                raise InputError(f"{where}: hf builder keep_layers={keep!r} must be a non-empty increasing list of "
                                 f"layer indices ≥ 0")
        if ("n_classes" in kwargs) == (kwargs.get("task") == "embedding"):
            raise InputError(f"{where}: an hf builder is a classifier (n_classes) or an embedding model "
                             f"(task: embedding), exactly one of them")
        _check_hf_target(parsed.body, where)
        if "keep_layers" in kwargs:
            n_layers = _hf_layer_count(parsed.body)
            if n_layers is not None and kwargs["keep_layers"][-1] >= n_layers:
                raise InputError(f"{where}: hf builder keep_layers={kwargs['keep_layers']} names layers beyond the "
                                 f"{n_layers} of {ref}", hint=f"layer indices are 0 to {n_layers - 1}")
        return builder
    if parsed.kind != "code" or parsed.weights or parsed.options:
        raise InputError(f"{where}: builder {ref!r} is not one of modelpress's builders (zoo:NAME, hf:DIR) "
                         f"or a pkg.module:factory reference")
    if not _CODE_TRUST.get().allows(ref):
        raise InputError(
            f"{where} asks to run the model factory {ref}; modelpress does not run code named by a file, and it "
            f"was not imported",
            hint=f"if you trust it, name it yourself: --model-code {ref} (or pass --trust-code)",
        )
    return builder


def _check_hf_target(name: str, where: str) -> None:
    """``hf:NAME`` resolves to a folder, or to an installed model package that ``hf.py`` would *import*. From a
    file, a package is accepted only when it is one (a ``model/config.json`` beside its ``__init__``), found with
    ``importlib.util.find_spec``, which runs no module code: ``hf:antigravity`` must not open a browser."""
    import importlib.util

    if not name or Path(name).is_dir():
        return
    module_name = name.replace("-", "_")
    spec = importlib.util.find_spec(module_name) if module_name.isidentifier() else None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not any((Path(f) / "model" / "config.json").is_file() for f in folders):
        raise InputError(f"{where}: builder hf:{name} is neither a model folder nor an installed model package; "
                         f"it was not imported")


def _hf_layer_count(name: str) -> int | None:
    """``num_hidden_layers`` of the folder ``hf:NAME`` names, read from its config.json as data (None if unknown)."""
    import importlib.util
    import json

    folder = Path(name)
    if not folder.is_dir():
        module_name = name.replace("-", "_")
        spec = importlib.util.find_spec(module_name) if module_name.isidentifier() else None
        found = [Path(f) / "model" for f in (spec.submodule_search_locations or [])] if spec is not None else []
        folder = next((f for f in found if (f / "config.json").is_file()), folder)
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _plain_json(value: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return len(value) <= 1024 and all(_plain_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v, depth + 1) for k, v in value.items())
    return False




def _need_data(ref: str, data: Dataset | None) -> Dataset:
    if data is None:
        raise InputError(f"{ref} needs data to size its inputs and classes", hint="pass --data")
    return data


def _torch_inputs(data: Dataset) -> tuple[InputSpec, ...]:
    return tuple(
        InputSpec(name, (None, *array.shape[1:]), str(array.dtype)) for name, array in data.inputs.items()
    )


_TRUE = ("1", "true", "yes")


def _load_zoo(ref: Reference, *, data: Dataset | None, trust_checkpoint: bool = False, **kw: Any) -> ModelArtifact:
    """``zoo:NAME[?option=value][@weights]``, sized by ``data``.

    A ``pretrained`` model, or one sized by unlabelled data, keeps the class count of its weights (the factory's
    default, 1000 for ImageNet), not the data's; its builder record drops ``pretrained`` (a saved artifact's own weights file restores every weight, so
    reloading it needs no weights package). ``@weights`` for the ImageNet CNNs go through
    :func:`modelpress.zoo.convert_checkpoint`, so torchvision files and ``module.``/``model.`` prefixed keys load.
    """
    from .zoo import ZOO, convert_checkpoint
    from .zoo.checkpoints import layouts_for

    data = _need_data(ref.base, data)
    name = ref.body
    extra = dict(kw.get("kwargs", {}))
    pretrained = str(ref.option("pretrained", "0")).lower() in _TRUE or extra.get("pretrained") is True
    n_classes = data.n_classes
    if (pretrained or not data.labelled) and name in ZOO:  # unlabelled images do not tell the class count
        default = inspect.signature(ZOO[name]).parameters.get("n_classes")
        if default is not None and isinstance(default.default, int):
            n_classes = default.default
    kwargs = {"input_shape": list(data.sample_shape), "n_classes": n_classes, **extra}
    module = _build({"ref": _zoo_ref(name, ref.options), "kwargs": kwargs}, seed=kw.get("seed", 0))
    kept = tuple((k, v) for k, v in ref.options if k != "pretrained")
    builder = {"ref": _zoo_ref(name, kept), "kwargs": {k: v for k, v in kwargs.items() if k != "pretrained"}}
    class_names = data.class_names if data.n_classes == n_classes else None
    artifact = ModelArtifact(
        "torch", _torch_inputs(data), n_classes, _zoo_ref(name, ref.options), module=module, builder=builder,
        class_names=class_names,
    )
    if ref.weights:
        state = read_state_dict(ref.weights, trust_checkpoint=trust_checkpoint)
        if layouts_for(name):  # torchvision / efficientnet_lite_pytorch key names, prefixes, old BN files
            state = convert_checkpoint(name, state, module)
        load_state_into(module, state, source=ref.weights)
    return artifact


def _zoo_ref(name: str, options: tuple[tuple[str, str], ...]) -> str:
    return f"zoo:{name}" + (f"?{urlencode(options)}" if options else "")


def _load_factory(parsed: Reference, *, data: Dataset | None, trust_checkpoint: bool) -> ModelArtifact:
    ref, weights = parsed.body, parsed.weights
    data = _need_data(ref, data)
    fn = resolve_callable(ref)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    if "input_shape" in params:
        kwargs["input_shape"] = list(data.sample_shape)
    if "n_classes" in params:
        kwargs["n_classes"] = data.n_classes
    builder = {"ref": ref, "kwargs": kwargs}
    with trusted_code([ref]):  # the user named this factory
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
    parsed = _builder_ref(ref)
    kwargs = dict(builder.get("kwargs", {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if parsed.scheme == "zoo":
            from .zoo import build_zoo

            try:
                module = build_zoo(_zoo_ref(parsed.body, parsed.options)[4:], **kwargs)
            except InputError:
                raise
            except Exception as exc:  # a manifest's widths are user input: a bad one is exit 2, not a crash
                raise InputError(f"{ref} cannot be built with {kwargs} ({_first_line(exc)})") from None
        elif parsed.scheme == "hf":
            from .hf import build_module

            module = build_module(builder)
        else:
            if not _CODE_TRUST.get().allows(ref):  # the one place a factory is called: never one nobody named
                raise InputError(f"model factory {ref} was not named by the user; it was not imported",
                                 hint=f"name it: --model-code {ref} (or pass --trust-code)")
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
    cast = sorted({f"{state[k].dtype} → {own[k].dtype}".replace("torch.", "") for k in own
                   if own[k].is_floating_point() and state[k].dtype != own[k].dtype})
    if cast:  # load_state_dict copies into the model's dtype: say so instead of converting silently
        n = sum(1 for k in own if own[k].is_floating_point() and state[k].dtype != own[k].dtype)
        warnings.warn(f"weights {source}: {n} tensors converted ({', '.join(cast)}) to the model's dtype",
                      InputNote, stacklevel=2)
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
            if 1 < sub.groups == sub.in_channels == sub.out_channels and sub.weight.shape[1] == 1:
                sub.groups = sub.weight.shape[0]  # a depthwise conv stays depthwise: one group per kept channel
            sub.out_channels = sub.weight.shape[0]
            sub.in_channels = sub.weight.shape[1] * sub.groups
        elif isinstance(sub, nn.Linear):
            sub.out_features, sub.in_features = sub.weight.shape
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.num_features = sub.weight.shape[0] if sub.weight is not None else sub.running_mean.shape[0]
        elif isinstance(sub, nn.LayerNorm) and sub.weight is not None:
            sub.normalized_shape = tuple(sub.weight.shape)


def _load_folder(folder: Path, *, trust_checkpoint: bool = False) -> ModelArtifact:
    """Load an artifact folder. Its manifest is data: every field is validated, the builder is checked against the
    allow-list (:func:`check_builder`) and the files are checked against their recorded sha256 before anything is
    imported or parsed."""
    if not (folder / MANIFEST).exists():
        raise InputError(f"{folder} is a folder without {MANIFEST}", hint="point at a modelpress artifact folder or a model file")
    m = read_manifest(folder)
    where = str(folder / MANIFEST)
    common = dict(
        inputs=_manifest_inputs(m.get("inputs"), where),
        n_classes=_manifest_int(m.get("n_classes"), "n_classes", where, low=1),
        source=str(m.get("source", folder)),
        transforms=_manifest_list(m.get("transforms"), "transforms", where),
        history=_manifest_list(m.get("history"), "history", where),
        metadata=m.get("metadata") if isinstance(m.get("metadata"), dict) else {},
        class_names=_manifest_class_names(m.get("class_names"), where),
        task=_manifest_task(m.get("task"), m.get("builder"), where),
    )
    for t in common["transforms"]:
        if not isinstance(t.get("name"), str) or not isinstance(t.get("params", {}), dict):
            raise InputError(f"{where}: each transform needs a string 'name' and an object 'params'")
    names = common["class_names"]
    if names is not None and len(names) != common["n_classes"]:
        raise InputError(f"{where}: class_names has {len(names)} entries but n_classes is {common['n_classes']}")
    if m["format"] == "torch":
        builder = check_builder(m.get("builder"), where=where)  # before any import: refuses code nobody named
        built = builder.get("kwargs", {}).get("n_classes")
        if built is not None and built != common["n_classes"]:
            raise InputError(f"{where}: n_classes is {common['n_classes']} but the builder makes {built!r} outputs "
                             f"(builder.kwargs.n_classes)", hint="the manifest was edited; restore or recreate it")
        weights = folder / "model.safetensors"
        verify_manifest_files(folder, m, [weights])
        module = _build(builder)
        state = read_state_dict(weights)
        if builder.get("resized"):
            try:
                resize_to_state(module, builder.get("shapes", {}))
            except (AttributeError, ValueError, RuntimeError, TypeError) as exc:
                raise InputError(f"{where}: builder.shapes do not fit {builder['ref']} ({_first_line(exc)})") from None
        load_state_into(module, state, source=str(weights))
        if common["transforms"]:
            module._modelpress_float_state = {k: v.clone() for k, v in module.state_dict().items()}
            module = apply_transforms(module, common["transforms"])
        return ModelArtifact("torch", module=module.eval(), path=folder, builder=builder, **common)
    name = "model.onnx" if m["format"] == "onnx" else "model.engine"
    path = folder / name
    builder = m.get("builder")
    if builder is not None:
        builder = check_builder(builder, where=where)  # recorded for provenance; still only data
    if m["format"] == "onnx":
        from .onnx_utils import external_data_files, load_onnx

        load_onnx(path, with_data=False)  # validates protobuf + external data before anyone reads it
        verify_manifest_files(folder, m, [path, *external_data_files(path)])
    elif not path.is_file():
        raise InputError(f"{path} is missing")
    else:
        verify_manifest_files(folder, m, [path])
    return ModelArtifact(m["format"], path=path, builder=builder, **common)


def _manifest_task(value: Any, builder: Any, where: str) -> str:
    """``task`` of a manifest (absent: a classifier, as every manifest before it); an hf builder must agree."""
    from .artifacts import TASKS

    task = "classification" if value is None else value
    if task not in TASKS:
        raise InputError(f"{where}: task must be one of {', '.join(TASKS)}, got {value!r}")
    kwargs = builder.get("kwargs") if isinstance(builder, dict) else None
    built = kwargs.get("task", "classification") if isinstance(kwargs, dict) else None
    if built is not None and str(builder.get("ref", "")).startswith("hf:") and built != task:
        raise InputError(f"{where}: task is {task!r} but the builder makes a {built!r} model",
                         hint="the manifest was edited; restore or recreate it")
    return task


def _manifest_int(value: Any, key: str, where: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{where}: {key} must be an integer ≥ {low}, got {value!r}")
    return value


def _manifest_list(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InputError(f"{where}: {key} must be a list of objects, got {type(value).__name__}")
    return [dict(v) for v in value]


def _manifest_class_names(value: Any, where: str) -> tuple[str, ...] | None:
    if not value:
        return None
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise InputError(f"{where}: class_names must be a list of strings")
    return tuple(str(v) for v in value)


def _manifest_inputs(value: Any, where: str) -> tuple[InputSpec, ...]:
    """InputSpecs from a manifest; every dimension an integer ≥ 1 or null, dtypes numpy names (key path on error)."""
    import numpy as np

    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: inputs must be a non-empty list")
    specs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("shape"), list):
            raise InputError(f"{where}: inputs[{i}] needs a string 'name' and a list 'shape'")
        for j, d in enumerate(item["shape"]):
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1):
                raise InputError(f"{where}: inputs[{i}].shape[{j}] must be an integer ≥ 1 or null, got {d!r}")
        dtype = item.get("dtype", "float32")
        try:
            if not isinstance(dtype, str) or np.dtype(dtype).kind not in "biuf":
                raise TypeError(dtype)
        except (TypeError, ValueError):
            raise InputError(f"{where}: inputs[{i}].dtype {dtype!r} is not a numeric numpy dtype") from None
        specs.append(InputSpec(item["name"], tuple(item["shape"]), str(dtype)))
    return tuple(specs)


def _load_onnx_file(ref: Reference, *, data: Dataset | None = None, **_: Any) -> ModelArtifact:
    from .onnx_utils import graph_inputs, load_onnx

    path = Path(ref.body)
    model = load_onnx(path, with_data=False)
    inputs, outputs = graph_inputs(model)
    if not inputs or not outputs:
        raise InputError(f"{path} has no inputs or no outputs")
    specs = []
    for name, shape, dtype in inputs:
        if shape is None:  # a type without a shape: any rank is valid ONNX; the data says what it gets
            array = _data_array(data, name, len(inputs))
            if array is None:
                raise InputError(f"{path}: input {name!r} declares no shape, so modelpress cannot size it",
                                 hint="pass --data (its arrays give the shape)")
            shape = tuple(array.shape)
        specs.append(InputSpec(name, tuple(None if i == 0 else d for i, d in enumerate(shape)), dtype))
    floats = [i for i, o in enumerate(model.graph.output) if o.type.tensor_type.elem_type in (1, 10, 11, 16)]
    scores = outputs[floats[0] if floats else 0]  # the scores, as the runner picks them (not an int label output)
    n_classes = scores[-1] if scores and scores[-1] else None
    if n_classes in (None, 1) and data is not None:
        n_classes = data.n_classes if n_classes is None else 2
    if n_classes is None:
        raise InputError(f"{path}: cannot tell the class count from its output shape", hint="pass --data")
    return ModelArtifact(
        "onnx", tuple(specs), int(n_classes), str(path), path=path, class_names=data.class_names if data else None
    )


def _data_array(data: Dataset | None, name: str, n_inputs: int) -> Any:
    """The data array feeding model input ``name`` (by name, or the only array for a single-input model)."""
    if data is None:
        return None
    if name in data.inputs:
        return data.inputs[name]
    return next(iter(data.inputs.values())) if n_inputs == 1 and len(data.inputs) == 1 else None


def _load_hf(ref: Reference, *, data: Dataset | None = None, trust_checkpoint: bool = False,
             **options: Any) -> ModelArtifact:
    """``hf:DIR[@weights.safetensors]`` → a torch artifact (classes from ``kwargs``, the head weights or the data).

    ``@weights`` holds head weights (keys ``head.*``) or a whole state dict.
    """
    from .hf import INPUT_NAMES, embedding_kwargs, resolve_model_dir

    base, weights = ref.base, ref.weights
    resolve_model_dir(ref.body)  # a missing folder is the first thing to hear about
    state = read_state_dict(weights, trust_checkpoint=trust_checkpoint) if weights else None
    n_classes = int(options.get("kwargs", {}).get("n_classes", 0))
    embedding = embedding_kwargs(ref.body, ref.options, data=data, attn=str(options.get("attn", "eager")),
                                 classifier_asked=bool(n_classes) or (state is not None and "head.weight" in state))
    if embedding is not None:  # pooled (normalized) sentence embeddings: no head, no class count
        return _hf_embedder(base, embedding, state, weights, data)
    if not n_classes and state is not None and "head.weight" in state:
        n_classes = int(state["head.weight"].shape[0])
    if not n_classes and data is not None:
        n_classes = data.n_classes
    if not n_classes:
        raise InputError(f"{base} needs the class count", hint="pass --data, or head weights (head.weight)")
    if data is not None and set(data.inputs) != set(INPUT_NAMES):
        raise InputError(f"{base} takes inputs {list(INPUT_NAMES)} but data {data.source} has {sorted(data.inputs)}",
                         hint="use text data (*.jsonl, a *.csv with a text column, or text:FILE?tokenizer=...)")
    builder = {"ref": base, "kwargs": {"n_classes": n_classes, "attn": str(options.get("attn", "eager"))}}
    module = _build(builder, seed=int(options.get("seed", 0)))
    if state is not None:
        if all(k.startswith("head.") for k in state):
            load_state_into(module.head, {k[5:]: v for k, v in state.items()}, source=str(weights))
        else:
            load_state_into(module, state, source=str(weights))
    inputs = tuple(InputSpec(name, (None, None), "int64") for name in INPUT_NAMES)
    class_names = data.class_names if data is not None and data.n_classes == n_classes else None
    return ModelArtifact("torch", inputs, n_classes, base, module=module, builder=builder, class_names=class_names)


def _hf_embedder(base: str, kwargs: dict[str, Any], state: Any, weights: str | None,
                 data: Dataset | None) -> ModelArtifact:
    """The ``task: embedding`` artifact of ``hf:DIR``: its output width is the embedding size (``n_classes``)."""
    from .hf import INPUT_NAMES

    if data is not None and set(data.inputs) != set(INPUT_NAMES):
        raise InputError(f"{base} takes inputs {list(INPUT_NAMES)} but data {data.source} has {sorted(data.inputs)}",
                         hint="use text data (*.jsonl, text:FILE?tokenizer=..., pairs:FILE.jsonl)")
    builder = {"ref": base, "kwargs": kwargs}
    module = _build(builder)
    if state is not None:
        load_state_into(module, state, source=str(weights))
    inputs = tuple(InputSpec(name, (None, None), "int64") for name in INPUT_NAMES)
    return ModelArtifact("torch", inputs, int(module.dim), base, module=module, builder=builder, task="embedding")


def register_builtins(registry: Registry[ModelLoader]) -> None:
    """modelpress's own sources; third-party ones come through the ``modelpress.sources`` entry-point group."""
    registry.add("zoo", _load_zoo)
    registry.add("hf", _load_hf)
    registry.add(".onnx", _load_onnx_file)


register_builtins(SOURCES)
