"""Pruning stage: unstructured magnitude, structured channel removal, and 2:4 semi-structured sparsity.

* ``magnitude`` zeroes the smallest |w| of every Conv/Linear weight, over all of them at once (``scope: global``) or
  layer by layer (``scope: layer``), with ``torch.nn.utils.prune``; masks stay fixed while fine-tuning and are made
  permanent (``prune.remove``) before saving, so the saved model holds plain weights with zeros and no hooks.
* ``structured`` physically removes output channels/features (and everything coupled to them: the next layer's
  inputs, BatchNorm statistics, residual partners) with torch-pruning's dependency graph; importance L1, L2 or
  first-order Taylor. The model gets smaller and faster on dense kernels; its manifest records the new shapes
  (``builder.resized``) so it reloads from safetensors without pickle.
* ``2:4`` keeps the 2 largest |w| of every 4 consecutive input weights of each Linear layer (the layout sparse
  tensor cores accelerate).
* ``layers`` (depth pruning of an ``hf:`` transformer encoder) keeps the transformer layers ``keep_layers`` names
  (or, with ``amount``, ``round(n · (1 − amount))`` layers spread evenly from the first to the last) and drops the
  others; the kept layers' weights are not touched. The manifest's builder records ``keep_layers`` (in the original
  folder's numbering), so the smaller model rebuilds from the folder and reloads from safetensors. Usually followed
  by ``distill`` with the original model as teacher.

Unstructured and 2:4 zeros do not lower dense-kernel MACs or latency; the MAC ratio recorded here is what dense
kernels compute, and wall-clock time is measured separately by the evaluator. An optional fine-tune (the shared
loop in :mod:`modelpress.compress.train`) follows each of ``steps`` pruning steps.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ModelArtifact
from ..config import Checked, Interval, Options, option
from ..errors import InputError
from .distributed import check_nproc, nproc_option
from .registry import COST_KEY, StageConfig, StageContext, register_stage
from .train import (batch_size_option, check_early_stopping, discard_checkpoints, epochs_option, fit, lr_option,
                    patience_option, seed_option, stage_cost, val_fraction_option, weight_decay_option)

METHODS = ("magnitude", "structured", "2:4", "layers")
SCOPES = ("global", "layer")
IMPORTANCES = ("l1", "l2", "taylor", "activation")
#: Samples of the data whose activations rank channels for ``importance: activation`` (no labels are read).
ACTIVATION_SAMPLES = 64


@dataclass(frozen=True)
class PruneConfig(Checked, StageConfig):
    """``amount``: fraction of weights (magnitude) or of channels per layer (structured) to remove, in (0, 1).

    ``target_macs`` (structured only, instead of ``amount``): the MAC ratio to reach, e.g. 0.5 keeps half the
    multiply-accumulates. ``steps`` prunes in that many equal increments with ``finetune_epochs`` epochs of
    fine-tuning after each. ``ignore`` names layers to keep whole; a name with ``*`` is a pattern
    (``_blocks.*._project_conv`` keeps every block's projection, hence the residual stream, whole). ``round_to``
    (structured) rounds the channels kept down to a multiple of it: dense CPU kernels (MLAS, oneDNN) run fastest on
    multiples of 8 or 16 channels.

    ``importance: activation`` ranks a channel by what removing it takes from the layers that read it: the mean
    |activation| of the channel on up to 64 samples of the data (unlabelled is enough) times the L2 norm of the
    consumer's weights on it. Weight magnitudes alone (l1, l2) mislead when a BatchNorm rescales small weights, as
    in networks trained with weight decay (TensorFlow's EfficientNets; tests/prune/test_prune_lite.py compares the two
    on the pretrained EfficientNet-Lite1).
    """

    kind: ClassVar[str] = "prune"
    method: str = option("magnitude", Options(METHODS),
                         help="magnitude: unstructured zeros; structured: remove channels; 2:4: 2 of every 4 "
                              "Linear weights; layers: drop transformer layers of an hf: encoder.")
    amount: float | None = option(None, Interval(float, 0, 1, closed="neither", noun=False),
                                  help="Fraction in (0, 1) of weights (magnitude) or channels (structured).")
    target_macs: float | None = option(None, Interval(float, 0, 1, closed="neither", noun=False),
                                       help="Structured only, instead of --amount: MAC ratio to reach, e.g. 0.5.")
    scope: str | None = option(None, Options(SCOPES),
                               help="Rank weights over all layers or per layer [default: global for magnitude, "
                                    "layer for structured].")
    importance: str = option("l1", Options(IMPORTANCES),
                             help="Channel importance for structured pruning (taylor needs labelled --data; "
                                  "activation: mean |activation| × consumer weight norm on unlabelled --data).")
    steps: int = option(1, Interval(int, 1, 100), help="Prune in this many increments, fine-tuning after each.")
    finetune_epochs: int = epochs_option(0, low=0, help="Epochs of fine-tuning after each step (needs --data; masks "
                                                        "stay fixed).")
    lr: float = lr_option(help="Peak fine-tune learning rate (cosine decay).")
    batch_size: int = batch_size_option(help="Fine-tune batch size.")
    weight_decay: float = weight_decay_option()
    val_fraction: float = val_fraction_option()
    patience: int = patience_option()
    ignore: tuple[str, ...] = option((), help="Layer name (or pattern with *) to keep whole; repeat for several.")
    round_to: int = option(1, Interval(int, 1, 256),
                           help="Structured: keep a multiple of N channels (8 or 16 suits CPU kernels).")
    keep_layers: tuple[int, ...] = option((), cli="--keep-layer",
                                          help="Method layers: index of a transformer layer to keep (0 = the first); "
                                               "repeat for several. Or give --amount to keep evenly spaced layers.")
    reconstruct: bool = option(False, help="Structured: refit each 1×1 conv whose inputs lost channels by least "
                                           "squares to the dense layer's outputs on the data (no labels read).")
    seed: int = seed_option()
    nproc: int = nproc_option()

    def check(self) -> None:
        check_nproc("prune", self.nproc, self.batch_size)
        if isinstance(self.keep_layers, int) and not isinstance(self.keep_layers, bool):
            object.__setattr__(self, "keep_layers", (self.keep_layers,))
        object.__setattr__(self, "keep_layers", tuple(self.keep_layers or ()))
        if self.keep_layers and self.method != "layers":
            raise InputError(f"prune.keep_layers only applies to method layers, not {self.method}")
        if self.method == "layers":
            if bool(self.keep_layers) == (self.amount is not None):
                raise InputError("prune method layers needs keep_layers or amount, exactly one of them",
                                 hint="e.g. --keep-layer 0 --keep-layer 2 --keep-layer 4, or --amount 0.5")
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.keep_layers):
                raise InputError(f"prune.keep_layers must be layer indices ≥ 0, got {list(self.keep_layers)}")
            if list(self.keep_layers) != sorted(set(self.keep_layers)):
                raise InputError(f"prune.keep_layers must be increasing without repeats, got {list(self.keep_layers)}",
                                 hint=f"e.g. {sorted(set(self.keep_layers))}")
            if self.steps != 1 or self.finetune_epochs:
                raise InputError("prune method layers takes one step and no fine-tuning (steps 1, finetune_epochs 0)",
                                 hint="recover with a distill stage (teacher: original) after it")
        if self.method == "2:4":
            if self.amount is not None and float(self.amount) != 0.5:
                raise InputError(f"prune.amount is fixed at 0.5 for method 2:4, got {self.amount}",
                                 hint="leave --amount out")
            if self.steps != 1:
                raise InputError(f"prune.steps must be 1 for method 2:4, got {self.steps}")
        elif self.method != "layers" and self.amount is None and self.target_macs is None:
            raise InputError(f"prune method {self.method} needs an amount in (0, 1)",
                             hint="pass --amount, e.g. 0.5" + (" (or --target-macs)" if self.method == "structured"
                                                               else ""))
        if self.target_macs is not None and self.method != "structured":
            raise InputError(f"prune.target_macs only applies to method structured, not {self.method}",
                             hint="unstructured zeros do not lower dense MACs; use --amount")
        if self.amount is not None and self.target_macs is not None:
            raise InputError("give prune.amount or prune.target_macs, not both")
        object.__setattr__(self, "scope", self.scope or ("global" if self.method == "magnitude" else "layer"))
        if self.round_to != 1 and self.method != "structured":
            raise InputError(f"prune.round_to only applies to method structured, not {self.method}")
        if self.reconstruct and self.method != "structured":
            raise InputError(f"prune.reconstruct only applies to method structured, not {self.method}")
        check_early_stopping("prune", patience=self.patience, val_fraction=self.val_fraction)
        if isinstance(self.ignore, str):
            object.__setattr__(self, "ignore", (self.ignore,))
        object.__setattr__(self, "ignore", tuple(str(name) for name in self.ignore))

    @property
    def needs_train(self) -> bool:
        """Whether the stage reads training data (fine-tuning, or Taylor importance)."""
        return self.finetune_epochs > 0 or (self.method == "structured" and self.importance == "taylor")


@register_stage(PruneConfig)
def run_prune(artifact: ModelArtifact, config: PruneConfig, ctx: StageContext) -> ModelArtifact:
    if artifact.format != "torch" or artifact.module is None:
        raise InputError(f"stage prune needs a torch model, got {artifact.format}",
                         hint="prune before export")
    if artifact.transforms:
        raise InputError(f"cannot prune {artifact.source}: it carries transforms "
                         f"{[t['name'] for t in artifact.transforms]} (e.g. quantization)", hint="prune first")
    if config.method == "layers":
        return _prune_layers(artifact, config, ctx)
    train = ctx.require("train", stage="prune") if config.needs_train else None
    module = copy.deepcopy(artifact.module).eval()
    ignore = _check_ignore(module, config.ignore)
    example = example_inputs(artifact, ctx)
    probe = None
    if config.method == "structured" and (config.importance == "activation" or config.reconstruct):
        if ctx.eval is None and ctx.train is None and ctx.calibration is None:
            what = "importance activation" if config.importance == "activation" else "reconstruct"
            raise InputError(f"prune {what} needs data to measure activations on",
                             hint="pass --data (unlabelled images are enough)")
        probe = example_inputs(artifact, ctx, n=ACTIVATION_SAMPLES, held_out_last=True)
    before = measure(artifact, module)
    finetune_logs: list[dict[str, Any]] = []

    def finetune(step: int) -> None:
        if config.finetune_epochs == 0 or train is None:
            return
        folder = ctx.work_dir / "checkpoints" / f"step-{step}"
        finetune_logs.append(fit(module, train, epochs=config.finetune_epochs, lr=config.lr,
                                 batch_size=config.batch_size, weight_decay=config.weight_decay, seed=config.seed,
                                 val_fraction=config.val_fraction, patience=config.patience, checkpoint_dir=folder,
                                 desc=f"fine-tune {step}/{config.steps}", nproc=config.nproc))

    info: dict[str, Any]
    builder = artifact.builder
    if config.method == "structured":
        ratio = config.amount
        if ratio is None:
            ratio = ratio_for_macs(module, example, target=float(config.target_macs), ignore=ignore,
                                   macs=lambda m: measure(artifact, m)["macs"], notes=ctx.notes,
                                   scope=str(config.scope), round_to=config.round_to, source=artifact.source)
        info = prune_structured(module, example, ratio=float(ratio), steps=config.steps,
                                importance=config.importance, scope=config.scope, ignore=ignore,
                                n_classes=artifact.n_classes, train=train, on_step=finetune, notes=ctx.notes,
                                round_to=config.round_to, source=artifact.source, probe=probe,
                                reconstruct=config.reconstruct)
        if builder is not None:
            builder = {**builder, "resized": True}
            check_rebuild(artifact.evolve(builder=builder), module, example)
    else:
        info = _prune_masked(module, config, ignore, on_step=finetune, notes=ctx.notes)
    discard_checkpoints_tree(ctx.work_dir / "checkpoints")
    after = measure(artifact, module)
    record = {
        "method": config.method, "amount": config.amount, "target_macs": config.target_macs, "scope": config.scope,
        "importance": config.importance if config.method == "structured" else None, "steps": config.steps,
        "finetune_epochs": config.finetune_epochs, **info, "before": before, "after": after,
        "param_ratio": after["params"] / before["params"] if before["params"] else None,
        "mac_ratio": after["macs"] / before["macs"] if before["macs"] and after["macs"] is not None else None,
        "finetune": finetune_logs,
    }
    ctx.notes.append(_summary(record))
    result = artifact.evolve(module=module, builder=builder, path=None)
    result.metadata["pruning"] = record
    result.metadata[COST_KEY] = stage_cost(finetune_logs)
    return result


def _prune_layers(artifact: ModelArtifact, config: PruneConfig, ctx: StageContext) -> ModelArtifact:
    """Depth pruning: keep ``config.keep_layers`` (or evenly spaced layers) of an ``hf:`` encoder."""
    from ..hf import check_keep_layers, encoder_layers, evenly_spaced_layers, keep_encoder_layers

    builder = dict(artifact.builder or {})
    ref = str(builder.get("ref", ""))
    encoder = getattr(artifact.module, "encoder", None)
    if not ref.startswith("hf:") or encoder is None:
        raise InputError(f"prune method layers drops transformer layers of an hf: encoder; {artifact.source} is not "
                         f"one", hint="use --method magnitude, structured or 2:4 for this model")
    if builder.get("resized"):
        raise InputError(f"{artifact.source} was structurally pruned; prune its layers first, then its channels")
    module = copy.deepcopy(artifact.module).eval()
    layers, _ = encoder_layers(module.encoder, source=artifact.source)
    n = len(layers)
    keep = (check_keep_layers(list(config.keep_layers), n, source=artifact.source, key="prune.keep_layers")
            if config.keep_layers else evenly_spaced_layers(n, float(config.amount)))
    if len(keep) == n:
        raise InputError(f"prune.keep_layers keeps all {n} layers of {artifact.source}; nothing to prune",
                         hint=f"keep fewer than {n}")
    before = measure(artifact, module)
    keep_encoder_layers(module.encoder, keep, source=artifact.source)
    kwargs = dict(builder.get("kwargs") or {})
    earlier = kwargs.get("keep_layers")  # pruned before: map to the folder's numbering
    original = [int(earlier[i]) for i in keep] if isinstance(earlier, list) else keep
    builder = {**builder, "kwargs": {**kwargs, "keep_layers": original}}
    check_rebuild(artifact.evolve(builder=builder), module, example_inputs(artifact, ctx))
    after = measure(artifact, module)
    record = {"method": "layers", "amount": config.amount, "layers_before": n, "kept_layers": keep,
              "kept_layers_of_the_folder": original, "before": before, "after": after,
              "param_ratio": after["params"] / before["params"] if before["params"] else None,
              "mac_ratio": after["macs"] / before["macs"] if before["macs"] and after["macs"] is not None else None,
              "finetune": []}
    ctx.notes.append(f"depth pruning: kept layers {keep} of {n}; params {before['params']:,} → {after['params']:,}; "
                     f"wall-clock is measured by the evaluator")
    result = artifact.evolve(module=module, builder=builder, path=None)
    result.metadata["pruning"] = record
    result.metadata[COST_KEY] = stage_cost([])
    return result


def _summary(r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    macs = (f"MACs {b['macs']:,} → {a['macs']:,} (MAC ratio {r['mac_ratio']:.3f}, dense kernels)"
            if r["mac_ratio"] is not None else "MACs not counted")
    return (f"{r['method']} pruning: sparsity {b['sparsity']:.3f} → {a['sparsity']:.3f} of all parameters; "
            f"params {b['params']:,} → {a['params']:,}; {macs}; wall-clock is measured by the evaluator")


def measure(artifact: ModelArtifact, module: Any) -> dict[str, Any]:
    """Parameters, non-zero parameters, sparsity and dense MACs per sample of ``module`` (with no masks on it)."""
    from ..runtime.footprint import footprint

    fp = footprint(artifact.evolve(module=module, path=None, transforms=[]))
    return {k: fp.get(k) for k in ("params", "nonzero_params", "sparsity", "macs")}


def example_inputs(artifact: ModelArtifact, ctx: StageContext, n: int = 4,
                   held_out_last: bool = False) -> tuple[Any, ...]:
    """A few real samples (eval, train or calibration data) in the model's input order, else seeded noise.

    ``held_out_last``: take train or calibration data before eval data (for samples that shape the model, such as
    activation importance and reconstruction, so that the evaluation samples stay unseen)."""
    import torch

    data = (ctx.train or ctx.calibration or ctx.eval) if held_out_last else (ctx.eval or ctx.train or ctx.calibration)
    if data is not None:
        arrays = list(data.inputs.values()) if len(data.inputs) == len(artifact.inputs) else []
        if set(data.inputs) >= {s.name for s in artifact.inputs}:
            arrays = [data.inputs[s.name] for s in artifact.inputs]
        if arrays:
            return tuple(torch.from_numpy(np.ascontiguousarray(a[:n])) for a in arrays)
    gen = torch.Generator().manual_seed(0)
    out = []
    for spec in artifact.inputs:
        shape = [n if i == 0 else (d or 8) for i, d in enumerate(spec.shape)]
        dtype = getattr(torch, spec.dtype)
        out.append(torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.ones(shape, dtype=dtype))
    return tuple(out)


def _check_ignore(module: Any, names: tuple[str, ...]) -> tuple[str, ...]:
    """The layer names ``names`` stand for (a name with ``*`` is an fnmatch pattern); each must match a layer."""
    import difflib
    from fnmatch import fnmatchcase

    known = [n for n, _ in module.named_modules() if n]
    out: list[str] = []
    for name in names:
        matched = [n for n in known if fnmatchcase(n, name)] if "*" in name else [name] if name in known else []
        if not matched:
            close = difflib.get_close_matches(name, known, n=1)
            what = "layer matching" if "*" in name else "layer"
            raise InputError(f"prune.ignore: the model has no {what} {name!r}",
                             hint=f"did you mean {close[0]!r}?" if close else f"layers: {', '.join(known[:12])}")
        out += [n for n in matched if n not in out]
    return tuple(out)


# ---- unstructured and 2:4 (masks) ----------------------------------------------------------------------------------
def _prune_masked(module: Any, config: PruneConfig, ignore: tuple[str, ...], *, on_step: Any,
                  notes: list[str]) -> dict[str, Any]:
    """Magnitude or 2:4 masks via torch.nn.utils.prune, fine-tuned with fixed masks, then made permanent."""
    from torch import nn
    from torch.nn.utils import prune

    kinds: tuple[type, ...] = (nn.Linear,) if config.method == "2:4" else (nn.modules.conv._ConvNd, nn.Linear)
    layers = [(name, m) for name, m in module.named_modules()
              if isinstance(m, kinds) and name not in ignore and not _ignored_parent(name, ignore)]
    if config.method == "2:4":
        skipped = [f"{name} (in_features {m.in_features})" for name, m in layers if m.in_features % 4]
        if skipped:
            notes.append(f"2:4 sparsity skipped {len(skipped)} Linear layer(s) whose inputs are not a multiple of 4: "
                         + ", ".join(skipped))
        layers = [(name, m) for name, m in layers if m.in_features % 4 == 0]
    if not layers:
        what = "Linear layers with in_features divisible by 4" if config.method == "2:4" else "Conv or Linear layers"
        raise InputError(f"prune {config.method}: the model has no {what} to prune")
    targeted = {id(m) for _, m in layers}
    dense = [f"{name or '(model)'}.{pname}" for name, m in module.named_modules() if id(m) not in targeted
             for pname, p in m.named_parameters(recurse=False) if p.dim() >= 2]
    if dense:
        notes.append(f"{config.method} pruning kept {len(dense)} weight matrices dense: " + ", ".join(dense[:8])
                     + (", …" if len(dense) > 8 else ""))
    total = sum(m.weight.numel() for _, m in layers)
    for step in range(1, config.steps + 1):
        if config.method == "2:4":
            for _, m in layers:
                prune.custom_from_mask(m, "weight", _two_four_mask(m.weight.detach()))
        else:
            fraction = float(config.amount) * step / config.steps
            if config.scope == "global":
                want = round(fraction * total) - sum(_pruned(m) for _, m in layers)
                prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                          amount=max(0, want))
            else:
                for _, m in layers:
                    want = round(fraction * m.weight.numel()) - _pruned(m)
                    prune.l1_unstructured(m, "weight", amount=max(0, want))
        on_step(step)
    for _, m in layers:
        prune.remove(m, "weight")
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return {"layers": [name for name, _ in layers], "pruned_weights": total, "target_sparsity": zeros / total}


def _ignored_parent(name: str, ignore: tuple[str, ...]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in ignore)


def _pruned(m: Any) -> int:
    """Entries already masked out (0 before the first step)."""
    mask = getattr(m, "weight_mask", None)
    return 0 if mask is None else int((mask == 0).sum())


def _two_four_mask(weight: Any) -> Any:
    """1 for the 2 largest |w| in every group of 4 consecutive input weights, 0 for the other 2."""
    import torch

    out_f, in_f = weight.shape
    groups = weight.abs().reshape(out_f, in_f // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0)
    return mask.reshape(out_f, in_f)


def discard_checkpoints_tree(folder: Any) -> None:
    """Remove the per-step fine-tune checkpoints once the stage has finished."""
    from pathlib import Path

    root = Path(folder)
    if not root.is_dir():
        return
    for sub in sorted(root.glob("step-*")):
        discard_checkpoints(sub)
    try:
        root.rmdir()
    except OSError:
        pass



# ---- structured (channel removal, dependency-aware via torch-pruning) ---------------------------------------------
def _keep_whole(module: Any, example: tuple[Any, ...], ignore: tuple[str, ...]) -> dict[str, str]:
    """Layers whose output channels must stay: the output layer(s), recurrent/attention layers, user-named ones.

    The output layer is the one whose output is the model's output, plus the last Conv/Linear to run (a head
    followed by pooling or scaling is still the head). Recurrent and ``nn.MultiheadAttention`` layers are kept
    whole because removing their hidden units needs gate- or head-aware slicing that the dependency graph does not
    do for them.
    """
    import torch
    from torch import nn

    names = {m: n for n, m in module.named_modules()}
    ran: list[tuple[str, Any]] = []

    def hook(mod: Any, _inp: Any, out: Any) -> None:
        ran.append((names[mod], out))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            final = module(*example)
    finally:
        for h in handles:
            h.remove()
    kept = {name: "kept whole by prune.ignore" for name in ignore}
    for name, out in ran:
        if out is final:
            kept[name] = "output layer"
    if ran:
        kept.setdefault(ran[-1][0], "output layer")
    for name, m in module.named_modules():
        if isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            kept[name] = f"{type(m).__name__} layers are kept whole"
    return kept


def _activation_importance() -> Any:
    """torch-pruning importance: per channel, mean |input| at each Conv/Linear that reads it × the L2 norm of that
    layer's weights on the channel, summed over the readers in the group (:meth:`collect` measures the inputs)."""
    import torch
    import torch_pruning as tp
    from torch import nn
    from torch_pruning.pruner import function

    class ActivationContribution(tp.importance.GroupMagnitudeImportance):
        def __init__(self) -> None:
            super().__init__(p=2, group_reduction="sum", normalizer="mean")
            self.stats: dict[Any, Any] = {}

        @torch.no_grad()
        def collect(self, module: Any, probe: tuple[Any, ...], chunk: int = 16) -> None:
            sums: dict[Any, Any] = {}

            def hook(mod: Any, inp: Any, _out: Any) -> None:
                x = inp[0].detach().abs()
                x = x.transpose(0, 1).flatten(1) if isinstance(mod, nn.modules.conv._ConvNd) else \
                    x.reshape(-1, x.shape[-1]).T
                sums[mod] = sums.get(mod, 0) + x.double().sum(1) / x.shape[1]

            handles = [m.register_forward_hook(hook) for m in module.modules()
                       if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
            was_training = module.training
            module.eval()
            try:
                n = int(probe[0].shape[0])
                parts = [tuple(t[i:i + chunk] for t in probe) for i in range(0, n, chunk)]
                for part in parts:
                    module(*part)
            finally:
                for h in handles:
                    h.remove()
                module.train(was_training)
            self.stats = {m: (v / len(parts)).float() for m, v in sums.items()}

        @torch.no_grad()
        def __call__(self, group: Any) -> Any:
            imps, roots = [], []
            for i, (dep, idxs) in enumerate(group):
                layer = dep.target.module
                if dep.handler not in (function.prune_conv_in_channels, function.prune_linear_in_channels) \
                        or layer not in self.stats or getattr(layer, "groups", 1) > 1:
                    continue
                w = layer.weight.detach()
                norm = w.transpose(0, 1).flatten(1).norm(dim=1) if w.dim() > 2 else w.norm(dim=0)
                imps.append((self.stats[layer] * norm)[idxs])
                roots.append(group[i].root_idxs)
            if not imps:
                return None
            return self._normalize(self._reduce(imps, roots), self.normalizer)

    return ActivationContribution()


def _make_pruner(module: Any, example: tuple[Any, ...], *, ratio: float, steps: int, importance: str, scope: str,
                 kept: dict[str, str], source: str, round_to: int = 1) -> Any:
    try:
        import torch_pruning as tp
    except ImportError:  # a hard dependency; a broken install is the user's environment problem
        raise InputError("structured pruning needs torch-pruning", hint="pip install torch-pruning") from None
    imp = {"l1": lambda: tp.importance.MagnitudeImportance(p=1), "l2": lambda: tp.importance.MagnitudeImportance(p=2),
           "taylor": lambda: tp.importance.TaylorImportance(), "activation": _activation_importance}[importance]()
    by_name = dict(module.named_modules())
    ignored = [by_name[n] for n in kept if n in by_name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.pruner.MetaPruner(module, example, importance=imp, pruning_ratio=ratio, iterative_steps=steps,
                                        ignored_layers=ignored, global_pruning=scope == "global",
                                        round_to=round_to if round_to > 1 else None,
                                        forward_fn=lambda m, ex: m(*ex))
    except Exception as exc:  # noqa: BLE001  (any tracing failure becomes one line naming the layer)
        layer = _failing_layer(module, example)
        where = f" at layer {layer}" if layer else ""
        raise InputError(f"structured pruning cannot trace {source}{where}: {type(exc).__name__}: "
                         f"{_first_line(exc)}", hint="use --method magnitude or 2:4 for this model") from None


def prune_structured(module: Any, example: tuple[Any, ...], *, ratio: float, steps: int, importance: str,
                     scope: str, ignore: tuple[str, ...], n_classes: int, train: Any, on_step: Any, notes: list[str],
                     source: str, round_to: int = 1, probe: tuple[Any, ...] | None = None,
                     reconstruct: bool = False) -> dict[str, Any]:
    """Remove ``ratio`` of the output channels of every prunable group in ``steps`` increments, in place.

    ``probe``: the inputs whose activations rank channels for ``importance == "activation"`` (measured again before
    every step, on the model as pruned so far), and, with ``reconstruct``, the inputs on which every refittable layer
    (:func:`_reconstruct`) is refit to the dense model's outputs after each step.

    After each step the model must still run on ``example`` and return ``n_classes`` logits; otherwise an
    InputError names the layer whose forward broke (e.g. a reshape with a hard-coded width).
    """
    from torch import nn

    kept = _keep_whole(module, example, ignore)
    pruner = _make_pruner(module, example, ratio=ratio, steps=steps, importance=importance, scope=scope, kept=kept,
                          source=source, round_to=round_to)
    groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                           root_module_types=pruner.root_module_types))
    if not groups:
        listed = ", ".join(f"{n!r} ({why})" for n, why in kept.items())
        raise InputError(f"structured pruning found no channel group it can remove in {source}; kept: {listed}",
                         hint="use --method magnitude or 2:4 for this model")
    notes.append("structured pruning kept whole: " + ", ".join(f"{n} ({why})" for n, why in kept.items()))
    width = {n: _out_width(m) for n, m in module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    dense = copy.deepcopy(module).eval() if reconstruct else None
    refit: list[str] = []
    skipped: list[str] = []
    for step in range(1, steps + 1):
        if importance == "taylor":
            _taylor_gradients(module, train)
        elif importance == "activation":
            pruner.importance.collect(module, probe if probe is not None else example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
        module.zero_grad(set_to_none=True)
        if dense is not None:
            refit, skipped = _reconstruct(dense, module, probe if probe is not None else example)
        _check_forward(module, example, n_classes=n_classes, source=source)
        on_step(step)
    changed = {n: [w, _out_width(dict(module.named_modules())[n])] for n, w in width.items()}
    if reconstruct:
        notes.append(f"least-squares reconstruction refit {len(refit)} layers to the dense model's outputs"
                     + (f"; left {len(skipped)} as pruned (fewer than 2 sampled positions per input channel: more "
                        f"data or larger inputs): {', '.join(skipped[:6])}{', …' if len(skipped) > 6 else ''}"
                        if skipped else ""))
    return {"channels": {n: v for n, v in changed.items() if v[0] != v[1]}, "kept_whole": kept,
            "channel_ratio": ratio, "reconstructed": refit if reconstruct else None}


def _reconstruct(dense: Any, module: Any, probe: tuple[Any, ...], *, rows: int = 8192,
                 ridge: float = 1e-4) -> tuple[list[str], list[str]]:
    """Refit, in forward order, every 1×1 stride-1 unpadded ungrouped conv whose output channels pruning kept and
    whose inputs it changed, so that on ``probe`` it reproduces the dense layer's output from the pruned network's
    inputs (ridge least squares on ``rows`` sampled pixel positions; He et al. 2017, ThiNet). Layers run in order,
    so each is fit on inputs that earlier refits already corrected. Returns the names refit and the names left as
    pruned (fewer than 2 sampled positions per input channel); other kernels are not candidates."""
    import torch
    from torch import nn

    dense_layers = dict(dense.named_modules())

    def fits(name: str, m: Any) -> bool:
        d = dense_layers.get(name)
        return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
                and m.padding in ((0, 0), "valid") and d is not None and d.weight.shape[0] == m.weight.shape[0]
                and d.weight.shape[1] != m.weight.shape[1])

    names = [n for n, m in module.named_modules() if fits(n, m)]
    gen = torch.Generator().manual_seed(0)
    picks: dict[str, Any] = {}
    targets: dict[str, Any] = {}

    def sample(t: Any, name: str) -> Any:
        flat = t.detach().transpose(0, 1).flatten(1).T  # (N·H·W, C)
        if name not in picks:
            picks[name] = torch.randperm(flat.shape[0], generator=gen)[:rows]
        return flat[picks[name]].double()

    handles = [dense_layers[n].register_forward_hook(lambda _m, _i, out, n=n: targets.__setitem__(n, sample(out, n)))
               for n in names]
    try:
        with torch.no_grad():
            dense(*probe)
    finally:
        for h in handles:
            h.remove()
    done: list[str] = []

    def refit(m: Any, inp: Any, name: str) -> None:
        x, y = sample(inp[0], name), targets[name]
        if x.shape[0] < 2 * x.shape[1]:
            return
        gram = x.T @ x
        gram += ridge * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=gram.dtype)
        w = torch.linalg.solve(gram, x.T @ (y - (0 if m.bias is None else m.bias.detach().double())))
        m.weight.copy_(w.T.reshape(m.weight.shape).to(m.weight.dtype))
        done.append(name)

    layers = dict(module.named_modules())
    handles = [layers[n].register_forward_pre_hook(lambda m, inp, n=n: refit(m, inp, n)) for n in names]
    try:
        with torch.no_grad():
            module(*probe)
    finally:
        for h in handles:
            h.remove()
    return done, [n for n in names if n not in done]


