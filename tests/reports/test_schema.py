"""report.json schema: run_info, new_report, validate_report and load_report."""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from modelpress.errors import InputError
from modelpress.io import write_json
from modelpress.reports import SCHEMA_VERSION, load_report, new_report, run_info, validate_report
from modelpress.reports import schema


def _stage(name: str, *, kind: str = "evaluate") -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "params": {},
        "notes": [],
        "artifact": {"path": f"stages/{name}/model.onnx", "format": "onnx", "sha256": "ab" * 32, "size_bytes": 10},
        "metrics": {"accuracy": 0.9, "roc_auc": None, "roc_auc_reason": "only one class present in y_true"},
        "fidelity": None,
        "latency": [{"backend": "onnxruntime", "batch_size": 1, "threads": 1, "median_ms": 0.5}],
        "footprint": {"params": 100, "nonzero_params": 100, "sparsity": 0.0, "size_bytes": 10, "macs": None},
        "gates": [{"name": "max_accuracy_drop", "threshold": 0.01, "value": 0.0, "passed": True}],
    }


@pytest.fixture
def report() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "run": {"name": "demo", "created": "2024-01-01T00:00:00+00:00", "threads": 1},
        "data": {"source": "sklearn:digits", "n_samples": 360, "n_classes": 2, "class_names": ["a", "b"],
                 "sha256": "cd" * 32},
        "stages": [_stage("01-train", kind="train"), _stage("02-export", kind="export")],
    }


# ------------------------------------------------------------------------------------------------ run_info


def test_run_info_fields() -> None:
    info = run_info("demo", threads=4)
    assert info["name"] == "demo"
    assert info["threads"] == 4
    created = datetime.fromisoformat(info["created"])
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    for key in ("modelpress_version", "torch", "onnxruntime", "onnx", "numpy", "python", "platform", "cpu"):
        assert isinstance(info[key], str) and info[key], key
    assert set(info["cpu_flags"]) <= set(schema.RELEVANT_CPU_FLAGS)
    json.dumps(info)  # plain JSON


def test_run_info_reads_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 fma avx512f amx_tile avx512_vnni\n"
    monkeypatch.setattr(schema, "_read_cpuinfo", lambda: cpuinfo)
    info = run_info("demo", threads=1)
    assert info["cpu"] == "Test CPU 9000"
    assert info["cpu_flags"] == ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"]


def test_run_info_without_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "_read_cpuinfo", lambda: "")
    info = run_info("demo", threads=1)
    assert info["cpu_flags"] == []
    assert isinstance(info["cpu"], str) and info["cpu"]


def test_run_info_git_sha(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"

    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert args == ["git", "rev-parse", "HEAD"]
        return subprocess.CompletedProcess(args, 0, stdout=sha + "\n", stderr="")

    monkeypatch.setattr(schema.subprocess, "run", fake_run)
    assert run_info("demo", threads=1)["git_sha"] == sha


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(OSError("git not installed"), id="no-git"),
        pytest.param(subprocess.TimeoutExpired(["git"], 5), id="timeout"),
        pytest.param(subprocess.CompletedProcess(["git"], 128, stdout="", stderr="not a repo"), id="not-repo"),
        pytest.param(subprocess.CompletedProcess(["git"], 0, stdout="garbage\n", stderr=""), id="garbage"),
    ],
)
def test_run_info_omits_git_sha_and_never_fails(monkeypatch: pytest.MonkeyPatch, behaviour: Any) -> None:
    def fake_run(args: list[str], **kwargs: Any) -> Any:
        if isinstance(behaviour, BaseException):
            raise behaviour
        return behaviour

    monkeypatch.setattr(schema.subprocess, "run", fake_run)
    assert "git_sha" not in run_info("demo", threads=1)


def test_run_info_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert "git_sha" not in run_info("demo", threads=1)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_run_info_rejects_bad_threads(threads: Any) -> None:
    with pytest.raises(InputError, match="threads must be a positive integer"):
        run_info("demo", threads=threads)


def test_new_report_validates() -> None:
    data = {"source": "sklearn:digits", "n_samples": 10, "n_classes": 2, "class_names": ["0", "1"], "sha256": "x"}
    report = new_report("demo", data=data, threads=2)
    assert report["schema_version"] == SCHEMA_VERSION == 1
    assert report["stages"] == []
    assert report["data"] == data and report["data"] is not data
    assert report["run"]["threads"] == 2
    assert validate_report(report, source="new") is report


# ------------------------------------------------------------------------------------------------ validate


def test_validate_accepts_and_returns(report: dict[str, Any]) -> None:
    assert validate_report(report, source="r.json") is report


def test_validate_unknown_version(report: dict[str, Any]) -> None:
    report["schema_version"] = 7
    with pytest.raises(InputError, match=r"^old/report\.json has schema_version 7; this modelpress reads 1$"):
        validate_report(report, source="old/report.json")


@pytest.mark.parametrize("version", ["1", True, 1.5, None])
def test_validate_version_of_wrong_type(report: dict[str, Any], version: Any) -> None:
    report["schema_version"] = version
    with pytest.raises(InputError, match="has schema_version .*; this modelpress reads 1"):
        validate_report(report, source="r.json")


def test_validate_missing_version(report: dict[str, Any]) -> None:
    del report["schema_version"]
    with pytest.raises(InputError, match="r.json has no schema_version; is it a modelpress report.json"):
        validate_report(report, source="r.json")


@pytest.mark.parametrize("value", [[], "text", 3, None])
def test_validate_not_an_object(value: Any) -> None:
    with pytest.raises(InputError, match="r.json is not a modelpress report: expected a JSON object"):
        validate_report(value, source="r.json")


