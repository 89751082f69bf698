"""CONTRIBUTING.md's worked examples, run: its code blocks are executed as written, so the page cannot rot.

Each block marked ``<!-- example: NAME -->`` is compiled from the Markdown and run in the module it says it belongs
in (the stage as ``modelpress.compress.clip``, the backend beside ``runtime/sessions.py``, the metric code beside
``runtime/metrics.py``); the toy entries are registered for the test only and reached the way the page says — YAML,
the CLI, report.json, compare, entry points — and then the common contract tests of ``tests/common`` are called on
them, which is the page's promise that a new entry gets those tests for free.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpress.compress.registry import STAGES
from modelpress.errors import InputError
from modelpress.pipeline import execute_pipeline, parse_spec

from . import test_metric_contracts as metric_contracts
from . import test_stage_contracts as stage_contracts
from .conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
BLOCKS = dict(re.findall(r"<!-- example: ([\w-]+) -->\n```\w+\n(.*?)```", PAGE, flags=re.S))


def test_the_page_has_every_example():
    assert set(BLOCKS) == {"stage", "stage-yaml", "stage-command", "stage-test", "backend", "metric", "metric-code",
                           "plugin"}, sorted(BLOCKS)


def _module(name: str, code: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Run ``code`` as module ``name`` (relative imports resolve from its package), kept for the test only."""
    module = types.ModuleType(name)
    module.__package__ = name.rpartition(".")[0]
    module.__file__ = str(ROOT / "CONTRIBUTING.md")
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, f"CONTRIBUTING.md [{name}]", "exec"), module.__dict__)
    return module


@pytest.fixture
def clip(monkeypatch):
    """The stage example as ``modelpress.compress.clip``, registered while the test runs."""
    monkeypatch.setattr(STAGES, "_entries", dict(STAGES._entries))  # the session's registry is left as it was
    return _module("modelpress.compress.clip", BLOCKS["stage"], monkeypatch)


def test_the_stage_example_is_reached_from_yaml_and_reaches_report_json(clip, tmp_path):
    spec = parse_spec(BLOCKS["stage-yaml"])
    assert spec.stages[0] == clip.ClipConfig(percentile=99.0) and spec.stages[1].kind == "quantize"
    execute_pipeline(spec, out_dir=tmp_path / "run")
    entries = {s["name"]: s for s in json.loads((tmp_path / "run" / "report.json").read_text())["stages"]}
    assert list(entries) == ["00-original", "01-clip", "02-quantize"]
    record = entries["01-clip"]["clipping"]
    assert record["percentile"] == 99.0 and record["clipped_weights"] > 0  # a few per tensor of ≥ 64 weights
    assert "clipping" not in entries["02-quantize"]  # inherited by the next stage, not its own record


def test_the_stage_example_gets_the_common_contract_tests(clip, tmp_path, monkeypatch, iris_test, one_thread):
    stage_contracts.test_config_round_trips_through_params("clip")
    for name in ("percentile", "min_numel"):
        stage_contracts.test_a_value_outside_a_declared_constraint_names_the_key("clip", name, tmp_path)
    with pytest.raises(InputError, match=r"^clip\.percentile must be in \(50, 100\], got 10$"):
        clip.ClipConfig(percentile=10)  # the message the page quotes
    out = tmp_path / "run"
    execute_pipeline(parse_spec(stage_contracts._one_stage_spec("clip")), out_dir=out)
    stage_contracts.test_the_stage_record_reaches_report_json_whole("clip", lambda kind: out)
    stage_contracts.test_the_artifact_reloads_from_its_folder_without_pickle("clip", lambda kind: out, monkeypatch,
                                                                             iris_test)