def ratio_for_macs(module: Any, example: tuple[Any, ...], *, target: float, ignore: tuple[str, ...], macs: Any,
                   notes: list[str], scope: str = "layer", round_to: int = 1, source: str = "") -> float:
    """The smallest channel fraction (to 0.005) whose pruning leaves at most ``target`` × the dense MACs."""
    base = macs(module)
    if not base:
        raise InputError(f"cannot count the MACs of {source}, so --target-macs cannot be used", hint="use --amount")
    kept = _keep_whole(module, example, ignore)

    def ratio_of(r: float) -> float:
        trial = copy.deepcopy(module)
        pruner = _make_pruner(trial, example, ratio=r, steps=1, importance="l1", scope=scope, kept=kept, source=source,
                              round_to=round_to)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
        return macs(trial) / base

    # Upward on a coarse grid to the first fraction that reaches the target, then bisection below it to 0.005.
    # Not bisection over (0, 1): torch-pruning skips a group whose rounded cut would take every channel, so the MAC
    # ratio is not monotonic in the channel fraction near 1; below the first hit it is (each trial costs a trace).
    ratios: dict[float, float] = {}
    hit = None
    for r in [round(0.1 * i, 3) for i in range(1, 10)] + [0.95]:
        ratios[r] = ratio_of(r)
        if ratios[r] <= target:
            hit = r
            break
    if hit is None:
        raise InputError(f"cannot reach a MAC ratio of {target} on {source}: the lowest reachable is "
                         f"{min(ratios.values()):.3f}", hint="raise --target-macs")
    low, high = round(hit - (0.1 if hit <= 0.9 else 0.05), 4), hit
    while high - low > 0.0051:
        mid = round((low + high) / 2, 4)
        ratios[mid] = ratio_of(mid)
        low, high = (low, mid) if ratios[mid] <= target else (mid, high)
    best = high
    notes.append(f"target MAC ratio {target}: removing {best:.3f} of the channels per group gives {ratios[best]:.3f}")
    return best