@pytest.mark.parametrize("key", ["run", "data", "stages"])
def test_validate_top_level_missing_key(report: dict[str, Any], key: str) -> None:
    del report[key]
    with pytest.raises(InputError, match=f"^r.json is missing key '{key}'$"):
        validate_report(report, source="r.json")


def test_validate_top_level_wrong_type(report: dict[str, Any]) -> None:
    report["stages"] = {"01-train": {}}
    with pytest.raises(InputError, match="r.json key 'stages' should be a list, got an object"):
        validate_report(report, source="r.json")


def test_validate_run_and_data_keys(report: dict[str, Any]) -> None:
    bad = copy.deepcopy(report)
    del bad["run"]["name"]
    with pytest.raises(InputError, match="r.json: run is missing key 'name'"):
        validate_report(bad, source="r.json")
    bad = copy.deepcopy(report)
    bad["data"]["n_samples"] = "360"
    with pytest.raises(InputError, match="r.json: data key 'n_samples' should be an integer, got a string"):
        validate_report(bad, source="r.json")


def test_validate_class_names_match_n_classes(report: dict[str, Any]) -> None:
    report["data"]["class_names"] = ["a", "b", "c"]
    with pytest.raises(InputError, match="data has n_classes 2 but 3 class_names"):
        validate_report(report, source="r.json")


@pytest.mark.parametrize("key", sorted(schema._STAGE_KEYS))
def test_validate_stage_missing_key_names_stage_and_key(report: dict[str, Any], key: str) -> None:
    del report["stages"][1][key]
    label = r"stage 2 \('02-export'\)" if key != "name" else "stage 2"
    with pytest.raises(InputError, match=f"^r.json: {label} is missing key '{key}'$"):
        validate_report(report, source="r.json")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param("latency", {}, "key 'latency' should be a list, got an object", id="latency-object"),
        pytest.param("params", None, "key 'params' should be an object, got null", id="params-null"),
        pytest.param("metrics", [], "key 'metrics' should be an object or null, got a list", id="metrics-list"),
        pytest.param("name", 3, "key 'name' should be a string, got an integer", id="name-int"),
        pytest.param("notes", "one note", "key 'notes' should be a list of strings", id="notes-str"),
    ],
)
def test_validate_stage_wrong_type(report: dict[str, Any], key: str, value: Any, message: str) -> None:
    report["stages"][0][key] = value
    with pytest.raises(InputError, match=f"r.json: stage 1.* {message}"):
        validate_report(report, source="r.json")


def test_validate_stage_nested(report: dict[str, Any]) -> None:
    bad = copy.deepcopy(report)
    del bad["stages"][1]["latency"][0]["median_ms"]
    with pytest.raises(InputError, match=r"stage 2 \('02-export'\) latency\[0\] is missing key 'median_ms'"):
        validate_report(bad, source="r.json")
    bad = copy.deepcopy(report)
    bad["stages"][0]["gates"][0]["passed"] = "yes"
    with pytest.raises(InputError, match=r"stage 1 \('01-train'\) gates\[0\] key 'passed' should be true/false"):
        validate_report(bad, source="r.json")
    bad = copy.deepcopy(report)
    bad["stages"][0]["metrics"]["accuracy"] = True
    with pytest.raises(InputError, match="metrics key 'accuracy' should be a number or null, got true/false"):
        validate_report(bad, source="r.json")
    bad = copy.deepcopy(report)
    bad["stages"][0] = "01-train"
    with pytest.raises(InputError, match="stage 1 should be a JSON object, got a string"):
        validate_report(bad, source="r.json")


def test_validate_duplicate_stage_names(report: dict[str, Any]) -> None:
    report["stages"][1]["name"] = "01-train"
    with pytest.raises(InputError, match="stages 1 and 2 are both named '01-train'"):
        validate_report(report, source="r.json")


def test_validate_accepts_numpy_numbers(report: dict[str, Any]) -> None:
    np = pytest.importorskip("numpy")
    report["stages"][0]["metrics"]["accuracy"] = np.float32(0.5)
    report["stages"][0]["latency"][0]["batch_size"] = np.int64(8)
    validate_report(report, source="r.json")


# ------------------------------------------------------------------------------------------------ load


def test_load_report_from_file_and_folder(tmp_path: Path, report: dict[str, Any]) -> None:
    write_json(tmp_path / "report.json", report)
    assert load_report(tmp_path / "report.json") == report
    assert load_report(tmp_path) == report
    assert load_report(str(tmp_path)) == report


def test_load_report_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope does not exist; pass a report.json or the folder that holds it"):
        load_report(tmp_path / "nope")
    with pytest.raises(InputError, match=r"report\.json does not exist; pass a report.json or the folder"):
        load_report(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"schema_version": 1, "run": ', "is not valid JSON", id="truncated"),
        pytest.param("\x00\x01binary", "is not valid JSON", id="binary"),
        pytest.param("[1, 2]", "is not a modelpress report: expected a JSON object, got a list", id="list"),
        pytest.param('{"schema_version": 2}', "has schema_version 2; this modelpress reads 1", id="future"),
    ],
)
def test_load_report_bad_content(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_report(path)


def test_load_report_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(InputError, match="is not valid JSON"):
        load_report(path)


def test_load_report_size_cap(tmp_path: Path, report: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "report.json", report)
    monkeypatch.setattr(schema, "MAX_REPORT_BYTES", 100)
    with pytest.raises(InputError, match="over the 100-byte limit for a report.json"):
        load_report(tmp_path)


def test_load_report_deeply_nested(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(InputError, match="is not valid JSON|is not a modelpress report"):
        load_report(path)
