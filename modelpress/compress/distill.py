"""Distillation stage: train a student on a frozen teacher's softened outputs (Hinton et al., 2015).

Loss per batch: ``alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · CE(student, labels)``,
plus, when ``features`` pairs layers of equal output shape, ``feature_weight · MSE(student layer, teacher layer)``.
The T² factor keeps the soft-target gradients on the same scale as the hard-label ones whatever the temperature.

In a pipeline ``teacher: original`` is the model before compression and ``student: input`` (the default) is the
incoming artifact, so ``prune → distill`` recovers accuracy with the dense model as teacher. A student can also be
any model reference (``zoo:cnn`` with ``student_kwargs`` widths, ``pkg.module:factory``, an artifact folder). The
teacher may be any artifact the evaluator can run (torch or ONNX); it stays frozen in eval mode.

Embedding models (teacher and student both ``task: embedding``, e.g. a depth-pruned ``hf:`` sentence-transformers
model distilled from the original): the loss is ``mean(1 − cos(student embedding, teacher embedding))`` over the
batch (:func:`embedding_loss`), the features loss added as above; temperature and alpha do not apply and no label is
read, so unlabelled text (a ``*.jsonl`` of ``{"text": ...}`` lines, ``text:FILE``) and ``pairs:`` data (queries and
documents alike) both work. Why cosine: what an embedding is used for — cosine search, the fidelity metrics of
:mod:`modelpress.evaluate.retrieval` — is invariant to the vector's length, so the student is not asked to match a
norm nobody reads; for L2-normalized embeddings (MiniLM) it is the same objective as the MSE of the vectors
(‖a − b‖² = 2 − 2·cos), and for unnormalized ones it does not let long vectors dominate the loss.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..artifacts import ModelArtifact, check_inputs
from ..config import Checked, Interval, option
from ..errors import InputError
from ..io import sha256_arrays
from ..sources import parse_model
from .distributed import check_nproc, nproc_option, torchrun_env
from .registry import COST_KEY, StageConfig, StageContext, register_stage
from .train import (batch_size_option, check_early_stopping, discard_checkpoints, epochs_option, fit, lr_option,
                    patience_option, seed_option, stage_cost, val_fraction_option, weight_decay_option)

TEACHER_ALIASES = ("original", "input")


@dataclass(frozen=True)
class DistillConfig(Checked, StageConfig):
    """``temperature`` > 0 softens both distributions; ``alpha`` in [0, 1] weighs the soft loss against labels."""

    kind: ClassVar[str] = "distill"
    references: ClassVar[dict[str, str]] = {"teacher": "model", "student": "model"}
    keywords: ClassVar[tuple[str, ...]] = ("original", "input")
    teacher: str = option("original", help="Teacher model reference (e.g. zoo:cnn@w.safetensors or a folder), or "
                                           "'original' / 'input'.")
    student: str = option("input", help="Student model reference (zoo:NAME, pkg.module:factory, a folder), or "
                                        "'input'.")
    student_kwargs: dict[str, Any] = field(default_factory=dict,
                                           metadata={"help": "Widths for a zoo: student, e.g. {hidden: [32]}."})
    temperature: float = option(4.0, Interval(float, 0, 100, closed="right", noun=False),
                                help="Softmax temperature T > 0.")
    alpha: float = option(0.9, Interval(float, 0, 1, noun=False),
                          help="Weight in [0, 1] of the soft-target loss (1 - alpha goes to the labels).")
    epochs: int = epochs_option(10)
    lr: float = lr_option()
    batch_size: int = batch_size_option()
    weight_decay: float = weight_decay_option()
    seed: int = seed_option()
    features: tuple[tuple[str, str], ...] = option(
        (), cli="--feature", metavar="TEACHER_LAYER:STUDENT_LAYER",
        help="TEACHER_LAYER:STUDENT_LAYER pair of equal output shapes for an MSE feature loss; repeatable.")
    feature_weight: float = option(1.0, Interval(float, 0, noun=False), help="Weight of the feature loss.")
    val_fraction: float = val_fraction_option()
    patience: int = patience_option()
    nproc: int = nproc_option()

    def check(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher.strip():
            raise InputError("distill.teacher must name a model (or 'original' / 'input')")
        if not isinstance(self.student, str) or not self.student.strip():
            raise InputError("distill.student must name a model (or 'input')")
        if self.student == "original":
            raise InputError("distill.student cannot be 'original' (the teacher's model)",
                             hint="use 'input' or a model reference")
        if self.teacher == self.student:
            raise InputError(f"distill.teacher and distill.student are the same model ({self.teacher!r})")
        if not isinstance(self.student_kwargs, dict):
            raise InputError(f"distill.student_kwargs must be a mapping, got {type(self.student_kwargs).__name__}")
        if self.student_kwargs and parse_model(self.student).scheme != "zoo":
            raise InputError(f"distill.student_kwargs only apply to zoo: students, not {self.student!r}")
        pairs = []
        for pair in self.features or ():
            if isinstance(pair, str) or len(pair) != 2:
                raise InputError(f"distill.features entries must be [teacher_layer, student_layer], got {pair!r}")
            pairs.append((str(pair[0]), str(pair[1])))
        object.__setattr__(self, "features", tuple(pairs))
        check_early_stopping("distill", patience=self.patience, val_fraction=self.val_fraction)
        check_nproc("distill", self.nproc, self.batch_size)

    @property
    def needs_train(self) -> bool:
        return True


def embedding_loss(student: Any, teacher: Any) -> Any:
    """``mean(1 − cos(student_i, teacher_i))`` over the batch's rows: 0 when every embedding points the teacher's
    way (module docstring: why cosine)."""
    import torch.nn.functional as F

    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1, eps=1e-8)).mean()


def kd_loss(student_logits: Any, teacher_logits: Any, targets: Any, *, temperature: float, alpha: float) -> Any:
    """Hinton's loss: ``alpha · T² · KL(p_teacher^T ‖ p_student^T) + (1 − alpha) · CE(student, targets)``."""
    import torch.nn.functional as F

    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, targets)


