"""Markdown rendering (numbers, deltas, escaping) and the atomic report folder writer."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpress import io as mp_io
from modelpress.errors import InputError, ModelpressError
from modelpress.reports import load_report, md_escape, render_markdown, write_report

SCRIPT = "<script>alert(1)</script>"


def _metrics(accuracy: float, *, f1: float, roc_auc: float | None, reason: str | None) -> dict[str, Any]:
    return {
        "accuracy": accuracy,
        "balanced_accuracy": accuracy - 0.001,
        "precision_macro": accuracy,
        "precision_weighted": accuracy,
        "recall_macro": accuracy,
        "recall_weighted": accuracy,
        "f1_macro": f1,
        "f1_weighted": f1,
        "roc_auc": roc_auc,
        "roc_auc_reason": reason,
        "per_class": [
            {"index": 0, "name": "a|b", "precision": 0.95, "recall": 0.9, "f1": 0.925, "support": 180},
            {"index": 1, "name": "plain", "precision": 0.9, "recall": 0.95, "f1": 0.925, "support": 180},
        ],
        "confusion_matrix": [[162, 18], [9, 171]],
        "n_samples": 360,
    }


def _latency(backend: str, batch_size: int, median_ms: float, *, unstable: bool = False) -> dict[str, Any]:
    return {
        "backend": backend, "batch_size": batch_size, "threads": 1, "n": 200, "warmup": 10,
        "median_ms": median_ms, "mean_ms": median_ms * 1.1, "std_ms": median_ms * 0.05, "iqr_ms": median_ms * 0.04,
        "p90_ms": median_ms * 1.3, "p95_ms": median_ms * 1.5, "p99_ms": median_ms * 2, "min_ms": median_ms * 0.9,
        "max_ms": median_ms * 3, "throughput_per_s": batch_size * 1000 / median_ms, "cold_start_ms": 12.5,
        "unstable": unstable,
    }


@pytest.fixture
def report() -> dict[str, Any]:
    train = {
        "name": "01-train",
        "kind": "train",
        "params": {"epochs": 3, "lr": 0.001},
        "notes": [],
        "artifact": {"path": "stages/01-train/model.safetensors", "format": "safetensors", "sha256": "ab" * 32,
                     "size_bytes": 102_400},
        "metrics": _metrics(0.97222, f1=0.9720, roc_auc=0.9981, reason=None),
        "fidelity": None,
        "latency": [_latency("torch", 1, 0.5), _latency("torch", 32, 4.0)],
        "footprint": {"params": 25_000, "nonzero_params": 25_000, "sparsity": 0.0, "size_bytes": 102_400,
                      "macs": 24_500, "macs_reason": None},
        "gates": [],
    }
    export = {
        "name": SCRIPT,
        "kind": "export",
        "params": {"opset": 17, "note": "x|y"},
        "notes": ["Dropout folded\ninto | nothing", "`rm -rf` <b>bold</b>"],
        "artifact": {"path": "stages/02-export/model.onnx", "format": "onnx", "sha256": "cd" * 32,
                     "size_bytes": 26_624},
        "metrics": _metrics(0.96944, f1=0.9700, roc_auc=None, reason="only one class present in y_true"),
        "fidelity": {"reference": "01-train", "top1_agreement": 0.99722, "max_abs_diff": 3.05e-06,
                     "mean_abs_diff": 4.1e-07, "mean_kl": 1.2e-9, "n_samples": 360},
        "latency": [_latency("onnxruntime", 1, 0.25, unstable=True), _latency("onnxruntime", 32, 8.0)],
        "footprint": {"params": 25_000, "nonzero_params": 12_500, "sparsity": 0.5, "size_bytes": 26_624,
                      "macs": None, "macs_reason": "no MAC counter for ONNX"},
        "gates": [
            {"name": "max_accuracy_drop", "threshold": 0.01, "value": 0.00278, "passed": True},
            {"name": "min_top1_agreement", "threshold": 0.999, "value": 0.99722, "passed": False},
        ],
    }
    return {
        "schema_version": 1,
        "run": {"name": SCRIPT, "created": "2024-05-01T12:00:00+00:00", "modelpress_version": "0.1.0",
                "torch": "2.3.0", "onnxruntime": "1.18.0", "onnx": "1.16.0", "numpy": "1.26.4", "python": "3.11.7",
                "platform": "Linux", "cpu": "Test CPU 9000", "cpu_flags": ["avx2", "avx512f"], "threads": 1},
        "data": {"source": "data|set.npz", "n_samples": 360, "n_classes": 2, "class_names": ["a|b", "plain"],
                 "sha256": "ef" * 32},
        "stages": [train, export],
    }


def _unescaped_pipes(line: str) -> int:
    count, i = 0, 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        count += line[i] == "|"
        i += 1
    return count


def _tables(markdown: str) -> list[list[str]]:
    tables: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _section(markdown: str, heading_start: str) -> str:
    start = markdown.index(heading_start)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end == -1 else markdown[start:end]


# ------------------------------------------------------------------------------------------------ md_escape


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ("a|b", "a\\|b"),
        ("`code`", "\\`code\\`"),
        (SCRIPT, "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("line\nbreak\r\nthere\rend", "line break there end"),
        ("back\\slash|", "back\\\\slash\\|"),
        ("a\\|b", "a\\\\\\|b"),
        ("&lt;", "&amp;lt;"),
        (3.5, "3.5"),
    ],
)
def test_md_escape(raw: object, escaped: str) -> None:
    assert md_escape(raw) == escaped


def test_md_escape_keeps_cells() -> None:
    for raw in ["a|b", "a\\|b", "\\", "x\\\\|y", "|||", "`|`"]:
        assert _unescaped_pipes(f"| {md_escape(raw)} |") == 2, raw


# ------------------------------------------------------------------------------------------------ render


def test_markdown_sections_and_numbers(report: dict[str, Any]) -> None:
    md = render_markdown(report)
    assert md.startswith("# modelpress report: &lt;script&gt;alert(1)&lt;/script&gt;\n")
    assert md.endswith("\n") and not md.endswith("\n\n")
    run = _section(md, "## Run")
    for text in ("torch: 2.3.0", "onnxruntime: 1.18.0", "cpu: Test CPU 9000", "cpu flags: avx2, avx512f",
                 "threads: 1", "python: 3.11.7"):
        assert text in run
    assert "**Data:** data\\|set.npz · 360 samples · 2 classes (a\\|b, plain) · sha256 efefefefefef" in md

    summary = _section(md, "## Summary")
    header, _, first, second = _tables(summary)[0]
    assert "p50 / p99 torch b=1" in header and "p50 / p99 onnxruntime b=32" in header
    assert "97.22%" in first and "97.20%" in first and "99.81%" in first
    assert "0.500 / 1.00 ms" in first and "4.00 / 8.00 ms" in first
    assert "100 KiB" in first and "25,000" in first and "0.0%" in first
    assert "pts" not in first and "×" not in first  # no deltas on the reference row
    assert "96.94% (-0.28 pts)" in second
    assert "97.00% (-0.20 pts)" in second
    assert "— |" in second  # roc_auc None in the summary
    # onnxruntime rows against the first stage's torch rows would be a ratio across backends: never shown
    assert "0.250 / 0.500 ms |" in second and "8.00 / 16.0 ms |" in second
    assert "faster" not in second and "slower" not in second
    assert "26.0 KiB (0.26× size)" in second
    assert "50.0%" in second and "99.72%" in second and "3.05e-06" in second
    assert "Changes are against the first stage (01-train)" in summary


def test_markdown_stage_sections(report: dict[str, Any]) -> None:
    md = render_markdown(report)
    train = _section(md, "## 1. 01-train (train)")
    assert "- params: epochs=3, lr=0.001" in train
    assert "- ROC-AUC: 99.81%" in train
    assert "- MACs: 24,500" in train
    assert "**Gates**" not in train

    export = _section(md, "## 2. &lt;script&gt;alert(1)&lt;/script&gt; (export)")
    assert "- ROC-AUC: — (only one class present in y_true)" in export
    assert "- MACs: — (no MAC counter for ONNX)" in export
    assert "- params: opset=17, note=x\\|y" in export
    assert "- Dropout folded into \\| nothing" in export
    assert "- \\`rm -rf\\` &lt;b&gt;bold&lt;/b&gt;" in export
    assert "**Fidelity** against 01-train (n = 360)" in export
    assert "- top-1 agreement: 99.72%" in export
    assert "- max / mean abs diff: 3.05e-06 / 4.10e-07" in export
    assert "- params: 25,000 (12,500 non-zero, sparsity 50.0%)" in export
    latency, per_class, gates = _tables(export)
    assert "| onnxruntime | 1 | 1 | 200 | 10 | 0.250 ms |" in latency[2]
    assert "**unstable**" in latency[2] and latency[3].endswith("| yes | — |")  # no speed-up recorded: —
    assert "| 0 | a\\|b | 95.00% | 90.00% | 92.50% | 180 |" in per_class
    assert gates[2] == "| max_accuracy_drop | 0.01 | 0.00278 | pass |"
    assert gates[3] == "| min_top1_agreement | 0.999 | 0.9972 | **FAIL** |"
    assert "**Gates: 1 of 2 FAILED** (&lt;script&gt;alert(1)&lt;/script&gt;: min_top1_agreement)." in md


def test_markdown_escapes_everything_and_tables_stay_intact(report: dict[str, Any]) -> None:
    md = render_markdown(report)
    assert "<" not in md and ">" not in md  # no raw HTML at all, from any field
    assert "`" not in md.replace("\\`", "")
    tables = _tables(md)
    assert len(tables) == 6  # summary; latency + per-class for each stage; gates of stage 2
    for table in tables:
        counts = {_unescaped_pipes(line) for line in table}
        assert len(counts) == 1, table
        assert re.fullmatch(r"\|(---\|)+", table[1])


def test_markdown_single_stage_has_no_deltas(report: dict[str, Any]) -> None:
    report["stages"] = report["stages"][:1]
    md = render_markdown(report)
    assert "pts" not in md and "faster" not in md and "slower" not in md and "Changes are against" not in md
    assert "Gates" not in md


def test_markdown_tolerates_missing_sections(report: dict[str, Any]) -> None:
    stage = report["stages"][1]
    stage.update(metrics=None, fidelity=None, footprint=None, artifact=None, latency=[], gates=[], notes=[])
    md = render_markdown(report)
    summary_row = _tables(_section(md, "## Summary"))[0][3]
    assert summary_row.count("—") >= 8
    assert "**Metrics**" not in _section(md, "## 2.")


def test_markdown_no_stages(report: dict[str, Any]) -> None:
    report["stages"] = []
    md = render_markdown(report)
    assert "No stages were run." in md and "## Summary" not in md


def test_markdown_number_formats(report: dict[str, Any]) -> None:
    stage = report["stages"][0]
    stage["latency"] = [_latency("torch", 1, 1234.5678), _latency("torch", 2, 0.0123456)]
    stage["footprint"]["size_bytes"] = 5 * 1024 * 1024 + 1
    report["stages"] = [stage]
    first = _tables(_section(render_markdown(report), "## Summary"))[0][2]
    assert "1235 / 2469 ms" in first
    assert "0.0123 / 0.0247 ms" in first
    assert "5.00 MiB" in first


# ------------------------------------------------------------------------------------------------ write_report


def _leftover_temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(mp_io.TMP_SUFFIX)]


def test_write_report_writes_all_files(tmp_path: Path, report: dict[str, Any]) -> None:
    y_true = np.array([0, 1, 1, 0])
    probs = np.random.default_rng(0).random((4, 2)).astype(np.float32)
    paths = write_report(report, tmp_path / "run", predictions={"y_true": y_true, "01-train": probs})
    assert paths == {
        "predictions": tmp_path / "run" / "predictions.npz",
        "md": tmp_path / "run" / "report.md",
        "json": tmp_path / "run" / "report.json",
    }
    assert load_report(tmp_path / "run") == json.loads(json.dumps(report))
    assert paths["md"].read_text(encoding="utf-8") == render_markdown(report)
    with np.load(paths["predictions"], allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["y_true"], y_true)
        np.testing.assert_array_equal(npz["01-train"], probs)
    assert _leftover_temps(tmp_path) == []


def test_write_report_json_is_written_last(tmp_path: Path, report: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(mp_io.os, "replace", recording_replace)
    write_report(report, tmp_path, predictions={"y_true": np.arange(3)})
    assert order == ["predictions.npz", "report.md", "report.json"]


def test_write_report_without_predictions(tmp_path: Path, report: dict[str, Any]) -> None:
    paths = write_report(report, tmp_path)
    assert set(paths) == {"md", "json"}
    assert not (tmp_path / "predictions.npz").exists()


def test_failed_json_replace_keeps_previous_report(tmp_path: Path, report: dict[str, Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(report, tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "report.json":
            raise OSError(errno.EIO, "simulated I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(mp_io.os, "replace", failing_replace)
    changed = copy.deepcopy(report)
    changed["stages"][0]["metrics"]["accuracy"] = 0.5
    with pytest.raises(OSError, match="simulated I/O error"):
        write_report(changed, tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before
    assert _leftover_temps(tmp_path) == []
    assert load_report(tmp_path)["stages"][0]["metrics"]["accuracy"] == report["stages"][0]["metrics"]["accuracy"]


def test_json_writer_failing_mid_write_keeps_previous_report(tmp_path: Path, report: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(report, tmp_path)
    before = (tmp_path / "report.json").read_bytes()
    real_atomic_write = mp_io.atomic_write

    class HalfWriter:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def write(self, text: str) -> int:
            self._handle.write(text[: len(text) // 2])
            raise KeyboardInterrupt  # a BaseException, like SIGINT mid-write

    from contextlib import contextmanager

    @contextmanager
    def half_atomic_write(path: Any, mode: str = "wb") -> Any:
        with real_atomic_write(path, mode) as handle:
            yield HalfWriter(handle) if Path(path).name == "report.json" else handle

    monkeypatch.setattr(mp_io, "atomic_write", half_atomic_write)
    with pytest.raises(KeyboardInterrupt):
        write_report(report, tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before
    assert _leftover_temps(tmp_path) == []


def test_disk_full_keeps_every_previous_file(tmp_path: Path, report: dict[str, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_report(report, tmp_path, predictions={"y_true": np.arange(4)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mp_io.os, "fsync", full_disk)
    with pytest.raises(ModelpressError, match="no space left writing .*predictions.npz"):
        write_report(report, tmp_path, predictions={"y_true": np.arange(8)})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _leftover_temps(tmp_path) == []


def test_write_report_validates_before_writing(tmp_path: Path, report: dict[str, Any]) -> None:
    del report["stages"][1]["latency"]
    with pytest.raises(InputError, match=r"stage 2 \('<script>alert\(1\)</script>'\) is missing key 'latency'"):
        write_report(report, tmp_path / "run", predictions={"y_true": np.arange(3)})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("predictions", "message"),
    [
        pytest.param({"y_true": np.array([{"a": 1}], dtype=object)}, "must be numeric", id="object-array"),
        pytest.param({"y_true": np.array(["a", "b"])}, "must be numeric", id="strings"),
        pytest.param({"": np.arange(3)}, "non-empty strings", id="empty-name"),
        pytest.param({"a/b": np.arange(3)}, "without '/'", id="slash"),
    ],
)
def test_write_report_refuses_bad_predictions(tmp_path: Path, report: dict[str, Any], predictions: dict[str, Any],
                                              message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_report(report, tmp_path / "run", predictions=predictions)
    assert not (tmp_path / "run").exists()
