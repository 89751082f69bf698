"""Every stage's own record reaches report.json whole (not only the keys on a list), built by one function."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest

from modelpress.pipeline import execute_pipeline, parse_spec, stage_entry, stage_record

SPEC = textwrap.dedent("""\
    name: rec
    model: zoo:mlp
    model_kwargs: {hidden: [8]}
    data: {eval: sklearn:iris}
    stages:
      - {type: train, epochs: 2}
      - {type: prune, method: magnitude, amount: 0.5}
      - {type: distill, teacher: original, epochs: 1}
      - {type: quantize, mode: dynamic}
    evaluate:
      batch_sizes: [1]
      latency: false
    """)
OWN = {"01-train": "training", "02-prune": "pruning", "03-distill": "distillation", "04-quantize": "quantization"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "rec"
    execute_pipeline(parse_spec(SPEC), out_dir=out)
    return out


def manifest_metadata(out, name):
    return json.loads((out / "stages" / name / "manifest.json").read_text(encoding="utf-8"))["metadata"]


def test_each_stage_record_is_in_report_json_whole_and_only_its_own(run):
    stages = {s["name"]: s for s in json.loads((run / "report.json").read_text(encoding="utf-8"))["stages"]}
    assert list(stages) == list(OWN)
    for name, key in OWN.items():
        assert stages[name][key] == manifest_metadata(run, name)[key], name  # whole, as the stage wrote it
        others = set(OWN.values()) - {key}
        assert not others & set(stages[name]), (name, others & set(stages[name]))  # inherited, not recorded here
    assert stages["02-prune"]["pruning"]["method"] == "magnitude" and stages["02-prune"]["pruning"]["amount"] == 0.5
    assert stages["03-distill"]["distillation"]["training"]["epochs"] == 1
    assert stages["04-quantize"]["quantization"]["mode"] == "dynamic"
    assert "cost" not in stages["02-prune"]["pruning"] and stages["03-distill"]["cost"]["epochs"] == 1


def test_a_stage_reevaluated_from_the_cache_keeps_its_record(run):
    before = json.loads((run / "report.json").read_text(encoding="utf-8"))["stages"]
    outcome = execute_pipeline(parse_spec(SPEC.replace("latency: false", "latency: false\n  predict_batch_size: 16")),
                               out_dir=run)
    assert {s.status for s in outcome.stages} == {"re-evaluated"}
    for old, new in zip(before, outcome.report["stages"], strict=True):
        key = OWN[old["name"]]
        assert new[key] == old[key]


def test_stage_record_is_what_the_stage_added_or_changed_made_json_safe():
    before = {"verification": {"passed": True}, "training": {"epochs": 2}, "cost": {"train_wall_s": 1.0}}
    after = {**before, "training": {"epochs": 3}, "quantization": {"ops": ("MatMul",), "scale": np.float32(0.5),
                                                                   "drift": math.nan, "n": np.int64(4)},
             "cost": {"train_wall_s": 2.0}}
    record = stage_record(after, before=before)
    assert record == {"training": {"epochs": 3},
                      "quantization": {"ops": ["MatMul"], "scale": 0.5, "drift": None, "n": 4}}
    json.dumps(record, allow_nan=False)  # plain JSON, no NaN
    assert set(stage_record(after)) == {"verification", "training", "quantization"}  # no input: all but the cost


def test_a_record_key_that_names_a_report_field_is_left_out_with_a_note():
    class Result:
        notes = ["evaluated"]

        def as_stage_fields(self):
            return {"metrics": {"accuracy": 1.0}, "fidelity": None, "latency": [], "footprint": {}}

    entry = stage_entry("01-x", "x", {"a": 1}, artifact={"path": "m"}, result=Result(), notes=["ran"],
                        record={"metrics": {"accuracy": 0.0}, "mine": [1]}, cost={"stage_wall_s": 0.5})
    assert entry["metrics"] == {"accuracy": 1.0} and entry["mine"] == [1] and entry["cost"] == {"stage_wall_s": 0.5}
    assert entry["notes"][:2] == ["ran", "evaluated"] and "'metrics' clashes" in entry["notes"][2]
    assert entry["gates"] == [] and entry["params"] == {"a": 1}