@register_stage(DistillConfig)
def run_distill(artifact: ModelArtifact, config: DistillConfig, ctx: StageContext) -> ModelArtifact:
    import torch

    train = ctx.require("train", stage="distill")
    teacher = _resolve(config.teacher, artifact, ctx, role="teacher", seed=config.seed)
    student = _resolve(config.student, artifact, ctx, role="student", kwargs=config.student_kwargs, seed=config.seed)
    if student.format != "torch" or student.module is None:
        raise InputError(f"the distillation student {student.source} is {student.format}; it must be a torch model")
    if student.transforms:
        raise InputError(f"the distillation student {student.source} carries transforms "
                         f"{[t['name'] for t in student.transforms]}", hint="distill before quantizing")
    embedding = _embedding_pair(teacher, student)
    if embedding:
        if teacher.n_classes != student.n_classes:
            raise InputError(f"teacher {_label(teacher)} gives {teacher.n_classes}-dimensional embeddings but student "
                             f"{_label(student)} {student.n_classes}-dimensional", hint="distill between models "
                             "with the same embedding size")
        if config.val_fraction > 0:
            raise InputError(f"distill.val_fraction {config.val_fraction:g}: validation scores cross-entropy on "
                             f"labels, which embedding distillation does not read", hint="leave val_fraction 0")
    elif teacher.n_classes != student.n_classes:
        raise InputError(f"teacher {_label(teacher)} outputs {teacher.n_classes} classes but student "
                         f"{_label(student)} outputs {student.n_classes}",
                         hint="distill between models of the same task")
    if not embedding and train.n_classes > student.n_classes:
        raise InputError(f"training data {train.source} has {train.n_classes} classes but student "
                         f"{_label(student)} outputs {student.n_classes}")
    # the label loss would pull every sample toward a placeholder
    if not embedding and config.alpha < 1 and not train.labelled:
        raise InputError(f"distill: training data {train.source} has no labels but alpha {config.alpha:g} gives "
                         f"{1 - config.alpha:g} of the loss to labels", hint="set alpha: 1 (the teacher is the label)")
    first = next(train.batches(2))[0]
    check_inputs(teacher.inputs, first, model=f"teacher {teacher.source}")
    check_inputs(student.inputs, first, model=f"student {student.source}")
    if config.nproc > 1 and torchrun_env() is None and (teacher.format != "torch" or teacher.module is None):
        raise InputError(f"distill.nproc = {config.nproc} needs a torch teacher; {_label(teacher)} is "
                         f"{teacher.format}, and an onnxruntime session does not survive the fork into the ranks",
                         hint="distill with nproc 1, or name the teacher's torch model")
    module = copy.deepcopy(student.module).train()
    teach = _teacher_fn(teacher, ctx.threads)
    feature = _FeatureMatch(config.features, teacher, module) if config.features and config.feature_weight > 0 else None

    def loss_fn(mod: Any, inputs: list[Any], targets: Any) -> Any:
        t_logits = teach(inputs)
        s_logits = mod(*inputs)
        if embedding:  # the targets (labels or placeholders) are never read
            loss = embedding_loss(s_logits, t_logits)
        else:
            loss = kd_loss(s_logits, t_logits, targets, temperature=config.temperature, alpha=config.alpha)
        if feature is not None:
            loss = loss + config.feature_weight * feature.loss()
        return loss

    if feature is not None:
        feature.check(teach, module, train)
    probe = teach([torch.from_numpy(np.ascontiguousarray(a)) for a in first.values()])
    checkpoints = ctx.work_dir / "checkpoints"
    try:
        log = fit(module, train, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
                  weight_decay=config.weight_decay, seed=config.seed, loss_fn=loss_fn, desc="distill",
                  val_fraction=config.val_fraction, patience=config.patience, checkpoint_dir=checkpoints,
                  nproc=config.nproc,
                  fingerprint={"kd": [config.temperature, config.alpha, list(config.features), config.feature_weight,
                                      teacher.source, sha256_arrays(probe.numpy()), "embedding" if embedding
                                      else "logits"]})
    finally:
        if feature is not None:
            feature.close()
    discard_checkpoints(checkpoints)
    how = ("1 − cosine of the embeddings, no labels read" if embedding
           else f"T={config.temperature:g}, alpha={config.alpha:g}")
    ctx.notes.append(f"distilled {student.source} from teacher {teacher.source} ({how}, {log['epochs_run']} epochs)")
    result = student.evolve(module=module.eval(), path=None)
    result.metadata["distillation"] = {"teacher": teacher.source, "student": student.source,
                                       "loss": "embedding cosine" if embedding else "kd",
                                       "temperature": None if embedding else config.temperature,
                                       "alpha": None if embedding else config.alpha,
                                       "features": [list(p) for p in config.features], "training": log}
    result.metadata[COST_KEY] = stage_cost([log])
    return result


