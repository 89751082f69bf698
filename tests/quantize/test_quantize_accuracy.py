"""Accuracy-aware quantization on a model with a deliberately sensitive layer, and FP16 overflow detection.

The sensitive model is a trained MLP rescaled without changing its function: the most active hidden unit of the
first layer is multiplied by ``scale`` and the matching input weights of the next layer divided by it (ReLU is
positively homogeneous). One activation channel is then ``scale``× larger than the rest, so an 8-bit per-tensor
activation range leaves the other channels almost nothing: quantizing the second layer's input ruins accuracy,
while every other layer quantizes fine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelpress.compress import StageContext, config_for, run_stage
from modelpress.compress.train import fit
from modelpress.errors import GateFailed
from modelpress.evaluate.evaluator import predict
from modelpress.sources import load_model


def _rescaled_mlp(digits, folder, scale: float):
    train, test = digits
    artifact = load_model("zoo:mlp", data=test, kwargs={"hidden": [32, 32]})
    fit(artifact.module, train, epochs=6, lr=1e-2, batch_size=64, seed=0)
    first, second = artifact.module[1], artifact.module[3]
    with torch.no_grad():
        hidden = torch.relu(first(torch.from_numpy(train.inputs["input"])))
        unit = int(hidden.mean(0).argmax())
        factor = torch.ones(first.out_features)
        factor[unit] = scale
        first.weight.mul_(factor[:, None])
        first.bias.mul_(factor)
        second.weight.div_(factor[None, :])
    return artifact.save(folder)


@pytest.fixture(scope="module")
def sensitive(digits, tmp_path_factory):
    return _rescaled_mlp(digits, tmp_path_factory.mktemp("sensitive"), 1000.0)


def _accuracy(artifact, data) -> float:
    return float((predict(artifact, data).argmax(1) == data.y).mean())


def _run(artifact, digits, tmp_path, **params):
    train, test = digits
    ctx = StageContext(work_dir=tmp_path / "stage", train=train, eval=test, calibration=train, original=artifact)
    return run_stage(artifact, config_for("quantize", params), ctx), ctx


def test_sensitive_layer_ruins_plain_int8(sensitive, digits, tmp_path):
    test = digits[1]
    with pytest.raises(GateFailed, match=r"quantized model refused: top-1 agreement with FP32 0\.\d+ < 0\.98"):
        _run(sensitive, digits, tmp_path / "guarded", mode="dynamic")  # the guard, on by default, refuses it
    result, ctx = _run(sensitive, digits, tmp_path, mode="dynamic", guard=False)
    assert _accuracy(sensitive, test) > 0.9
    assert _accuracy(result, test) < 0.5  # the premise of the next test: the damage is real
    assert any(n.startswith("guard off (--no-guard): top-1 agreement") for n in ctx.notes)


def test_accuracy_aware_keeps_the_sensitive_layer_and_meets_tolerance(sensitive, digits, tmp_path):
    test = digits[1]
    result, ctx = _run(sensitive, digits, tmp_path, mode="dynamic", accuracy_tolerance=0.01)
    q = result.metadata["quantization"]
    search = q["accuracy_search"]
    assert search["met"] and search["all_quantized_metric"] < 0.5
    assert len(q["excluded_nodes"]["accuracy"]) == 1  # exactly the one layer that reads the outlier channel
    step = search["steps"][0]
    assert step["node"] == q["excluded_nodes"]["accuracy"][0] and step["kl_gain"] > 0.5
    assert step["float_weight_bytes"] == 32 * 32 * 4
    assert q["quantized_op_counts"] == {"MatMul": 2}
    fp32, int8 = _accuracy(sensitive, test), _accuracy(result, test)
    assert (fp32 - int8) / fp32 <= 0.01
    assert any(n.startswith("kept FP32 for accuracy: " + step["node"]) for n in ctx.notes)
    assert any(n.startswith("accuracy-aware: accuracy") for n in ctx.notes)


def test_no_configuration_meets_tolerance_exits_1(sensitive, digits, run_cli):
    result = run_cli("quantize", str(sensitive.path), "--mode", "static", "--data", "sklearn:digits",
                     "--accuracy-tolerance", "0", "--max-excluded", "1", "--calibration-samples", "64",
                     "-o", "out")
    assert result.exit_code == 1
    assert "error: no quantization meets accuracy tolerance 0: best accuracy" in result.stderr
    assert "with 1 of 3 nodes kept in FP32" in result.stderr
    assert "Traceback" not in result.stderr


def test_fp16_overflow_is_detected_with_counts(digits, tmp_path, run_cli):
    overflow = _rescaled_mlp(digits, tmp_path / "overflow", 1e5)  # the hidden unit now exceeds 65504
    result = run_cli("quantize", str(overflow.path), "--mode", "fp16", "--data", "sklearn:digits", "-o", "out")
    assert result.exit_code == 1
    # the first Linear layer's output and the ReLU after it (the scaled unit); the hint lists their 3 nodes
    assert "error: FP16 overflow: 2 intermediate tensor(s) exceed 65504 on 64 samples (largest" in result.stderr
    assert "--exclude-nodes" in result.stderr  # the hint names the nodes to keep in FP32
    assert not (tmp_path / "out").exists()
    kept = run_cli("quantize", str(overflow.path), "--mode", "fp16", "--data", "sklearn:digits",
                   "--fp16-overflow", "keep-fp32", "-o", "out2")
    assert kept.exit_code == 0, kept.stderr
    assert "note: fp16: kept 3 node(s) in FP32 around 2 tensor(s) above 65504" in kept.stderr
    q = load_model("out2").metadata["quantization"]
    assert len(q["excluded_nodes"]["fp16_overflow"]) == 3 and q["fp16_overflow"][0]["max_abs"] > 65504
    assert np.isfinite(predict(load_model("out2"), digits[1])).all()
