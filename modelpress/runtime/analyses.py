"""Analyses a stage asks for by name, provided by a package on the stages' own floor.

The quantize stage (``compress/``) can explain its result (``explain: true``) and order its accuracy search by
per-layer error (``sensitivity: layer_error``). Both analyses belong to ``diagnose/``, a sibling that ``compress/``
may not import. So the stage looks them up here by name, and ``diagnose/__init__`` registers them
(:func:`modelpress.diagnose.register_analyses`). The package facade ``modelpress/__init__`` imports ``diagnose``,
so the entries exist in every process that imports anything from modelpress, whatever it imported first. Third
parties add analyses through the ``modelpress.analyses`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry

__all__ = ["ANALYSES", "EXPLAIN_QUANTIZED", "LAYER_ERROR_RANK"]

#: ``name → function``; the signatures are those of the entries below.
ANALYSES: Registry[Callable[..., Any]] = Registry("analysis", entry_points="modelpress.analyses")

#: ``explain_quantized(result, reference, data, *, threads, notes, build=None, base_exclude=None, work_dir=None)``
#: → ``result`` with ``metadata["explain"]`` (the quantize stage's ``explain: true``).
EXPLAIN_QUANTIZED = "explain_quantized"
#: ``layer_error_rank(reference_path, data, *, threads)`` → ``rank(quantized_path) -> [node, ...]`` (most harmful
#: first; the accuracy search's ``sensitivity: layer_error``).
LAYER_ERROR_RANK = "layer_error_rank"