def _embedding_pair(teacher: ModelArtifact, student: ModelArtifact) -> bool:
    """True when both models output embeddings; one embedding model and one classifier is an error."""
    kinds = {role: getattr(a, "task", None) == "embedding" for role, a in (("teacher", teacher), ("student", student))}
    if kinds["teacher"] != kinds["student"]:
        emb = "teacher" if kinds["teacher"] else "student"
        other = "student" if emb == "teacher" else "teacher"
        raise InputError(f"the distillation {emb} {_label(teacher if emb == 'teacher' else student)} is an embedding "
                         f"model but the {other} is a classifier", hint="distill an embedding model from an "
                         "embedding model (hf:DIR?task=embedding)")
    return kinds["teacher"]


def _label(artifact: ModelArtifact) -> str:
    """What the user named: the folder or file a model was loaded from, else its source reference."""
    return str(artifact.path) if artifact.path is not None else artifact.source


def _resolve(ref: str, artifact: ModelArtifact, ctx: StageContext, *, role: str, seed: int,
             kwargs: dict[str, Any] | None = None) -> ModelArtifact:
    """``input`` → the incoming artifact, ``original`` → the model before compression, else a model reference."""
    if ref == "input":
        return artifact
    if ref == "original":
        if ctx.original is None:
            raise InputError(f"distill {role} 'original' needs the uncompressed model", hint=f"name the {role} model")
        return ctx.original
    from ..sources import load_model

    options: dict[str, Any] = {"kwargs": dict(kwargs)} if kwargs else {}
    return load_model(ref, data=ctx.train or ctx.eval, seed=seed, **options)


