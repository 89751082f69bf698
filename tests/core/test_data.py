from __future__ import annotations

import numpy as np
import pytest

from modelpress.data import Dataset, load_data
from modelpress.errors import InputError


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "iris"])
def test_sklearn_split_is_seeded_disjoint_and_complete(name):
    train = load_data(f"sklearn:{name}", split="train")
    test = load_data(f"sklearn:{name}", split="test")
    whole = load_data(f"sklearn:{name}#all")
    assert len(train) + len(test) == len(whole)
    assert 0.2 < len(test) / len(whole) < 0.3
    again = load_data(f"sklearn:{name}", split="test")
    assert again.sha256() == test.sha256()
    assert set(np.unique(test.y)) == set(np.unique(whole.y))  # stratified: every class in both splits
    rows = {r.tobytes() for r in whole.inputs["input"]}
    assert all(r.tobytes() in rows for r in test.inputs["input"])


def test_reference_split_overrides_argument():
    assert load_data("sklearn:iris#train", split="test").split == "train"


def test_npz_and_csv_roundtrip(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(8, 3)
    y = np.array([0, 1] * 4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(str(tmp_path / "d.npz"), split="all")
    np.testing.assert_array_equal(d.inputs["input"], x)
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,target\n" + "\n".join(f"{i},{i * 2},{'cat' if i % 2 else 'dog'}" for i in range(6)) + "\n")
    d = load_data(str(csv), split="all", label_column="target")
    assert d.class_names == ("cat", "dog")
    assert d.inputs["input"].shape == (6, 2)
    assert list(d.y) == [1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_text("a,label\n1,0\nx,1\n"), r"d.csv:3: non-numeric feature value 'x'"),
        (lambda p: p.write_text("a,b\n1,0\n"), r"has no label column 'label'"),
        (lambda p: p.write_text(""), r"is empty"),
        (lambda p: p.write_text("a,label\n"), r"empty: 0 samples"),
    ],
    ids=["string-in-numeric", "no-label-column", "empty-file", "zero-rows"],
)
def test_bad_csv(tmp_path, make, match):
    path = tmp_path / "d.csv"
    make(path)
    with pytest.raises(InputError, match=match):
        load_data(str(path), split="all")


def test_nan_features_name_count_and_first_row():
    x = np.zeros((5, 2), dtype=np.float32)
    x[3, 1] = np.nan
    x[4, 0] = np.inf
    with pytest.raises(InputError, match=r"2 of 5 samples have NaN/inf features \(first at row 3\)"):
        Dataset({"input": x}, np.zeros(5, dtype=np.int64), ("a",), "mem")


@pytest.mark.parametrize(
    "ref, match",
    [
        ("nope.npz", "does not exist"),
        ("sklearn:mnist", "unknown sklearn dataset 'mnist'"),
        ("ftp://x", "cannot read data"),
        ("sklearn:iris#val", "unknown split 'val'"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
    ],
)
def test_bad_references(ref, match):
    with pytest.raises(InputError, match=match):
        load_data(ref)


def test_corrupt_npz_and_pickled_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_data(str(bad), split="all")
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(InputError, match="pickle"):
        load_data(str(obj), split="all")


def test_batches_cover_everything_in_order(digits):
    _, test = digits
    seen = np.concatenate([y for _, y in test.batches(64)])
    np.testing.assert_array_equal(seen, test.y)
    with pytest.raises(InputError, match="batch size must be ≥ 1"):
        next(test.batches(0))