def _out_width(m: Any) -> int:
    return int(m.weight.shape[0])


def _taylor_gradients(module: Any, train: Any, max_samples: int = 512) -> None:
    """Accumulate d(loss)/d(weight) on up to ``max_samples`` training samples for first-order Taylor importance."""
    import torch
    import torch.nn.functional as F

    module.zero_grad(set_to_none=True)
    module.eval()
    sample = train.subset(slice(0, min(len(train), max_samples)))
    for batch, y in sample.batches(128):
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in batch.values()])
        (F.cross_entropy(out, torch.from_numpy(y), reduction="sum") / len(sample)).backward()


def _check_forward(module: Any, example: tuple[Any, ...], *, n_classes: int, source: str) -> None:
    import torch

    try:
        with torch.no_grad():
            out = module(*example)
    except Exception as exc:  # noqa: BLE001  (whatever broke, the user gets the layer and the reason)
        layer = _failing_layer(module, example) or "(the model's own forward)"
        raise InputError(f"structured pruning cannot handle layer {layer} of {source}: after removing channels its "
                         f"forward fails ({type(exc).__name__}: {_first_line(exc)})",
                         hint="keep it whole with prune.ignore, or use --method magnitude or 2:4") from None
    want = (example[0].shape[0], n_classes)
    if tuple(out.shape) != want:
        raise InputError(f"structured pruning changed the output of {source} from {want} to {tuple(out.shape)}",
                         hint="name the output layer in prune.ignore")