def _teacher_fn(teacher: ModelArtifact, threads: int) -> Any:
    """inputs → teacher logits (no gradients). A torch teacher runs a frozen eval-mode copy; others a runner."""
    import torch

    if teacher.format == "torch" and teacher.module is not None:
        module = copy.deepcopy(teacher.module).eval()
        for p in module.parameters():
            p.requires_grad_(False)

        def run_torch(inputs: list[Any]) -> Any:
            with torch.no_grad():
                return module(*inputs)

        run_torch.module = module  # type: ignore[attr-defined]
        return run_torch
    from ..runtime.sessions import make_runner

    runner = make_runner(teacher, "onnxruntime" if teacher.format == "onnx" else teacher.format, threads=threads)
    names = [s.name for s in teacher.inputs]

    def run_other(inputs: list[Any]) -> Any:
        feed = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(names, inputs)}
        return torch.from_numpy(np.asarray(runner(feed), dtype=np.float32))

    return run_other


class _FeatureMatch:
    """MSE between the outputs of paired teacher/student layers, captured with forward hooks on each batch."""

    def __init__(self, pairs: tuple[tuple[str, str], ...], teacher: ModelArtifact, student: Any) -> None:
        if teacher.format != "torch" or teacher.module is None:
            raise InputError(f"distill.features needs a torch teacher; {teacher.source} is {teacher.format}")
        self.pairs = pairs
        self.captured: dict[tuple[str, str], Any] = {}
        self.handles: list[Any] = []
        self.student = student
        self.teacher_source = teacher.source

    def attach(self, teacher_module: Any) -> None:
        t_layers, s_layers = dict(teacher_module.named_modules()), dict(self.student.named_modules())
        for t_name, s_name in self.pairs:
            for side, name, layers in (("teacher", t_name, t_layers), ("student", s_name, s_layers)):
                if not name or name not in layers:
                    raise InputError(f"distill.features: the {side} has no layer {name!r}")
                self.handles.append(layers[name].register_forward_hook(self._keep(side, name)))

    def _keep(self, side: str, name: str) -> Any:
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            self.captured[(side, name)] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    def check(self, teach: Any, student: Any, train: Any) -> None:
        """Attach the hooks and run one batch: paired outputs must have equal shapes."""
        import torch

        self.attach(teach.module)
        batch = next(train.batches(2))[0]
        inputs = [torch.from_numpy(np.ascontiguousarray(a)) for a in batch.values()]
        student.eval()  # no BatchNorm statistics update from this probe; fit() switches back to train mode
        with torch.no_grad():
            teach(inputs)
            student(*inputs)
        for t_name, s_name in self.pairs:
            t, s = self.captured[("teacher", t_name)], self.captured[("student", s_name)]
            if tuple(t.shape) != tuple(s.shape):
                raise InputError(f"distill.features: teacher layer {t_name!r} outputs {tuple(t.shape)} but student "
                                 f"layer {s_name!r} outputs {tuple(s.shape)}; feature matching needs equal shapes")
        self.captured.clear()

    def loss(self) -> Any:
        import torch.nn.functional as F

        total = 0
        for t_name, s_name in self.pairs:
            total = total + F.mse_loss(self.captured[("student", s_name)], self.captured[("teacher", t_name)].detach())
        self.captured.clear()
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
