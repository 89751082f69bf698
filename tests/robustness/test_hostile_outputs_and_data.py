"""Issue 14, defects 1–10: each hostile or odd input gets the contract's exit code and a message that says what is
wrong (never "unexpected …"), outputs are never replaced or nested inside inputs silently, and inputs that are
accepted but coerced leave a note in stderr and in the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

IRIS = ("--data", "sklearn:iris")


def _one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and text in lines[0], result.stderr
    assert "unexpected" not in result.stderr


@pytest.fixture(scope="module")
def iris_artifact(tmp_path_factory):
    from modelpress.data import load_data
    from modelpress.sources import load_model

    folder = tmp_path_factory.mktemp("iris") / "art"
    load_model("zoo:mlp", data=load_data("sklearn:iris", split="test"), kwargs={"hidden": [8]}).save(folder)
    return folder


def _edited(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_1_static_batch_export_works_at_batch_1(run_cli, tmp_path):
    import onnx

    r = run_cli("export", "zoo:mlp", "--static-batch", "--data", "sklearn:breast_cancer", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert "verified:" in r.stdout
    dim = onnx.load(str(tmp_path / "o" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1


def test_2_deep_yaml_is_refused_with_file_and_line(run_cli, tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text("name: p\nmodel: zoo:mlp\ndata: {eval: sklearn:iris}\nstages: []\nx-a: " + "[" * 500 + "]" * 500)
    assert spec.stat().st_size < 1100
    r = run_cli("run", spec, "--dry-run")
    _one_line(r, 2, f"{spec}:5: the YAML nests deeper than 64 levels")


def test_3_out_under_a_regular_file(run_cli, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("keep")
    r = run_cli("evaluate", "zoo:mlp", *IRIS, "--no-latency", "--out", blocker)
    _one_line(r, 2, f"is under {blocker}, which exists and is not a folder")
    (tmp_path / "p.yaml").write_text("name: p\nmodel: zoo:mlp\ndata: {eval: sklearn:iris}\nstages: []\n")
    r = run_cli("run", tmp_path / "p.yaml", "--out", blocker)
    _one_line(r, 2, f"is under {blocker}, which exists and is not a folder")
    assert blocker.read_text() == "keep"


@pytest.mark.parametrize("changes, message", [
    ({"inputs": [{"name": "input", "shape": [None, "x"], "dtype": "float32"}]},
     "inputs[0].shape[1] must be an integer ≥ 1 or null, got 'x'"),
    ({"inputs": [{"name": "input", "shape": [None, 4], "dtype": "nonsense"}]}, "inputs[0].dtype 'nonsense'"),
    ({"n_classes": 5}, "class_names has 3 entries but n_classes is 5"),
    ({"n_classes": 5, "class_names": None}, "n_classes is 5 but the builder makes 3 outputs"),
    ({"n_classes": "3"}, "n_classes must be an integer ≥ 1, got '3'"),
    ({"class_names": ["a"]}, "class_names has 1 entries but n_classes is 3"),
    ({"transforms": "x"}, "transforms must be a list of objects"),
])
def test_4_bad_manifest_fields_name_the_manifest(run_cli, iris_artifact, tmp_path, changes, message):
    art = _edited(iris_artifact, tmp_path / "art", **changes)
    r = run_cli("evaluate", art, *IRIS, "--no-latency", "--out", tmp_path / "r")
    _one_line(r, 2, message)
    assert "manifest.json" in r.stderr and "the data has" not in r.stderr


@pytest.mark.parametrize("sub", ["sub", "a/b"])
def test_5_output_inside_the_input_is_refused(run_cli, iris_artifact, tmp_path, sub):
    art = tmp_path / "art"
    shutil.copytree(iris_artifact, art)
    before = sorted(p.name for p in art.rglob("*"))
    r = run_cli("prune", art, "--method", "magnitude", "--amount", "0.5", *IRIS, "-o", art / sub)
    _one_line(r, 2, f"is inside the input {art}")
    assert sorted(p.name for p in art.rglob("*")) == before
    r = run_cli("evaluate", art, *IRIS, "--no-latency", "--out", art)
    _one_line(r, 2, f"is inside the input {art}")
    (tmp_path / "p.yaml").write_text(f"name: p\nmodel: {art}\ndata: {{eval: sklearn:iris}}\nstages: []\n")
    for extra in ([], ["--dry-run"]):
        r = run_cli("run", tmp_path / "p.yaml", "--out", art, *extra)
        _one_line(r, 2, f"is inside the input {art}")
    assert sorted(p.name for p in art.rglob("*")) == before


def test_6_onnx_input_with_type_but_no_shape(run_cli, tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)  # a type, no shape: any rank
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    r = run_cli("evaluate", tmp_path / "m.onnx", *IRIS, "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    from modelpress.errors import InputError
    from modelpress.sources import load_model

    with pytest.raises(InputError, match="input 'x' declares no shape, so modelpress cannot size it; pass --data"):
        load_model(str(tmp_path / "m.onnx"))


def test_7_files_named_npz_that_are_not(run_cli, tmp_path):
    text = tmp_path / "t.npz"
    text.write_text("x,y\n1,2\n")
    r = run_cli("evaluate", "zoo:mlp", "--data", text, "--no-latency")
    _one_line(r, 2, f"{text} is not an .npz file (8 bytes, starts with b'x,y\\n')")
    sparse = tmp_path / "sparse.npz"
    with open(sparse, "wb") as handle:
        handle.truncate(2 << 30)  # 2 GiB of holes: must be refused from its first bytes, not read
    r = run_cli("evaluate", "zoo:mlp", "--data", sparse, "--no-latency")
    _one_line(r, 2, "is not an .npz file (2,147,483,648 bytes")
    npy = tmp_path / "a.npz"
    with open(npy, "wb") as handle:
        np.save(handle, np.ones(3))
    r = run_cli("evaluate", "zoo:mlp", "--data", npy, "--no-latency")
    _one_line(r, 2, "a single .npy array")


def test_8_evaluate_does_not_replace_a_report_without_force(run_cli, tmp_path):
    args = ("evaluate", "zoo:mlp", *IRIS, "--no-latency", "--out", tmp_path / "r", "--name", "same")
    assert run_cli(*args).exit_code == 0
    report = tmp_path / "r" / "same" / "report.json"
    before = report.read_bytes()
    r = run_cli(*args)
    _one_line(r, 2, f"{tmp_path / 'r' / 'same'} already holds a report; pass --force to replace it")
    assert report.read_bytes() == before
    assert run_cli(*args, "--force").exit_code == 0


def test_8_explain_follows_the_same_rule(run_cli, tmp_path):
    folder = tmp_path / "r" / "same"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    r = run_cli("explain", "zoo:mlp", "--reference", "zoo:mlp", *IRIS, "--out", tmp_path / "r", "--name", "same")
    _one_line(r, 2, f"{folder} already holds a report; pass --force to replace it")
    assert (folder / "report.json").read_text() == "{}"


def test_9_hash_in_an_existing_file_name(run_cli, tmp_path):
    folder = tmp_path / "dír"
    folder.mkdir()
    data = folder / "dätä #1.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(40, 4)).astype(np.float32), y=np.arange(40) % 2)
    r = run_cli("evaluate", "zoo:mlp", "--data", data, "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    r = run_cli("evaluate", "zoo:mlp", "--data", f"{data}#train", "--no-latency", "--out", tmp_path / "r2")
    assert r.exit_code == 0, r.stderr
    r = run_cli("evaluate", "zoo:mlp", "--data", folder / "dätä #2.npz", "--no-latency")
    _one_line(r, 2, "unknown split '2.npz'")
    assert "no file" in r.stderr and "check the file name" in r.stderr


def test_10_coerced_inputs_leave_notes_in_the_report(run_cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    from modelpress.data import load_data
    from modelpress.sources import load_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(40, 4)).astype(np.float32), y=np.array([0.5, 1.5] * 20))
    module = load_model("zoo:mlp", data=load_data("sklearn:iris")).module
    save_file({k: v.to(torch.float16) for k, v in module.state_dict().items()}, tmp_path / "h.safetensors")
    r = run_cli("evaluate", "zoo:mlp", "--data", tmp_path / "f.npz", "--no-latency", "--precise", "--threads",
                "1000", "--out", tmp_path / "r", "--name", "a")
    assert r.exit_code == 0, r.stderr
    expected = ["labels are non-integer floats; each distinct value is a class (0.5, 1.5)",
                "--precise has no effect with --no-latency", "--threads 1000 is more than the"]
    notes = json.loads((tmp_path / "r" / "a" / "report.json").read_text())["stages"][0]["notes"]
    for text in expected:
        assert f"note: " in r.stderr and text in r.stderr
        assert any(text in n for n in notes), notes
    r = run_cli("evaluate", f"zoo:mlp@{tmp_path / 'h.safetensors'}", *IRIS,
                "--no-latency", "--out", tmp_path / "r", "--name", "b")
    assert r.exit_code == 0, r.stderr
    assert "tensors converted (float16 → float32) to the model's dtype" in r.stderr


@pytest.mark.parametrize("value, shown", [("Infinity", "Infinity"), ("NaN", "NaN"), ("-Infinity", "-Infinity")])
def test_10_non_finite_numbers_in_a_report(run_cli, tmp_path, value, shown):
    """json accepts NaN/Infinity but modelpress writes null: an edited report is named, not "has no accuracy"."""
    assert run_cli("evaluate", "zoo:mlp", *IRIS, "--no-latency", "--out", tmp_path, "--name", "a").exit_code == 0
    path = tmp_path / "a" / "report.json"
    text = path.read_text()
    doc = json.loads(text)
    accuracy = doc["stages"][0]["metrics"]["accuracy"]
    path.write_text(text.replace(f'"accuracy": {json.dumps(accuracy)}', f'"accuracy": {value}', 1))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for args in (["report", tmp_path / "a"], ["compare", tmp_path / "b", tmp_path / "a"]):
        r = run_cli(*args)
        _one_line(r, 2, f"stages[0].metrics.accuracy is {shown}, not a finite number")
