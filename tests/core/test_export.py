from __future__ import annotations

import numpy as np
import pytest

from modelpress.compress.export import ExportConfig, export_onnx, verify_onnx
from modelpress.errors import InputError
from modelpress.runtime.sessions import make_runner
from modelpress.sources import load_model
from modelpress.zoo import ZOO

#: Every small model exports on digits; of the ImageNet CNNs one (the TF-SAME-padded EfficientNet-Lite, the most
#: unusual graph) exports on a tiny image: all of them at full size added ~100 s to the suite on 2 cores.
SMALL = sorted(n for n, factory in ZOO.items() if factory.__module__ == "modelpress.zoo.small")


@pytest.mark.parametrize("name", SMALL)
def test_every_zoo_model_exports_with_equal_outputs(name, digits, tmp_path):
    _, test = digits
    artifact = load_model(f"zoo:{name}", data=test)
    onnx_artifact = export_onnx(artifact, tmp_path / "m.onnx", config=ExportConfig())
    report = verify_onnx(artifact, onnx_artifact, test, config=ExportConfig())
    assert report["passed"], report
    assert report["max_abs_diff"] < 1e-4
    assert report["top1_agreement"] == 1.0
    # dynamic batch: an odd batch size runs and matches
    ort = make_runner(onnx_artifact, "onnxruntime")
    torch_run = make_runner(artifact, "torch")
    batch = {"input": test.inputs["input"][:13]}
    np.testing.assert_allclose(ort(batch), torch_run(batch), atol=1e-4)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_big_zoo_model_exports_on_a_tiny_image(tmp_path):
    from modelpress.data import Dataset

    rng = np.random.default_rng(0)
    tiny = Dataset({"input": rng.standard_normal((6, 3, 32, 32)).astype(np.float32)}, np.array([0, 1, 2, 0, 1, 2]),
                   ("a", "b", "c"), "tiny")
    artifact = load_model("zoo:efficientnet_lite0", data=tiny)
    onnx_artifact = export_onnx(artifact, tmp_path / "m.onnx", config=ExportConfig())
    report = verify_onnx(artifact, onnx_artifact, tiny, config=ExportConfig())
    assert report["passed"], report
    assert report["max_abs_diff"] < 1e-4


def test_torchscript_exporter_also_verifies(trained_cnn, digits, tmp_path):
    artifact, _ = trained_cnn
    _, test = digits
    config = ExportConfig(exporter="torchscript", opset=17)
    onnx_artifact = export_onnx(artifact, tmp_path / "m.onnx", config=config)
    assert verify_onnx(artifact, onnx_artifact, test, config=config)["passed"]


def test_verification_catches_a_different_model(trained_cnn, digits, tmp_path):
    artifact, _ = trained_cnn
    _, test = digits
    other = load_model("zoo:cnn", data=test, kwargs={"channels": [8, 16], "hidden": 32}, seed=1)
    wrong = export_onnx(other, tmp_path / "wrong.onnx", config=ExportConfig())
    report = verify_onnx(artifact, wrong, test, config=ExportConfig())
    assert not report["passed"]
    assert report["max_abs_diff"] > 1e-2


@pytest.mark.parametrize("params, match", [
    ({"format": "tflite"}, "export.format must be onnx or tensorrt"),
    ({"opset": 7}, r"export.opset must be in \[13, 23\], got 7"),
    ({"exporter": "magic"}, "export.exporter must be one of"),
    ({"atol": -1}, "must be ≥ 0"),
])
def test_export_config_validation(params, match):
    with pytest.raises(InputError, match=match):
        ExportConfig(**params)
