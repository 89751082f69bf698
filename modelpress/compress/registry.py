"""The stage registry: a frozen config dataclass + one registered function per stage.

``@register_stage(PruneConfig)`` adds a :class:`Stage` (the config type and ``run(artifact, config, ctx) ->
artifact``) to :data:`STAGES` under the config's ``kind``. The package's ``__init__`` imports every stage module, so
the registry is complete whatever a caller imported first; third-party stages come through the ``modelpress.stages``
entry-point group (``def register(registry): registry.add("mystage", Stage(MyConfig, run))``). The YAML pipeline
and the CLI's per-stage commands both call :func:`run_stage`; nothing branches on stage names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..artifacts import ModelArtifact
from ..config import field_specs
from ..data import Dataset
from ..errors import InputError
from ..registry import Registry


@dataclass(frozen=True)
class StageConfig:
    """Base of every stage config. Subclasses set ``kind`` and validate their fields in ``__post_init__``."""

    kind: ClassVar[str] = ""
    #: Fields holding a file reference ("model", "data" or "path"): a pipeline spec resolves relative ones against
    #: the spec's folder, like its top-level references. Values in ``keywords`` (e.g. "original") are not paths.
    references: ClassVar[dict[str, str]] = {}
    keywords: ClassVar[tuple[str, ...]] = ()

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any], *, where: str = "") -> StageConfig:
        """Build from a plain mapping (YAML or CLI); unknown keys are an error that suggests the closest key."""
        import difflib

        names = [spec.name for spec in field_specs(cls)]  # a nested config's keys are flat (export's TensorRT)
        for key in params:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(names)}"
                raise InputError(f"{where}stage {cls.kind!r}: unknown key {key!r}", hint=hint)
        try:
            return cls(**params)
        except TypeError as exc:
            raise InputError(f"{where}stage {cls.kind!r}: {exc}") from None


@dataclass
class StageContext:
    """What a stage may use besides its input artifact: data splits, the original model, a folder to write in."""

    work_dir: Path
    train: Dataset | None = None
    eval: Dataset | None = None
    calibration: Dataset | None = None
    original: ModelArtifact | None = None
    seed: int = 0
    threads: int = 1
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def require(self, split: str, *, stage: str) -> Dataset:
        data = getattr(self, split)
        if data is None:
            raise InputError(f"stage {stage!r} needs {split} data", hint=f"give data.{split} (or --data)")
        return data


#: ``artifact.metadata[COST_KEY]``: what making the artifact cost, filled by the stage that made it (see
#: :func:`modelpress.compress.train.stage_cost`) and cleared from the input before every stage, so it never leaks
#: into the next one: ``{"train_wall_s", "epochs", "calibration_wall_s", "peak_rss_bytes", ...}``.
COST_KEY = "cost"

C = TypeVar("C", bound=StageConfig)
StageFn = Callable[[ModelArtifact, Any, StageContext], ModelArtifact]


@dataclass(frozen=True)
class Stage:
    """One registry entry: the frozen config type and the function that runs it."""

    config: type[StageConfig]
    run: StageFn


#: Stages by kind (``"prune"``): filled by :func:`register_stage` in the stage modules this package's ``__init__``
#: imports, and by the ``modelpress.stages`` entry-point group.
STAGES: Registry[Stage] = Registry("stage", entry_points="modelpress.stages")


def register_stage(config_cls: type[C]) -> Callable[[StageFn], StageFn]:
    """Register ``run`` for ``config_cls`` under ``config_cls.kind``; registering a kind again replaces it."""

    def decorate(fn: StageFn) -> StageFn:
        if not config_cls.kind:
            raise TypeError(f"{config_cls.__name__} must set kind")
        STAGES.add(config_cls.kind, Stage(config_cls, fn), replace=True)
        return fn

    return decorate


def config_for(kind: str, params: dict[str, Any] | None = None, *, where: str = "") -> StageConfig:
    stage = STAGES.find(kind)
    if stage is None:
        import difflib

        close = difflib.get_close_matches(kind, list(STAGES.names()), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known stages: {', '.join(sorted(STAGES.names()))}"
        raise InputError(f"{where}unknown stage type {kind!r}", hint=hint)
    return stage.config.from_params(dict(params or {}), where=where)


def run_stage(artifact: ModelArtifact, config: StageConfig, ctx: StageContext) -> ModelArtifact:
    """Run one stage and record it in the artifact's history."""
    stage = STAGES.find(config.kind) if isinstance(config, StageConfig) else None
    if stage is None or stage.config is not type(config):
        raise InputError(f"no stage registered for {type(config).__name__}")
    fn = stage.run
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    if COST_KEY in artifact.metadata:  # the cost of the stage that made the input is not this stage's cost
        artifact = artifact.evolve(metadata={k: v for k, v in artifact.metadata.items() if k != COST_KEY})
    result = fn(artifact, config, ctx)
    if result is artifact:  # a stage that kept its input must not change the caller's object
        result = artifact.evolve()
    result.history = [*result.history, {"kind": config.kind, "params": config.params()}]
    return result