def _failing_layer(module: Any, example: tuple[Any, ...]) -> str | None:
    """``'name' (Type)`` of the innermost layer whose forward raises on ``example``; ``None`` if it runs."""
    import torch

    stack: list[Any] = []
    names = {m: n for n, m in module.named_modules()}
    failed: list[Any] = []

    def pre(mod: Any, _inp: Any) -> None:
        stack.append(mod)

    def post(mod: Any, _inp: Any, _out: Any) -> None:
        stack.pop()

    handles = [h for m in module.modules() if m is not module
               for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.no_grad():
            module(*example)
    except Exception:  # noqa: BLE001  (locating the failure is the point; the caller reports it)
        failed = list(stack)
    finally:
        for h in handles:
            h.remove()
    if not failed:
        return None
    mod = failed[-1]
    return f"{names[mod]!r} ({type(mod).__name__})"


def check_rebuild(artifact: ModelArtifact, module: Any, example: tuple[Any, ...]) -> None:
    """Save and reload the pruned model (safetensors + manifest shapes, no pickle); its outputs must not change."""
    import tempfile

    import torch

    from ..sources import load_model, trusted_code

    # the builder already made this module in this process (user-named or allow-listed): its reload may use it
    with tempfile.TemporaryDirectory(prefix="modelpress-prune-") as tmp, \
            trusted_code([str((artifact.builder or {}).get("ref", ""))]):
        try:
            reloaded = load_model(str(artifact.evolve(module=module, path=None).save(tmp).path))
        except InputError as exc:
            raise InputError(f"the structurally pruned {artifact.source} cannot be rebuilt from its manifest: "
                             f"{exc.message}", hint="use --method magnitude or 2:4 for this model") from None
        with torch.no_grad():
            diff = float((reloaded.module(*example) - module(*example)).abs().max())
    if diff > 1e-5:
        raise InputError(f"the structurally pruned {artifact.source} reloads with different outputs "
                         f"(max abs diff {diff:.3g})", hint="use --method magnitude or 2:4 for this model")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
