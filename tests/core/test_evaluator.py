from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelpress.errors import InputError
from modelpress.evaluate.evaluator import EvalConfig, evaluate, predict
from modelpress.runtime.latency import LatencyConfig
from modelpress.sources import load_model

FAST = LatencyConfig(warmup_min_calls=2, warmup_min_s=0.0, min_calls=5, min_s=0.0)


def test_metrics_equal_sklearn_on_the_same_predictions(trained_mlp, digits):
    artifact, _ = trained_mlp
    _, test = digits
    result = evaluate(artifact, test, config=EvalConfig(batch_sizes=(1, 8), latency=FAST))
    y_pred = result.probabilities.argmax(1)
    m = result.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(test.y, y_pred))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(test.y, y_pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(test.y, result.probabilities, multi_class="ovr"))
    assert m["accuracy"] > 0.85  # the fixture trained for real
    assert [(r["backend"], r["batch_size"]) for r in result.latency] == [("torch", 1), ("torch", 8)]
    assert all(r["n"] >= 5 and r["median_ms"] > 0 and r["cold_start_ms"] > 0 for r in result.latency)
    assert set(result.latency_samples) == {"torch::b1", "torch::b8"}
    fp = result.footprint
    assert fp["params"] == sum(p.numel() for p in artifact.module.parameters())
    assert fp["macs"] == 64 * 32 + 32 * 10
    assert fp["size_bytes"] == (artifact.path / "model.safetensors").stat().st_size


def test_fidelity_against_itself_is_perfect(trained_mlp, digits):
    artifact, _ = trained_mlp
    _, test = digits
    ref = predict(artifact, test)
    result = evaluate(artifact, test, config=EvalConfig(measure_latency=False), reference_logits=ref,
                      reference_name="self")
    assert result.fidelity["top1_agreement"] == 1.0
    assert result.fidelity["max_abs_diff"] == 0.0
    assert result.fidelity["reference"] == "self"


def test_wrong_feature_shape_says_expected_vs_got(trained_mlp):
    from modelpress.data import load_data

    artifact, _ = trained_mlp
    cancer = load_data("sklearn:breast_cancer")
    with pytest.raises(InputError, match=r"expects input 'input' of shape \(N, 64\) float32, got shape \(1, 30\)"):
        predict(artifact, cancer)


def test_labels_beyond_the_model_outputs_are_refused_but_unused_class_names_are_not(digits, tmp_path):
    from modelpress.data import Dataset

    _, test = digits
    artifact = load_model("zoo:mlp", data=test)
    y = test.y.copy()
    y[[3, 7]] = 11
    beyond = Dataset(test.inputs, y, tuple(str(i) for i in range(12)), "mem")
    with pytest.raises(InputError, match=r"data mem has 2 of 450 labels ≥ 10 \(up to 11\) but model zoo:mlp "
                                         r"outputs 10 classes"):
        predict(artifact, beyond)
    twelve_names = Dataset(test.inputs, test.y, tuple(str(i) for i in range(12)), "mem")  # labels all < 10
    assert predict(artifact, twelve_names).shape == (450, 10)


def test_onnx_artifact_evaluates_on_onnxruntime_and_skips_torch_latency(trained_mlp, digits, tmp_path):
    from modelpress.compress.export import ExportConfig, export_onnx

    artifact, _ = trained_mlp
    _, test = digits
    onnx_artifact = export_onnx(artifact, tmp_path / "m.onnx", config=ExportConfig())
    result = evaluate(onnx_artifact, test, config=EvalConfig(backends=("onnxruntime", "torch"), batch_sizes=(4,),
                                                             latency=FAST))
    assert [r["backend"] for r in result.latency] == ["onnxruntime"]
    assert any("latency on torch skipped" in n for n in result.notes)
    torch_result = evaluate(artifact, test, config=EvalConfig(measure_latency=False))
    assert result.metrics["accuracy"] == pytest.approx(torch_result.metrics["accuracy"])
    assert result.footprint["macs"] == 64 * 32 + 32 * 10
    np.testing.assert_allclose(result.logits, torch_result.logits, atol=1e-4)


def test_eval_config_validation():
    with pytest.raises(InputError, match="unknown backend 'tpu'"):
        EvalConfig(backends=("tpu",))
    with pytest.raises(InputError, match="batch_sizes must be integers ≥ 1"):
        EvalConfig(batch_sizes=(0,))
