"""Compression stages. Importing this package registers every stage with :mod:`modelpress.compress.registry`."""

from . import export, train  # noqa: F401  (registration side effects)
from .registry import CONFIGS, STAGES, StageConfig, StageContext, config_for, register_stage, run_stage

__all__ = ["CONFIGS", "STAGES", "StageConfig", "StageContext", "config_for", "register_stage", "run_stage"]
