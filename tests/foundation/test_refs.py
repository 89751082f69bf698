"""The one reference parser: every syntax, the ambiguity rules, round trips."""

from __future__ import annotations

import pytest

from modelpress.errors import InputError
from modelpress.refs import parse_data_ref, parse_model_ref


def nothing_exists(_: str) -> bool:
    return False


@pytest.mark.parametrize("text, kind, scheme, body, weights", [
    ("zoo:mlp", "scheme", "zoo", "mlp", None),
    ("zoo:cnn@w.safetensors", "scheme", "zoo", "cnn", "w.safetensors"),
    ("hf:models/minilm", "scheme", "hf", "models/minilm", None),
    ("hf:models/minilm@head.pt", "scheme", "hf", "models/minilm", "head.pt"),
    ("pkg.mod:make", "code", "", "pkg.mod:make", None),
    ("pkg.mod:make@ckpt.pth", "code", "", "pkg.mod:make", "ckpt.pth"),
    ("model.onnx", "path", "", "model.onnx", None),
    ("runs/run@2", "path", "", "runs/run@2", None),  # '@' without a checkpoint suffix stays in the path
    ("  zoo:mlp  ", "scheme", "zoo", "mlp", None),
])
def test_model_references(text, kind, scheme, body, weights):
    ref = parse_model_ref(text, exists=nothing_exists)
    assert (ref.kind, ref.scheme, ref.body, ref.weights) == (kind, scheme, body, weights)
    again = parse_model_ref(str(ref), exists=nothing_exists)
    assert (again.kind, again.scheme, again.body, again.weights) == (kind, scheme, body, weights)


@pytest.mark.parametrize("text, kind, scheme, body, split, options", [
    ("sklearn:digits", "scheme", "sklearn", "digits", None, ()),
    ("sklearn:digits#train", "scheme", "sklearn", "digits", "train", ()),
    ("test.npz", "path", "", "test.npz", None, ()),
    ("test.npz#all", "path", "", "test.npz", "all", ()),
    ("text:reviews.csv?max_length=64&tokenizer=hf:m", "scheme", "text", "reviews.csv", None,
     (("max_length", "64"), ("tokenizer", "hf:m"))),
    ("text:reviews.csv?max_length=64#test", "scheme", "text", "reviews.csv", "test", (("max_length", "64"),)),
    ("my.data:load", "code", "", "my.data:load", None, ()),
])
def test_data_references(text, kind, scheme, body, split, options):
    ref = parse_data_ref(text, exists=nothing_exists)
    assert (ref.kind, ref.scheme, ref.body, ref.split, ref.options) == (kind, scheme, body, split, options)
    again = parse_data_ref(str(ref), exists=nothing_exists)
    assert (again.kind, again.scheme, again.body, again.split, again.options) == (kind, scheme, body, split, options)


def test_an_existing_file_with_a_hash_in_its_name_wins(tmp_path):
    path = tmp_path / "dír" / "dätä #1.npz"
    path.parent.mkdir()
    path.write_bytes(b"x")
    ref = parse_data_ref(str(path))
    assert ref.kind == "path" and ref.body == str(path) and ref.split is None


def test_an_unknown_split_names_the_missing_file():
    with pytest.raises(InputError, match=r"unknown split '1.npz'.*does not exist either"):
        parse_data_ref("dir/data #1.npz", exists=nothing_exists)
    with pytest.raises(InputError, match=r"unknown split 'validation'.*use one of train, test, all"):
        parse_data_ref("sklearn:digits#validation", exists=nothing_exists)


def test_schemes_are_the_callers_names_not_any_prefix():
    assert parse_model_ref("zoo:mlp", schemes=("zoo",), exists=nothing_exists).kind == "scheme"
    assert parse_model_ref("zoo:mlp", schemes=(), exists=nothing_exists).kind == "code"
    assert parse_data_ref("C:/data/x.npz", exists=nothing_exists).kind == "path"


def test_relative_parts_resolve_against_a_folder(tmp_path):
    ref = parse_model_ref("pkg.mod:make@w/ckpt.pt", exists=nothing_exists).resolved_against(tmp_path)
    assert ref.body == "pkg.mod:make" and ref.weights == str(tmp_path / "w" / "ckpt.pt")
    data = parse_data_ref("text:t.csv?max_length=8#train", exists=nothing_exists).resolved_against(tmp_path)
    assert str(data) == f"text:{tmp_path / 't.csv'}?max_length=8#train"
    assert str(parse_data_ref("sklearn:iris", exists=nothing_exists).resolved_against(tmp_path)) == "sklearn:iris"


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_references_are_input_errors(text):
    with pytest.raises(InputError, match="empty model reference"):
        parse_model_ref(text)
    with pytest.raises(InputError, match="empty data reference"):
        parse_data_ref(text)
