"""End-to-end TensorRT checks on a real GPU: build, verify, evaluate, reload. Skipped without CUDA + TensorRT."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import numpy as np
import pytest


def _gpu_ready() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from modelpress.runtime.tensorrt import tensorrt_missing

    return tensorrt_missing() is None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _gpu_ready(), reason="needs CUDA + TensorRT")]

DIGITS = ["--data", "sklearn:digits"]


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def fp32_engine(trained_cnn, tmp_path_factory):
    from modelpress.cli import main

    _, folder = trained_cnn
    out = tmp_path_factory.mktemp("trt") / "fp32"
    assert main(["export", str(folder), *DIGITS, "--format", "tensorrt", "-o", str(out)]) == 0
    return out


def test_fp32_engine_metadata_and_verification(fp32_engine):
    import tensorrt as trt

    from modelpress.io import sha256_file

    meta = _manifest(fp32_engine)
    assert meta["format"] == "tensorrt"
    info = meta["metadata"]["tensorrt"]
    assert info["version"] == trt.__version__ and info["precision"] == "fp32" and info["gpu"]
    assert len(info["compute_capability"].split(".")) == 2
    assert info["profiles"]["input"] == {"min": [1, 64], "opt": [32, 64], "max": [256, 64]}
    assert info["engine_sha256"] == sha256_file(fp32_engine / "model.engine")
    v = meta["metadata"]["verification"]
    assert v["passed"] and v["max_abs_diff"] < 1e-3 and v["top1_agreement"] == 1.0
    assert meta["metadata"]["onnx_verification"]["passed"]
    assert (fp32_engine / "model.onnx").exists()


def test_evaluate_engine_gives_compute_and_copy_rows(run_cli, fp32_engine, trained_cnn, tmp_path):
    _, folder = trained_cnn
    r = run_cli("evaluate", fp32_engine, *DIGITS, "--reference", folder, "--batch-size", "1", "--batch-size", "32",
                "--json", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    stage = json.loads(r.stdout)
    rows = [(row["backend"], row["batch_size"]) for row in stage["latency"]]
    assert rows == [("tensorrt", 1), ("tensorrt+copy", 1), ("tensorrt", 32), ("tensorrt+copy", 32)]
    for compute, copy in zip(stage["latency"][::2], stage["latency"][1::2]):
        assert compute["clock"] == "cuda_events" and copy["includes_copies"] is True
        assert 0 < compute["median_ms"] <= copy["median_ms"]
    assert stage["fidelity"]["top1_agreement"] == 1.0


def test_fp16_engine_is_within_the_fp16_tolerance(run_cli, trained_cnn, tmp_path):
    _, folder = trained_cnn
    out = tmp_path / "fp16"
    r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--precision", "fp16", "-o", out)
    assert r.exit_code == 0, r.stderr
    v = _manifest(out)["metadata"]["verification"]
    assert v["passed"] and v["max_abs_diff"] < 0.1 and v["precision"] == "fp16"


def test_int8_engine_from_qdq_strongly_typed(run_cli, trained_cnn, tmp_path):
    _, folder = trained_cnn
    out = tmp_path / "int8"
    r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--precision", "int8", "-o", out)
    assert r.exit_code == 0, r.stderr
    meta = _manifest(out)["metadata"]
    info = meta["tensorrt"]
    assert info["int8_mode"] == "qdq" and info["strongly_typed"] is True and info["builder_flags"] == []
    assert info["qdq"]["source"] == "modelpress" and (out / "model.qdq.onnx").exists()
    assert meta["verification"]["top1_agreement"] >= 0.99 and meta["verification"]["n_samples"] >= 450
    assert 0 < meta["verification"]["max_abs_diff"] <= meta["verification"]["atol"]


def test_int8_engine_with_the_deprecated_calibrator(run_cli, trained_cnn, tmp_path):
    import tensorrt as trt

    _, folder = trained_cnn
    out = tmp_path / "int8"
    r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--precision", "int8", "--trt-int8", "calibrator",
                "-o", out)
    if int(trt.__version__.split(".")[0]) >= 11:
        assert r.exit_code == 2 and "removed the INT8 calibrator" in r.stderr
        return
    assert r.exit_code == 0, r.stderr
    meta = _manifest(out)["metadata"]
    assert meta["tensorrt"]["int8_mode"] == "calibrated" and meta["tensorrt"]["calibration"]["batches"] >= 1
    assert meta["verification"]["top1_agreement"] >= 0.99 and meta["verification"]["n_samples"] >= 450
    assert (out / "calibration.cache").stat().st_size > 0


def test_zero_tolerance_is_a_failed_gate_and_writes_nothing(run_cli, trained_cnn, tmp_path):
    """int8 outputs always differ from the float model's, so a zero tolerance must fail: no skip when it passes."""
    _, folder = trained_cnn
    out = tmp_path / "strict"
    r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--precision", "int8", "--trt-atol", "0",
                "--trt-rtol", "0", "-o", out)
    assert r.exit_code == 1, r.stderr
    assert r.stderr.startswith("error: TensorRT int8 outputs differ from onnxruntime on 450 samples: max abs diff")
    assert not out.exists()


