"""Pipelines: a YAML spec validated into typed config (:mod:`.spec`, :mod:`.validate`), run stage by stage into a
run folder (:mod:`.runner`, :mod:`.run_folder`) with a cache (:mod:`.cache`), each stage reported whole
(:mod:`.record`)."""

from __future__ import annotations

from .record import predictions_of, stage_entry, stage_record, stage_result
from .run_folder import check_output_folder, refuse_inside_inputs, stage_dir_name
from .runner import (
    PlannedStage,
    RunData,
    RunOutcome,
    StageOutcome,
    execute_pipeline,
    load_original,
    load_run_data,
    plan_pipeline,
    run_pipeline,
    tensorboard_dir,
)
from .spec import MAX_SPEC_BYTES, DataSpec, PipelineSpec
from .validate import load_spec, parse_spec

__all__ = [
    "MAX_SPEC_BYTES", "DataSpec", "PipelineSpec", "PlannedStage", "RunData", "RunOutcome", "StageOutcome",
    "check_output_folder", "execute_pipeline", "load_original", "load_run_data", "load_spec", "parse_spec",
    "plan_pipeline", "predictions_of", "refuse_inside_inputs", "run_pipeline", "stage_dir_name", "stage_entry",
    "stage_record", "stage_result", "tensorboard_dir",
]