def test_the_stage_command_example_is_generated_from_the_config(clip, run_cli, monkeypatch, tmp_path):
    import modelpress.cli.stages as stages
    from modelpress.cli import cli
    from modelpress.sources import load_model

    namespace: dict[str, Any] = {**vars(stages), "ClipConfig": clip.ClipConfig}
    exec(compile(BLOCKS["stage-command"], "CONTRIBUTING.md [stage-command]", "exec"), namespace)
    monkeypatch.setitem(cli.commands, "clip", namespace["clip"])
    assert {"percentile", "min_numel"} <= {p.name for p in namespace["clip"].params}
    bad = run_cli("clip", "zoo:mlp", "--data", DATA, "--percentile", "10", "-o", tmp_path / "bad")
    assert (bad.exit_code, bad.stderr.strip()) == (2, "error: clip.percentile must be in (50, 100], got 10.0")
    result = run_cli("clip", "zoo:mlp", "--data", DATA, "--percentile", "99", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(r"clipped \d+ weights; wrote .*out", result.stdout.strip()), result.stdout
    assert load_model(str(tmp_path / "out")).metadata["clipping"]["percentile"] == 99.0


def test_the_stage_test_example_passes(clip, tmp_path):
    namespace: dict[str, Any] = {"__name__": "contributing_stage_test"}
    exec(compile(BLOCKS["stage-test"], "CONTRIBUTING.md [stage-test]", "exec"), namespace)
    namespace["test_clip_clamps_the_outlier_at_the_percentile"](tmp_path)


def _backend_namespace() -> dict[str, Any]:
    import modelpress.runtime.sessions as sessions

    namespace = dict(vars(sessions))  # where the page says it goes: beside _ort_runner in runtime/sessions.py
    exec(compile(BLOCKS["backend"], "CONTRIBUTING.md [backend]", "exec"), namespace)
    return namespace


def test_the_backend_example_runs_like_torch_and_reaches_yaml(monkeypatch, tiny_torch, tiny_onnx, iris_test, tmp_path):
    from modelpress.runtime.sessions import BACKENDS, make_runner
    from modelpress.sources import load_model

    monkeypatch.setattr(BACKENDS, "_entries", dict(BACKENDS._entries))
    _backend_namespace()["register"](BACKENDS)
    got = make_runner(load_model(str(tiny_onnx)), "onnxruntime-basic", threads=1)(iris_test.inputs)
    want = make_runner(tiny_torch, "torch", threads=1)(iris_test.inputs)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="backend onnxruntime-basic runs ONNX models"):
        make_runner(tiny_torch, "onnxruntime-basic")
    spec = parse_spec(f"name: b\nmodel: zoo:mlp\nmodel_kwargs: {{hidden: [8]}}\ndata: {{eval: {DATA}}}\n"
                      "stages:\n  - {type: export}\nevaluate: {backends: [onnxruntime-basic], batch_sizes: [1]}\n")
    execute_pipeline(spec, out_dir=tmp_path / "run")
    stages = json.loads((tmp_path / "run" / "report.json").read_text())["stages"]
    assert [row["backend"] for row in stages[-1]["latency"]] == ["onnxruntime-basic"]
    assert any("latency on onnxruntime-basic skipped" in n for n in stages[0]["notes"])  # the torch original