def test_timing_cache_is_written_then_reused(run_cli, trained_cnn, tmp_path):
    _, folder = trained_cnn
    cache = tmp_path / "trt.cache"
    for i, reused in ((1, False), (2, True)):
        out = tmp_path / f"e{i}"
        r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--timing-cache", cache, "--no-verify",
                    "-o", out)
        assert r.exit_code == 0, r.stderr
        assert _manifest(out)["metadata"]["tensorrt"]["timing_cache"]["reused"] is reused
        assert cache.stat().st_size > 0
    cache.write_bytes(b"garbage")
    out = tmp_path / "e3"
    r = run_cli("export", folder, *DIGITS, "--format", "tensorrt", "--timing-cache", cache, "--no-verify", "-o", out)
    assert r.exit_code == 0, r.stderr  # an unusable cache costs build time, never the build
    info = _manifest(out)["metadata"]["tensorrt"]["timing_cache"]
    assert info["bytes_in"] == 7 and info["reused"] is False
    assert f"note: timing cache {cache} was not usable" in r.stderr


def test_truncated_engine_is_refused(run_cli, fp32_engine, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(fp32_engine, broken)
    engine = broken / "model.engine"
    engine.write_bytes(engine.read_bytes()[:1000])
    r = run_cli("evaluate", broken, *DIGITS, "--no-latency")
    assert r.exit_code == 2
    assert re.search(r"model\.engine (is truncated or corrupt \(sha256 differs from its manifest\)|does not match "
                     r"the sha256 recorded)", r.stderr), r.stderr


def test_sequence_profile_on_a_text_like_onnx_model(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    from modelpress.artifacts import InputSpec, ModelArtifact
    from modelpress.compress.export import ExportConfig
    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.data import Dataset
    from modelpress.errors import InputError
    from modelpress.runtime.tensorrt import open_session

    weight = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"), numpy_helper.from_array(weight, "w")])
    path = tmp_path / "seq.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    rng = np.random.default_rng(0)
    data = Dataset({"x": rng.normal(size=(40, 8, 4)).astype(np.float32)}, rng.integers(0, 3, 40),
                   ("a", "b", "c"), "synthetic")
    artifact = ModelArtifact("onnx", (InputSpec("x", (None, None, 4)),), 3, str(path), path=path)
    config = ExportConfig(format="tensorrt", min_seq_len=2, opt_seq_len=8, max_seq_len=16, max_batch=16,
                          opt_batch=8)
    engine = run_stage(artifact, config, StageContext(work_dir=tmp_path / "stage", eval=data))
    assert engine.metadata["tensorrt"]["profiles"]["x"] == {"min": [1, 2, 4], "opt": [8, 8, 4], "max": [16, 16, 4]}
    session = open_session(engine)
    x = rng.normal(size=(20, 12, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run({"x": x}), x.mean(1) @ weight, atol=1e-3)
    with pytest.raises(InputError, match=r"dim 1 = 20 is outside the engine's profile \[2, 16\]"):
        session.run({"x": np.zeros((2, 20, 4), np.float32)})
    session.close()
