from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelpress.errors import InputError
from modelpress.onnx_utils import load_onnx
from modelpress.sources import load_model


def _model_with_external(folder, location: str):
    """A MatMul model whose weight lives in external data at ``location`` (written by hand)."""
    weight = numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "36")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_folder_loads(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.eye(3, dtype=np.float32).tobytes())
    model = load_onnx(_model_with_external(tmp_path, "w.bin"))
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (3, 3)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"],
                         ids=["dotdot", "absolute", "sub-dotdot"])
def test_external_data_outside_folder_is_refused(tmp_path, location):
    model_dir = tmp_path / "model"
    (model_dir / "sub").mkdir(parents=True)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 36)
    with pytest.raises(InputError, match="leaves the model's folder; refused"):
        load_onnx(_model_with_external(model_dir, location))


def test_external_data_symlink_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 36)
    os.symlink(tmp_path / "secret.bin", model_dir / "w.bin")
    with pytest.raises(InputError, match="symlink; refused"):
        load_onnx(_model_with_external(model_dir, "w.bin"))


def test_missing_external_file(tmp_path):
    with pytest.raises(InputError, match="external data file 'w.bin' is missing"):
        load_onnx(_model_with_external(tmp_path, "w.bin"))


def test_not_onnx_and_truncated(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \xff\xfe")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        load_model(str(bad))
    with pytest.raises(InputError, match="does not exist"):
        load_model(str(tmp_path / "none.onnx"))
