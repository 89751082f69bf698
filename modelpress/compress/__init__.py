"""Compression stages. Importing this package registers every stage with :mod:`modelpress.compress.registry`."""

from . import distill, export, prune, train  # noqa: F401  (registration side effects)
from . import quantize  # noqa: F401  (registers the quantize stage and the torch_dynamic_int8 transform)
from .registry import CONFIGS, STAGES, StageConfig, StageContext, config_for, register_stage, run_stage

__all__ = ["CONFIGS", "STAGES", "StageConfig", "StageContext", "config_for", "register_stage", "run_stage"]