def test_the_backend_example_reaches_the_cli_choice(tiny_onnx, tmp_path):
    """``--backend`` is a Choice read from the registry when the CLI is imported: registered first, it is there."""
    code = textwrap.dedent(f"""
        import sys
        import modelpress.runtime.sessions as sessions
        namespace = dict(vars(sessions))
        exec({BLOCKS['backend']!r}, namespace)
        namespace["register"](sessions.BACKENDS)
        from modelpress.cli import main
        sys.exit(main(["evaluate", {str(tiny_onnx)!r}, "--data", {DATA!r}, "--backend", "onnxruntime-basic",
                       "--batch-size", "1", "--json", "--out", {str(tmp_path)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env={**__import__("os").environ, "MODELPRESS_QUIET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["backend"] for row in json.loads(done.stdout)["latency"]] == ["onnxruntime-basic"]


@pytest.fixture
def brier(monkeypatch):
    from modelpress.metric_schema import METRICS, Metric

    declared = eval(compile(BLOCKS["metric"].strip(), "CONTRIBUTING.md [metric]", "eval"), {"Metric": Metric})
    monkeypatch.setitem(METRICS._entries, declared.path, declared)
    return declared


def test_the_metric_example_computes_and_shows_everywhere(brier):
    import modelpress.runtime.metrics as metrics

    namespace = dict(vars(metrics))  # where the page says the code goes
    exec(compile(BLOCKS["metric-code"], "CONTRIBUTING.md [metric-code]", "exec"), namespace)
    brier_score = namespace["brier_score"]
    # by hand: row 1 is exact (0); row 2 is 0.5² + 0.5² = 0.5; the mean is 0.25
    assert brier_score([0, 1], [[1.0, 0.0], [0.5, 0.5]]) == pytest.approx(0.25)
    assert brier_score([0, 1, 2], np.eye(3)[[2, 0, 1]]) == pytest.approx(2.0)  # every row certain and wrong
    with pytest.raises(InputError, match="y_true has 2 rows but y_score has 1"):
        brier_score([0, 1], [[1.0, 0.0]])
    assert brier.path == "metrics.brier_score" and brier.higher_is_better is False
    metric_contracts.test_a_metric_renders_in_report_md_with_its_formatter(brier.path)
    metric_contracts.test_a_compared_metric_is_a_row_of_compare_with_both_values(brier.path)
    for missing in (None, float("nan")):
        metric_contracts.test_a_missing_or_nan_value_shows_as_a_dash(brier.path, missing)


def _registries() -> dict[str, Any]:
    rows = re.findall(r"^\| `(\w+)` \| `([\w.]+)` \| (`[\w.]+`|—) \|", PAGE, flags=re.M)
    return {name: (module, group.strip("`")) for name, module, group in rows}


def test_the_registry_table_names_the_code_s_registries_and_groups():
    from modelpress.registry import Registry

    table = _registries()
    in_code = {match.group(1) for path in (ROOT / "modelpress").rglob("*.py")
               for match in re.finditer(r"^(\w+): Registry\[.*\] = Registry\(", path.read_text(encoding="utf-8"),
                                        flags=re.M)}
    assert set(table) == in_code, (sorted(table), sorted(in_code))  # a new registry gets a row
    for name, (module, group) in table.items():
        registry = getattr(importlib.import_module(module), name)
        assert isinstance(registry, Registry), name
        assert registry.entry_points == (None if group == "—" else group), (name, registry.entry_points, group)


def test_the_plugin_example_arrives_through_its_entry_point(clip, monkeypatch):
    groups = set(re.findall(r'entry-points\."([\w.]+)"', PAGE))
    assert groups and groups <= {group for _, group in _registries().values()}, groups
    package = types.ModuleType("my_package")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "my_package", package)
    monkeypatch.setitem(sys.modules, "my_package.clip", clip)
    _module("my_package.modelpress_plugin", BLOCKS["plugin"], monkeypatch)
    value = re.search(r'clip = "([\w.:]+)"', PAGE).group(1)
    point = metadata.EntryPoint(name="clip", value=value, group="modelpress.stages")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [point] if kw.get("group") == "modelpress.stages" else real(**kw))
    STAGES.pop("clip")  # registered by the decorator when the example module ran; the plugin must bring it back
    monkeypatch.setattr(STAGES, "_plugins_loaded", False)
    assert STAGES.get("clip").config is clip.ClipConfig and STAGES.get("clip").run is clip.run_clip


def test_the_registration_line_is_the_one_in_compress_init():
    line = re.search(r"^from \. import clip, .*$", PAGE, flags=re.M).group(0)
    source = (ROOT / "modelpress" / "compress" / "__init__.py").read_text(encoding="utf-8")
    assert line.replace("clip, ", "") in source.splitlines(), line
