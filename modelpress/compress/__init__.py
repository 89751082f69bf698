"""Compression stages. This package fills its own :data:`~modelpress.compress.registry.STAGES`: importing it imports
every stage module, whose ``@register_stage`` adds the stage, so the registry is complete whatever a caller imported
first (any ``modelpress.compress.X`` import runs this file). Third-party stages come through ``modelpress.stages``."""

from . import distill, export, prune, quantize, train  # noqa: F401  (each module registers its stage)
from .registry import STAGES, Stage, StageConfig, StageContext, config_for, register_stage, run_stage

__all__ = ["STAGES", "Stage", "StageConfig", "StageContext", "config_for", "register_stage", "run_stage"]
