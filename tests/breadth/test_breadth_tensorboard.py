"""TensorBoard output: event files read back with TensorBoard's EventAccumulator; exit 3 without the package."""

from __future__ import annotations

import sys

import pytest


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _report():
    stage = {"name": "01-train", "kind": "train", "params": {"epochs": 3}, "artifact": None, "latency": [],
             "metrics": {"accuracy": 0.75, "f1_macro": 0.5, "roc_auc": None}, "fidelity": None,
             "footprint": {"size_bytes": 1000, "params": 10}, "gates": [],
             "cost": {"stage_wall_s": 2.0, "train_wall_s": 1.5, "epochs": 3,
                      "curves": {"loss": [1.0, 0.5, 0.25], "val_loss": [], "val_accuracy": []}},
             "knn": {"accuracy": 0.9}, "robustness": {"levels": [{"level": 0.0, "accuracy": 0.75},
                                                                   {"level": 0.5, "accuracy": 0.5}]},
             "memory": {"weight_bytes": 40, "rows": [{"backend": "torch", "batch_size": 32, "peak_rss_bytes": 5e7}]}}
    quantized = {**stage, "name": "02-quantize <x|y>", "kind": "quantize", "metrics": {"accuracy": 0.7},
                 "latency": [{"backend": "onnxruntime", "batch_size": 1, "median_ms": 0.25, "p99_ms": 0.5}],
                 "cost": {"stage_wall_s": 0.5, "calibration_wall_s": 0.125}}
    return {"schema_version": 1, "run": {"name": "demo run", "created": "now"},
            "data": {"source": "x", "n_samples": 4, "n_classes": 2}, "stages": [stage, quantized]}


def test_event_files_read_back_with_every_scalar_and_curve(tmp_path):
    from modelpress.evaluate.tensorboard import write_tensorboard

    folders = write_tensorboard(_report(), tmp_path / "tb")
    assert [f.relative_to(tmp_path / "tb").as_posix() for f in folders] == ["demo_run/01-train",
                                                                            "demo_run/02-quantize_x_y"]
    first, second = _scalars(folders[0]), _scalars(folders[1])
    assert first["metrics/accuracy"] == [(0, 0.75)] and "metrics/roc_auc" not in first  # null is not plotted
    assert first["train/loss"] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert first["cost/train_wall_s"] == [(0, 1.5)] and first["knn/accuracy"] == [(0, pytest.approx(0.9))]
    assert first["robustness/accuracy_at_0.5"] == [(0, 0.5)]
    assert first["memory/torch_b32/peak_rss_bytes"] == [(0, 5e7)] and first["memory/weight_bytes"] == [(0, 40)]
    assert second["metrics/accuracy"] == [(1, pytest.approx(0.7))]  # step = the stage's position
    assert second["latency/onnxruntime_b1/median_ms"] == [(1, 0.25)]
    assert second["cost/calibration_wall_s"] == [(1, 0.125)] and "train/loss" not in second
    write_tensorboard(_report(), tmp_path / "tb")  # a rerun replaces the events instead of doubling them
    assert len(list(folders[0].glob("events.out.tfevents.*"))) == 1
    assert _scalars(folders[0])["train/loss"] == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_evaluate_cli_writes_tensorboard(run_cli, trained_mlp, tmp_path):
    _, folder = trained_mlp
    result = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--name", "tb-run",
                     "--out", tmp_path / "reports", "--tensorboard", tmp_path / "tb", "--json")
    assert result.exit_code == 0, result.stderr
    import json

    stage = json.loads(result.stdout)
    scalars = _scalars(tmp_path / "tb" / "tb-run" / "evaluate")
    assert scalars["metrics/accuracy"] == [(0, pytest.approx(stage["metrics"]["accuracy"]))]
    assert scalars["size/params"] == [(0, stage["footprint"]["params"])]


def test_missing_tensorboard_exits_3_before_any_work(run_cli, trained_mlp, tmp_path, monkeypatch):
    _, folder = trained_mlp
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    result = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", "--out", tmp_path / "r",
                     "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 3
    assert "tensorboard package is not installed" in result.stderr and "pip install tensorboard" in result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "tb").exists()
