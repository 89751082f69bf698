"""Fuzz the file loaders: arbitrary bytes must give InputError (exit 2), never another exception or a hang."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress.data import load_data
from modelpress.errors import InputError
from modelpress.sources import load_model, read_state_dict

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((4, 3), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    return buf.getvalue()


def _mutations(seed_bytes: bytes):
    """Random bytes, and valid files with bytes flipped or cut short: the interesting corruptions."""
    flipped = st.tuples(st.integers(0, len(seed_bytes) - 1), st.integers(0, 255)).map(
        lambda t: seed_bytes[: t[0]] + bytes([t[1]]) + seed_bytes[t[0] + 1 :])
    cut = st.integers(0, len(seed_bytes) - 1).map(lambda n: seed_bytes[:n])
    return st.one_of(st.binary(max_size=512), flipped, cut)


def _load_or_refuse(path, blob: bytes, load):
    """Write ``blob`` to ``path`` and load it: the result, or None when refused with InputError (any other
    exception fails the test — that is the property being fuzzed)."""
    path.write_bytes(blob)
    try:
        return load(path)
    except InputError:
        return None


@FUZZ
@given(blob=_mutations(_valid_npz()))
def test_npz_loader(tmp_path, blob):
    data = _load_or_refuse(tmp_path / "f.npz", blob, lambda p: load_data(str(p), split="all"))
    assert data is None or len(data) > 0


@FUZZ
@given(text=st.text(alphabet="0123456789.,-eE abnlx\n\"", max_size=200))
def test_csv_loader(tmp_path, text):
    data = _load_or_refuse(tmp_path / "f.csv", ("a,b,label\n" + text).encode(),
                           lambda p: load_data(str(p), split="all"))
    assert data is None or data.inputs["input"].shape[1] == 2


def _valid_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.ones(3, 3)})


@FUZZ
@given(blob=_mutations(_valid_safetensors()))
def test_safetensors_loader(tmp_path, blob):
    state = _load_or_refuse(tmp_path / "w.safetensors", blob, read_state_dict)
    assert state is None or all(hasattr(v, "shape") for v in state.values())


def _valid_pt() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(2, 2)}, buf)
    return buf.getvalue()


@FUZZ
@given(blob=_mutations(_valid_pt()))
def test_torch_checkpoint_loader(tmp_path, blob):
    _load_or_refuse(tmp_path / "w.pt", blob, read_state_dict)


def _valid_onnx() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@FUZZ
@given(blob=_mutations(_valid_onnx()))
def test_onnx_loader(tmp_path, blob):
    artifact = _load_or_refuse(tmp_path / "m.onnx", blob, lambda p: load_model(str(p)))
    assert artifact is None or artifact.format == "onnx"


@pytest.mark.parametrize("name, seed, load", [
    ("f.npz", _valid_npz, lambda p: load_data(str(p), split="all")),
    ("w.safetensors", _valid_safetensors, read_state_dict),
    ("w.pt", _valid_pt, read_state_dict),
    ("m.onnx", _valid_onnx, lambda p: load_model(str(p))),
], ids=["npz", "safetensors", "pt", "onnx"])
def test_unmutated_seeds_load(tmp_path, name, seed, load):
    """The fuzz tests above pass when a file is refused; this pins that the valid seeds they mutate do load (a
    loader that refused everything would otherwise pass them all)."""
    assert _load_or_refuse(tmp_path / name, seed(), load) is not None


def test_zip_bomb_like_npz_member_is_not_pickle(tmp_path):
    """An npz whose member claims to be an object array is refused without unpickling."""
    path = tmp_path / "obj.npz"
    with zipfile.ZipFile(path, "w") as zf:
        buf = io.BytesIO()
        np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
        zf.writestr("x.npy", buf.getvalue())
        buf = io.BytesIO()
        np.save(buf, np.array([0]))
        zf.writestr("y.npy", buf.getvalue())
    with pytest.raises(InputError, match="pickle"):
        load_data(str(path), split="all")
