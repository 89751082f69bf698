"""Peak memory per backend and batch size (child processes), weight bytes, and the training cost record."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from modelpress.data import Dataset

MiB = 1024 * 1024


def _onnx_mlp(path, widths, seed=0):
    """A plain MatMul/Add/Relu MLP written with onnx.helper: wide enough that its weights dominate memory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "input"
    for i, (a, b) in enumerate(pairwise(widths)):
        inits += [numpy_helper.from_array((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        last = i == len(widths) - 2
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], ["logits" if last else f"a{i}"])]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, widths[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, widths[-1]])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    """(fp32, int8) ONNX artifacts of a 64→2048→2048→10 MLP; INT8 by onnxruntime quantize_dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from modelpress.sources import load_model

    folder = tmp_path_factory.mktemp("wide")
    fp32 = _onnx_mlp(folder / "fp32.onnx", [64, 2048, 2048, 10])
    quantize_dynamic(str(fp32), str(folder / "int8.onnx"), weight_type=QuantType.QInt8)
    data = _data(64, 10)
    return load_model(str(fp32), data=data), load_model(str(folder / "int8.onnx"), data=data), data


def _data(features, classes, n=64):
    rng = np.random.default_rng(0)
    return Dataset({"input": rng.normal(size=(n, features)).astype(np.float32)},
                   np.arange(n) % classes, tuple(str(c) for c in range(classes)), "synthetic")


@pytest.mark.slow
def test_peak_memory_grows_with_batch_and_int8_needs_less(wide_pair):
    from modelpress.runtime.memory import measure_memory

    fp32, int8, data = wide_pair
    got = {}
    for name, artifact in (("fp32", fp32), ("int8", int8)):
        result = measure_memory(artifact, data, backends=["onnxruntime"], batch_sizes=[1, 1024], threads=1)
        got[name] = result
        small, large = result["rows"]
        assert (small["batch_size"], large["batch_size"]) == (1, 1024)
        # activations of 1024 rows × 2048 floats are 8 MiB per layer output; batch 1 needs a few hundred KiB
        assert large["peak_delta_bytes"] > small["peak_delta_bytes"] + 4 * MiB
        assert large["peak_rss_bytes"] > small["peak_rss_bytes"]
        assert all(row["hwm_reset"] for row in result["rows"])  # the peak covers inference, not loading
    # weights: 4.3 M parameters, 4 bytes each in FP32, 1 byte (+ scales) in INT8
    assert got["fp32"]["weight_bytes"] == 4 * (64 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10)
    assert got["int8"]["weight_bytes"] < 0.3 * got["fp32"]["weight_bytes"]
    fp_rows, q_rows = got["fp32"]["rows"], got["int8"]["rows"]
    for fp_row, q_row in zip(fp_rows, q_rows, strict=True):
        assert q_row["load_delta_bytes"] < fp_row["load_delta_bytes"] - 8 * MiB  # the loaded model is smaller
        assert q_row["peak_rss_bytes"] < fp_row["peak_rss_bytes"]  # and so is the absolute peak


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_weight_bytes_of_torch_models_count_packed_int8(trained_mlp):
    import copy

    import torch

    from modelpress.runtime.memory import weight_bytes

    artifact, _ = trained_mlp
    expected = sum(p.numel() * 4 for p in artifact.module.state_dict().values())
    assert weight_bytes(artifact) == expected
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(artifact.module), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    assert weight_bytes(artifact.evolve(module=quantized)) < 0.5 * expected


def test_memory_refuses_gpu_backends_and_bad_repeat(wide_pair):
    from modelpress.errors import InputError
    from modelpress.runtime.memory import measure_memory

    fp32, _, data = wide_pair
    with pytest.raises(InputError, match="not 'tensorrt'"):
        measure_memory(fp32, data, backends=["tensorrt"], batch_sizes=[1], threads=1)
    with pytest.raises(InputError, match="repeat must be ≥ 1, got 0"):
        measure_memory(fp32, data, backends=["onnxruntime"], batch_sizes=[1], threads=1, repeat=0)


def test_fit_records_wall_time_epochs_and_peak_rss(digits):
    from modelpress.compress.train import fit, stage_cost
    from modelpress.sources import load_model

    train, test = digits
    artifact = load_model("zoo:mlp", data=test, kwargs={"hidden": [16]})
    log = fit(artifact.module, train, epochs=2, lr=1e-2, batch_size=128, seed=0, val_fraction=0.2)
    assert log["wall_s"] > 0 and log["epochs_run"] == 2
    assert log["peak_rss_bytes"] > 10 * MiB and log["peak_rss_growth_bytes"] >= 0
    second = dict(log, wall_s=1.5, epochs_run=3, peak_rss_bytes=1)
    cost = stage_cost([log, second], calibration_wall_s=0.25)
    assert cost["train_wall_s"] == pytest.approx(log["wall_s"] + 1.5)
    assert cost["epochs"] == 5 and cost["calibration_wall_s"] == 0.25
    assert cost["peak_rss_bytes"] == log["peak_rss_bytes"]
    assert cost["curves"]["loss"] == log["loss_per_epoch"] * 2 and len(cost["curves"]["val_accuracy"]) == 4
    assert stage_cost()["train_wall_s"] is None and stage_cost()["epochs"] is None


def test_a_stage_never_inherits_the_cost_of_the_stage_before(trained_mlp, digits, tmp_path):
    from modelpress.compress.registry import COST_KEY, StageContext, run_stage
    from modelpress.compress.train import TrainConfig

    artifact, _ = trained_mlp
    train, _test = digits
    marked = artifact.evolve(metadata={**artifact.metadata, COST_KEY: {"train_wall_s": 1e9, "epochs": 999}})
    out = run_stage(marked, TrainConfig(epochs=1, batch_size=256), StageContext(work_dir=tmp_path, train=train))
    assert out.metadata[COST_KEY]["epochs"] == 1 and out.metadata[COST_KEY]["train_wall_s"] < 1e9
    assert marked.metadata[COST_KEY]["epochs"] == 999  # the input is not mutated


def test_evaluate_measures_memory_of_a_saved_torch_model(trained_mlp, digits):
    from modelpress.evaluate.evaluator import EvalConfig, evaluate
    from modelpress.sources import load_model

    _, folder = trained_mlp
    _, test = digits
    config = EvalConfig(measure_latency=False, memory=True, batch_sizes=(8,))
    result = evaluate(load_model(str(folder)), test, config=config)
    memory = result.extra["memory"]
    (row,) = memory["rows"]
    assert (row["backend"], row["batch_size"], row["threads"]) == ("torch", 8, 1)
    assert row["baseline_rss_bytes"] > row["import_rss_bytes"] > 50 * MiB  # torch is imported before the baseline
    assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] and memory["weight_bytes"] > 0
    assert "memory" in result.as_stage_fields()
