"""The one training loop, used by the ``train`` stage, fine-tuning after pruning and distillation.

Deterministic on CPU for a given seed and thread count: one seeded generator shuffles the batches, torch's RNG is
seeded once, and both are saved in every checkpoint. A ``loss_fn(module, inputs, targets) -> loss`` hook lets
distillation plug its loss into the same loop.

Checkpoints (when the caller passes a folder) are written after every epoch: the tensors (model, optimizer, best
weights, torch RNG) to ``epoch-NNNN.safetensors`` first, then ``state.json`` (epoch, losses, schedule, shuffle
generator, a fingerprint of the run) last as the commit marker. A rerun with the same folder and the same settings
continues after the last finished epoch and ends with the same weights as a run that was never interrupted; a
folder left by different settings, data or starting weights is ignored and overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import progress
from ..artifacts import ModelArtifact
from ..config import Checked, Interval, Options, option
from ..data import Dataset
from ..errors import InputError
from ..runtime.memory import process_peak_rss_bytes
from ..io import read_json, sha256_arrays, write_bytes, write_json
from . import distributed
from .distributed import nproc_option
from .registry import COST_KEY, StageConfig, StageContext, register_stage

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
CHECKPOINT_VERSION = 1
STATE_FILE = "state.json"


def epochs_option(default: int, *, low: int = 1, help: str = "Passes over the training data.") -> Any:
    """``epochs`` of a stage that trains (train, distill; prune's fine-tune allows 0)."""
    return option(default, Interval(int, low, 10_000, noun=False), help=help)


def lr_option(default: float = 3e-3, *, help: str = "Peak learning rate (cosine decay).") -> Any:
    return option(default, Interval(float, 0, 10, closed="neither", noun=False), help=help)


def batch_size_option(default: int = 64, *, help: str = "Training batch size.") -> Any:
    return option(default, Interval(int, 1, noun=False), help=help)


def weight_decay_option(default: float = 1e-4) -> Any:
    return option(default, Interval(float, 0, noun=False), help="Decoupled (AdamW) or L2 (SGD) weight decay.")


def val_fraction_option() -> Any:
    return option(0.0, Interval(float, 0, 1, closed="left", noun=False),
                  help="Hold out this share of the training data for early stopping.")


def patience_option() -> Any:
    return option(0, Interval(int, 0, noun=False), help="Early-stopping patience in epochs (needs --val-fraction).")


def seed_option(help: str = "Seed of the weights' initialisation and the batch order.") -> Any:
    return option(0, help=help)


@dataclass(frozen=True)
class TrainConfig(Checked, StageConfig):
    """Supervised training (AdamW or SGD, cosine or constant learning rate), optional early stopping.

    ``val_fraction`` > 0 holds out that stratified share of the training data; with ``patience`` > 0 training stops
    after that many epochs without a lower validation loss, and the best epoch's weights are kept.
    """

    kind: ClassVar[str] = "train"
    epochs: int = epochs_option(10)
    lr: float = lr_option()
    batch_size: int = batch_size_option()
    weight_decay: float = weight_decay_option()
    seed: int = seed_option()
    optimizer: str = option("adamw", Options(OPTIMIZERS), help="Optimizer.")
    schedule: str = option("cosine", Options(SCHEDULES), help="Learning-rate schedule.")
    val_fraction: float = val_fraction_option()
    patience: int = patience_option()
    nproc: int = nproc_option()

    def check(self) -> None:
        check_early_stopping(self.kind, patience=self.patience, val_fraction=self.val_fraction)
        distributed.check_nproc(self.kind, self.nproc, self.batch_size)


def check_early_stopping(where: str, *, patience: int, val_fraction: float, has_validation: bool | None = None) -> None:
    """``patience`` > 0 needs a validation split: ``val_fraction`` > 0 (or validation data given to :func:`fit`)."""
    if int(patience) > 0 and not (float(val_fraction) > 0 if has_validation is None else has_validation):
        raise InputError(f"{where}.patience = {patience} needs a validation split",
                         hint=f"set {where}.val_fraction, e.g. 0.1")


def check_training_args(where: str, *, epochs: int, lr: float, batch_size: int, weight_decay: float,
                        optimizer: str = "adamw", schedule: str = "cosine", val_fraction: float = 0.0,
                        patience: int = 0, min_epochs: int = 1, has_validation: bool | None = None) -> None:
    """Validate :func:`fit`'s keyword arguments (library callers, not configs: those declare their fields)."""
    if not min_epochs <= int(epochs) <= 10_000:
        raise InputError(f"{where}.epochs must be in [{min_epochs}, 10000], got {epochs}")
    if not 0 < float(lr) < 10:
        raise InputError(f"{where}.lr must be in (0, 10), got {lr}")
    if int(batch_size) < 1:
        raise InputError(f"{where}.batch_size must be ≥ 1, got {batch_size}")
    if float(weight_decay) < 0:
        raise InputError(f"{where}.weight_decay must be ≥ 0, got {weight_decay}")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"{where}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in SCHEDULES:
        raise InputError(f"{where}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0 <= float(val_fraction) < 1:
        raise InputError(f"{where}.val_fraction must be in [0, 1), got {val_fraction}")
    if int(patience) < 0:
        raise InputError(f"{where}.patience must be ≥ 0, got {patience}")
    check_early_stopping(where, patience=patience, val_fraction=val_fraction, has_validation=has_validation)


LossFn = Callable[[Any, list[Any], Any], Any]


def split_validation(data: Dataset, fraction: float, *, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded, stratified (train, validation) split of ``data``; ``fraction`` of the samples go to validation."""
    from sklearn.model_selection import train_test_split

    n_val = round(len(data) * fraction)
    if n_val < 1 or len(data) - n_val < 1:
        raise InputError(f"val_fraction {fraction} of {len(data)} samples leaves an empty train or validation split")
    counts = np.bincount(data.y, minlength=data.n_classes)
    stratify = data.y if counts[counts > 0].min() >= 2 and n_val >= int((counts > 0).sum()) else None
    train_idx, val_idx = train_test_split(np.arange(len(data)), test_size=n_val, random_state=seed, stratify=stratify)
    return data.subset(np.sort(train_idx), split="train"), data.subset(np.sort(val_idx), split="validation")


def fit(module: Any, data: Dataset, *, epochs: int, lr: float, batch_size: int, weight_decay: float = 1e-4,
        seed: int = 0, loss_fn: LossFn | None = None, desc: str = "train", optimizer: str = "adamw",
        schedule: str = "cosine", val_data: Dataset | None = None, val_fraction: float = 0.0, patience: int = 0,
        checkpoint_dir: str | Path | None = None, fingerprint: dict[str, Any] | None = None,
        nproc: int | None = None) -> dict[str, Any]:
    """Train ``module`` in place and leave it in eval mode.

    Args:
        module: A torch module; every parameter with ``requires_grad`` is trained.
        data: Training samples. With ``val_fraction`` > 0 (and no ``val_data``) a stratified share is held out.
        epochs: Passes over the training samples (fewer when early stopping triggers).
        lr: Peak learning rate; the cosine schedule decays it to 0 over ``epochs`` (per step).
        batch_size: Samples per optimizer step; the last batch of an epoch may be smaller.
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        seed: Seeds torch's RNG and the batch-shuffling generator.
        loss_fn: ``loss_fn(module, inputs, targets) -> scalar loss``; cross-entropy on logits by default. A mean over
            the batch's samples (data-parallel ranks weigh it by their share of the batch).
        desc: Progress-bar label.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        schedule: ``cosine`` or ``constant``.
        val_data: Validation samples, scored with cross-entropy after every epoch.
        val_fraction: Share of ``data`` to hold out when ``val_data`` is not given.
        patience: Stop after this many epochs without a lower validation loss and restore the best weights
            (0: train every epoch, still restoring the best weights when validation is on).
        checkpoint_dir: Folder for per-epoch checkpoints; a rerun with the same folder resumes (whatever its
            ``nproc``: the checkpoint holds the whole-batch state).
        fingerprint: Extra settings that identify the run (e.g. the distillation loss), so a checkpoint made with
            other settings is not resumed.
        nproc: Data-parallel processes (see :mod:`.distributed`): > 1 forks that many gloo ranks, each taking
            ``batch_size / nproc`` of every batch, and loads rank 0's final weights into ``module``. Under
            ``torchrun`` the launched ranks train together whatever this is (it must then be 1, ``None`` or
            ``WORLD_SIZE``).

    Returns:
        ``{"epochs", "epochs_run", "loss_per_epoch", "val_loss_per_epoch", "val_accuracy_per_epoch", "best_epoch",
        "stopped_early", "resumed_from_epoch", "wall_s", "peak_rss_bytes", "peak_rss_growth_bytes"}``; losses are
        per-sample means, ``wall_s`` the training seconds (earlier attempts of a resumed run included), the peak
        figures as in :func:`_record_peak_rss` (absent where ``ru_maxrss`` is not available), and ``nproc`` (the
        number of processes that trained) when it is more than one.
    """
    import torch

    check_training_args("fit", epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                        optimizer=optimizer, schedule=schedule, val_fraction=val_fraction, patience=patience,
                        has_validation=val_data is not None or val_fraction > 0)
    if nproc is not None:
        distributed.check_nproc("fit", nproc, batch_size)
    if loss_fn is None or val_data is not None or val_fraction > 0:  # cross-entropy on labels (training, validation)
        data.require_labels("a cross-entropy loss (training or validation)")
    if val_data is None and val_fraction > 0:
        data, val_data = split_validation(data, val_fraction, seed=seed)
    kwargs: dict[str, Any] = dict(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed,
                                  loss_fn=loss_fn, desc=desc, optimizer=optimizer, schedule=schedule,
                                  val_data=val_data, patience=patience, checkpoint_dir=checkpoint_dir,
                                  fingerprint=fingerprint)
    launched = distributed.torchrun_env()
    if launched is not None:
        if nproc not in (None, 1, launched.world):
            raise InputError(f"fit.nproc = {nproc} but torchrun started WORLD_SIZE={launched.world} processes",
                             hint="leave nproc at 1 under torchrun (its ranks train together)")
        group = distributed.ensure_torchrun_group(launched)
        if group.rank != 0:
            progress.set_quiet(True)  # one bar, rank 0's
        with distributed.activate(group):
            return _fit(module, data, group=group, **kwargs)
    if nproc is None or nproc <= 1:
        return _fit(module, data, group=None, **kwargs)

    def rank_worker(group: distributed.Group) -> tuple[dict[str, Any], dict[str, Any]] | None:
        log = _fit(module, data, group=group, **kwargs)
        if group.rank != 0:
            return None
        tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        return log, tensors

    log, tensors = distributed.run_ranks(int(nproc), rank_worker)
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    torch.set_rng_state(tensors["rng.torch"])  # this process goes on as if it had trained
    module.eval()
    return log


def _fit(module: Any, data: Dataset, *, epochs: int, lr: float, batch_size: int, weight_decay: float, seed: int,
         loss_fn: LossFn | None, desc: str, optimizer: str, schedule: str, val_data: Dataset | None, patience: int,
         checkpoint_dir: str | Path | None, fingerprint: dict[str, Any] | None,
         group: distributed.Group | None) -> dict[str, Any]:
    """The loop of :func:`fit`, alone (``group`` None) or as one rank of a data-parallel group."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters")
    if optimizer == "adamw":
        opt: Any = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps_per_epoch = -(-len(data) // batch_size)
    if schedule == "cosine":
        sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    names = list(data.inputs)
    tensors = [torch.from_numpy(np.ascontiguousarray(data.inputs[n])) for n in names]
    targets = torch.from_numpy(data.y)
    log: dict[str, Any] = {"epochs": epochs, "epochs_run": 0, "loss_per_epoch": [], "val_loss_per_epoch": [],
                           "val_accuracy_per_epoch": [], "best_epoch": None, "stopped_early": False,
                           "resumed_from_epoch": 0}
    best_loss = float("inf")
    best_state: dict[str, Any] | None = None
    bad_epochs = 0
    ckpt = None
    lead = group is None or group.rank == 0  # the one process that writes checkpoints
    if group is not None:  # torchrun ranks given other data or settings would wait on each other until the timeout
        plan = {"samples": len(data), "batch_size": batch_size, "epochs": epochs, "seed": seed,
                "parameters": len(params)}
        lead_plan = distributed.broadcast_json(plan)
        if lead_plan != plan:
            raise InputError(f"rank {group.rank} would train {plan} but rank 0 trains {lead_plan}",
                             hint="give every rank the same data and settings")
    if checkpoint_dir is not None:
        run_id = _fingerprint(module, data, val_data, {
            "epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "seed": seed,
            "optimizer": optimizer, "schedule": schedule, "patience": patience,
            "loss": fingerprint or ("cross_entropy" if loss_fn is None else desc)})
        ckpt = _Checkpoints(Path(checkpoint_dir), run_id)
        found = ckpt.read() if lead else None
        if group is not None:  # rank 0 alone reads the folder; every rank resumes from what it found
            state = distributed.broadcast_json(found[0] if found else None)
            found = None if state is None else (state, distributed.broadcast_bytes(found[1] if found else None))
        resumed = ckpt.apply(*found, module, opt, sched) if found is not None else None
        if resumed is not None:
            log, generator.bit_generator.state, best_state, best_loss, bad_epochs = resumed
            log["resumed_from_epoch"] = log["epochs_run"]
    net = module
    batchnorm: Any = contextlib.nullcontext()
    if group is not None:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(module)  # rank 0's weights and buffers to every rank, gradients averaged
        batchnorm = distributed.sync_batchnorm(module)  # BatchNorm statistics of the whole batch, as alone
        log["nproc"] = group.world
    done = log["epochs_run"]
    started, wall_before = time.perf_counter(), float(log.get("wall_s") or 0.0)  # a resumed run adds its time
    rss_before = process_peak_rss_bytes()
    module.train()
    try:
        with batchnorm, progress.bar(epochs * steps_per_epoch, desc, unit="step") as bar:
            bar.update(done * steps_per_epoch)
            for epoch in range(done, epochs):
                if log["stopped_early"]:
                    break
                order = torch.from_numpy(generator.permutation(len(data)))
                total = 0.0
                for start in range(0, len(data), batch_size):
                    idx = order[start : start + batch_size]
                    share, weight = _shard(idx, group)
                    distributed.SHARE.empty = weight == 0
                    inputs = [t[share] for t in tensors]
                    if loss_fn is None:
                        loss = F.cross_entropy(net(*inputs), targets[share])
                    else:
                        loss = loss_fn(net, inputs, targets[share])
                    opt.zero_grad(set_to_none=True)
                    (loss if weight is None else loss * weight).backward()
                    opt.step()
                    sched.step()
                    if weight != 0:
                        total += float(loss.detach()) * len(share)
                    bar.update(1)
                if group is not None:
                    total = distributed.all_sum(total)
                    distributed.sync_buffers(module)  # BatchNorm statistics: rank 0's, on every rank
                log["loss_per_epoch"].append(total / len(data))
                log["epochs_run"] = epoch + 1
                log["wall_s"] = round(wall_before + time.perf_counter() - started, 6)
                postfix = f"loss {log['loss_per_epoch'][-1]:.4f}"
                if val_data is not None:
                    val_loss, val_acc = _validate(module, val_data, batch_size=max(256, batch_size))
                    module.train()
                    log["val_loss_per_epoch"].append(val_loss)
                    log["val_accuracy_per_epoch"].append(val_acc)
                    postfix += f" val {val_loss:.4f} acc {val_acc:.3f}"
                    if val_loss < best_loss:
                        best_loss, bad_epochs, log["best_epoch"] = val_loss, 0, epoch + 1
                        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    else:
                        bad_epochs += 1
                        if patience and bad_epochs >= patience:
                            log["stopped_early"] = True
                bar.set_postfix_str(postfix)
                if ckpt is not None and lead:
                    ckpt.save(module, opt, sched, log, generator.bit_generator.state, best_state, best_loss,
                              bad_epochs)
    finally:
        module.eval()
    if best_state is not None:
        module.load_state_dict(best_state)
    log["wall_s"] = round(wall_before + time.perf_counter() - started, 6)
    _record_peak_rss(log, rss_before)
    return log


def _shard(idx: Any, group: distributed.Group | None) -> tuple[Any, float | None]:
    """This rank's samples of a global batch and the weight of its mean loss.

    Rank r takes ``idx[r::N]``. DDP averages the N gradients, so weighting each rank's mean loss by
    ``N · n_r / n`` makes the step the gradient of the whole batch's mean loss, also when the last batch does not
    split evenly. A rank left without samples runs one stand-in sample at weight 0 (DDP needs every rank in every
    step; BatchNorm statistics leave it out).
    """
    if group is None:
        return idx, None
    share = idx[group.rank :: group.world]
    if len(share) == 0:
        return idx[:1], 0.0
    return share, len(share) * group.world / len(idx)


def _record_peak_rss(log: dict[str, Any], before: int | None) -> None:
    """``peak_rss_bytes``: the process's high-water mark after training (earlier allocations included, so an upper
    bound of what training needed); ``peak_rss_growth_bytes``: how far training raised it (0 when it stayed under
    an earlier peak, so a lower bound). Both from ``ru_maxrss``, free to read; a resumed run keeps the larger."""
    after = process_peak_rss_bytes()
    if after is None or before is None:
        return
    log["peak_rss_bytes"] = max(after, int(log.get("peak_rss_bytes") or 0))
    log["peak_rss_growth_bytes"] = max(after - before, int(log.get("peak_rss_growth_bytes") or 0))


def stage_cost(logs: Sequence[dict[str, Any]] = (), *, calibration_wall_s: float | None = None) -> dict[str, Any]:
    """The ``artifact.metadata[COST_KEY]`` record of a stage, from the :func:`fit` logs it ran (several for
    step-wise pruning) and, for quantization, the calibration time.

    Returns:
        ``{"train_wall_s", "epochs", "calibration_wall_s", "peak_rss_bytes", "peak_rss_growth_bytes", "curves"}``:
        wall seconds of training (summed over logs; ``None`` without training), epochs actually run, seconds spent
        calibrating, the peak-memory figures of :func:`fit` (largest over logs) and the per-epoch curves
        (``loss``, ``val_loss``, ``val_accuracy``, concatenated over logs) for reports and TensorBoard.
    """
    logs = [log for log in logs if log]
    peaks = [int(log["peak_rss_bytes"]) for log in logs if log.get("peak_rss_bytes") is not None]
    growth = [int(log["peak_rss_growth_bytes"]) for log in logs if log.get("peak_rss_growth_bytes") is not None]
    return {
        "train_wall_s": round(sum(float(log.get("wall_s") or 0.0) for log in logs), 6) if logs else None,
        "epochs": sum(int(log.get("epochs_run") or 0) for log in logs) if logs else None,
        "calibration_wall_s": None if calibration_wall_s is None else round(float(calibration_wall_s), 6),
        "peak_rss_bytes": max(peaks) if peaks else None,
        "peak_rss_growth_bytes": max(growth) if growth else None,
        "curves": {"loss": [v for log in logs for v in log.get("loss_per_epoch") or []],
                   "val_loss": [v for log in logs for v in log.get("val_loss_per_epoch") or []],
                   "val_accuracy": [v for log in logs for v in log.get("val_accuracy_per_epoch") or []]},
    }


def _validate(module: Any, data: Dataset, *, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``data`` (eval mode, no gradients)."""
    import torch
    import torch.nn.functional as F

    module.eval()
    total = correct = 0.0
    with torch.no_grad():
        for batch, y in data.batches(batch_size):
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in batch.values()])
            target = torch.from_numpy(y)
            total += float(F.cross_entropy(out, target, reduction="sum"))
            correct += float((out.argmax(1) == target).sum())
    return total / len(data), correct / len(data)


def _fingerprint(module: Any, data: Dataset, val_data: Dataset | None, settings: dict[str, Any]) -> str:
    """Identifies a run: settings, data and the starting weights. A checkpoint of another run is never resumed."""
    state = module.state_dict()
    weights = sha256_arrays(*[state[k].detach().cpu().numpy() for k in sorted(state)])
    blob = json.dumps({"settings": settings, "data": data.sha256(), "val": val_data.sha256() if val_data else None,
                       "weights": weights, "keys": sorted(state)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Checkpoints:
    """Per-epoch checkpoints in one folder: tensors first, ``state.json`` last (the commit marker)."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id

    def save(self, module: Any, opt: Any, sched: Any, log: dict[str, Any], gen_state: dict[str, Any],
             best_state: dict[str, Any] | None, best_loss: float, bad_epochs: int) -> None:
        import torch
        from safetensors.torch import save as st_save

        tensors: dict[str, Any] = {f"model.{k}": v for k, v in module.state_dict().items()}
        opt_state = opt.state_dict()
        extra: dict[str, Any] = {}
        for index, slots in opt_state["state"].items():
            for name, value in slots.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value
                else:
                    extra[f"{index}.{name}"] = value
        for k, v in (best_state or {}).items():
            tensors[f"best.{k}"] = v
        tensors["rng.torch"] = torch.get_rng_state()
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{log['epochs_run']:04d}.safetensors"
        write_bytes(self.folder / name, st_save(tensors))
        write_json(self.folder / STATE_FILE, {
            "version": CHECKPOINT_VERSION, "run_id": self.run_id, "tensors": name, "log": log,
            "generator": gen_state, "optimizer": {"param_groups": opt_state["param_groups"], "scalars": extra},
            "scheduler": sched.state_dict(), "best_loss": best_loss if best_loss != float("inf") else None,
            "bad_epochs": bad_epochs,
        })
        for old in self.folder.glob("epoch-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def read(self) -> tuple[dict[str, Any], bytes] | None:
        """``(state.json, the tensors file's bytes)`` of this run's last finished epoch; ``None`` when there is none
        (a fresh start)."""
        state_path = self.folder / STATE_FILE
        if not state_path.is_file():
            return None
        state = read_json(state_path)
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            return None
        if state.get("run_id") != self.run_id:
            return None  # another run's checkpoint (other settings, data or weights): start over, overwrite it
        path = self.folder / str(state["tensors"])
        try:
            return state, path.read_bytes()
        except OSError as exc:
            raise InputError(f"checkpoint {path} cannot be read ({exc})",
                             hint=f"delete {self.folder} to start the training over") from None

    def apply(self, state: dict[str, Any], raw: bytes, module: Any, opt: Any, sched: Any) -> tuple[Any, ...]:
        """Restore what :meth:`read` found into the module, optimizer, scheduler and torch's RNG."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        path = self.folder / str(state["tensors"])
        try:
            tensors = st_load(raw)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"checkpoint {path} is truncated or corrupt ({exc})",
                             hint=f"delete {self.folder} to start the training over") from None
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        slots: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, index, name = k.split(".", 2)
                slots.setdefault(int(index), {})[name] = v
        for k, v in state["optimizer"]["scalars"].items():
            index, name = k.split(".", 1)
            slots.setdefault(int(index), {})[name] = v
        opt.load_state_dict({"state": slots, "param_groups": state["optimizer"]["param_groups"]})
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        best_loss = float("inf") if state["best_loss"] is None else float(state["best_loss"])
        return state["log"], state["generator"], best, best_loss, int(state["bad_epochs"])

    def load(self, module: Any, opt: Any, sched: Any) -> tuple[Any, ...] | None:
        """Restore the last finished epoch of this run; ``None`` when there is none (a fresh start)."""
        found = self.read()
        return None if found is None else self.apply(*found, module, opt, sched)


def discard_checkpoints(folder: str | Path) -> None:
    """Remove a finished run's checkpoint files (only the files this module writes) and the folder if empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in [*folder.glob("epoch-*.safetensors"), folder / STATE_FILE]:
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


@register_stage(TrainConfig)
def run_train(artifact: ModelArtifact, config: TrainConfig, ctx: StageContext) -> ModelArtifact:
    if artifact.format != "torch":
        raise InputError(f"stage train needs a torch model, got {artifact.format}")
    data = ctx.require("train", stage="train")
    result = artifact.evolve(module=_copy_module(artifact.module))
    checkpoints = ctx.work_dir / "checkpoints"
    log = fit(result.module, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
              weight_decay=config.weight_decay, seed=config.seed, optimizer=config.optimizer,
              schedule=config.schedule, val_fraction=config.val_fraction, patience=config.patience,
              checkpoint_dir=checkpoints, nproc=config.nproc)
    discard_checkpoints(checkpoints)
    result.metadata["training"] = log
    result.metadata[COST_KEY] = stage_cost([log])
    return result


def _copy_module(module: Any) -> Any:
    """Stages never mutate their input: the original stays available as the fidelity reference."""
    import copy

    return copy.deepcopy(module)


def train_head(artifact: ModelArtifact, data: Dataset, *, epochs: int = 30, lr: float = 1e-2, batch_size: int = 64,
               seed: int = 0) -> dict[str, Any]:
    """Train only the linear head of an ``hf:`` encoder classifier on frozen, mean-pooled embeddings. In place.

    The embeddings are computed once, so tests and benchmarks stay quick; fine-tuning the whole encoder is the train
    stage's job. (Moved here from ``hf.py``, which sits below the stages and must not import them.)
    """
    import torch

    module = artifact.module
    if module is None or not hasattr(module, "pooled"):
        raise InputError(f"train_head needs an hf: encoder classifier, got {artifact.source}")
    pooled = []
    with torch.inference_mode():
        for batch, _ in data.batches(64):
            ids, mask = (torch.from_numpy(batch[n]) for n in ("input_ids", "attention_mask"))
            pooled.append(module.pooled(ids, mask).numpy())
    features = Dataset({"input": np.concatenate(pooled).astype(np.float32)}, data.y, data.class_names,
                       f"pooled({data.source})", data.split)
    return fit(module.head, features, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, desc="train head")
