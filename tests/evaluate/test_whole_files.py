"""A data file is a dataset used whole (issue 15): ``evaluate MODEL --data FILE`` equals scikit-learn on every row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from modelpress.data import load_data


def _logits(artifact, x: np.ndarray) -> np.ndarray:
    """The model's outputs computed here with torch, independently of modelpress's evaluator."""
    with torch.no_grad():
        return artifact.module.eval()(torch.from_numpy(x)).numpy().astype(np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def noisy_file(digits, tmp_path_factory):
    """171 digits test samples with noise added, so the model makes mistakes (metrics below 1)."""
    _, test = digits
    rng = np.random.default_rng(3)
    x = test.inputs["input"][:171] + rng.normal(0, 0.35, size=test.inputs["input"][:171].shape).astype(np.float32)
    path = tmp_path_factory.mktemp("whole") / "test.npz"
    np.savez(path, x=x.astype(np.float32), y=test.y[:171])
    return path


def test_evaluate_a_file_equals_sklearn_on_the_whole_file(trained_mlp, noisy_file, run_cli, tmp_path):
    artifact, folder = trained_mlp
    r = run_cli("evaluate", folder, "--data", noisy_file, "--no-latency", "--json", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)["metrics"]
    with np.load(noisy_file) as npz:
        x, y = npz["x"], npz["y"]
    probs = _softmax(_logits(artifact, x))
    assert got["n_samples"] == 171
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)), abs=1e-12)
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, probs.argmax(1), average="macro"), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=1e-6)
    assert 0.3 < got["accuracy"] < 0.99  # the noise makes the comparison mean something
    (report_path,) = (tmp_path / "r").glob("*/report.json")
    data = json.loads(report_path.read_text())["data"]
    assert (data["n_source"], data["n_samples"], data["split"]) == (171, 171, "all")
    assert data["split_rule"].startswith("all")


def test_splits_of_a_file_are_explicit_and_said_in_the_data_block(noisy_file):
    whole, test, train = (load_data(f"{noisy_file}{s}") for s in ("", "#test", "#train"))
    assert len(whole) == len(load_data(f"{noisy_file}#all")) == len(load_data(str(noisy_file), split="train")) == 171
    assert len(test) + len(train) == 171 and len(test) == 43
    block = test.describe()
    assert (block["n_source"], block["n_samples"], block["split"]) == (171, 43, "test")
    assert "25%" in block["split_rule"] and "seed 0" in block["split_rule"]


def test_bundled_sklearn_sets_keep_their_seeded_default_split():
    test, whole = load_data("sklearn:breast_cancer"), load_data("sklearn:breast_cancer#all")
    assert (len(test), len(whole)) == (143, 569)
    assert test.describe()["n_source"] == 569


def test_a_factory_is_used_whole(tmp_path, monkeypatch):
    module = tmp_path / "wholedata_factory.py"
    module.write_text("import numpy as np\n"
                      "def make():\n"
                      "    x = np.arange(40, dtype=np.float32).reshape(20, 2)\n"
                      "    return x, (np.arange(20) % 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(load_data("wholedata_factory:make")) == 20
    assert len(load_data("wholedata_factory:make#test")) == 5


@pytest.mark.parametrize("suffix, warned", [("", True), ("#test", False)], ids=["whole-file", "explicit-test"])
def test_a_pipeline_that_trains_on_its_evaluation_samples_says_so(tmp_path, tiny_npz, suffix, warned):
    from modelpress.pipeline import execute_pipeline, load_spec

    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: t\nmodel: zoo:mlp\nmodel_kwargs: {{hidden: [4]}}\ndata: {{eval: {tiny_npz}{suffix}}}\n"
                    "stages:\n  - {type: train, epochs: 1}\nevaluate:\n  batch_sizes: [1]\n"
                    "  latency: {min_calls: 2, min_s: 0, warmup_min_calls: 1, warmup_min_s: 0}\n", encoding="utf-8")
    report = execute_pipeline(load_spec(spec), out_dir=tmp_path / "out").report
    warnings = report["data"].get("warnings", [])
    notes = [n for n in report["stages"][-1]["notes"] if n.startswith("warning:")]
    if warned:
        assert len(warnings) == 1 and "holds 30 of the 40 evaluation samples" in warnings[0]
        assert notes == [f"warning: {warnings[0]}"]
    else:
        assert warnings == [] and notes == []
        assert (report["data"]["n_source"], report["data"]["n_samples"]) == (40, 10)


# ---- the class count is the model's ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nine_classes(digits, tmp_path_factory):
    """Digits test samples of classes 0-8 only (a 10-output model's data holding 9 of its classes)."""
    _, test = digits
    keep = test.y != 9
    path = tmp_path_factory.mktemp("nine") / "nine.npz"
    np.savez(path, x=test.inputs["input"][keep], y=test.y[keep])
    return path


def test_a_ten_output_model_on_nine_classes_matches_sklearn_over_the_present_labels(trained_mlp, nine_classes,
                                                                                    run_cli, tmp_path):
    artifact, folder = trained_mlp
    r = run_cli("evaluate", folder, "--data", nine_classes, "--no-latency", "--json", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)["metrics"]
    with np.load(nine_classes) as npz:
        x, y = npz["x"], npz["y"]
    probs = _softmax(_logits(artifact, x))
    y_pred, present = probs.argmax(1), list(range(9))
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, y_pred, average="macro", labels=present))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, y_pred, average="macro", labels=present))
    want_auc = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present])
    assert got["roc_auc"] == pytest.approx(want_auc, abs=1e-9)
    assert got["roc_auc_rule"] == "one-vs-rest macro over the 9 classes present in y_true (of 10 the model outputs)"
    assert [row["index"] for row in got["per_class"]] == present
    (report,) = tmp_path.glob("*/report.json")
    data = json.loads(report.read_text())["data"]
    assert data["n_classes"] == 10 and len(data["class_names"]) == 10  # the model's classes: compare reads these


def test_a_factory_model_keeps_its_own_output_count(nine_classes, run_cli, tmp_path, monkeypatch):
    """The issue's ImageNet case: a factory whose head has more outputs than the data has classes."""
    (tmp_path / "tenhead.py").write_text("import torch\ndef make():\n    torch.manual_seed(0)\n"
                                         "    return torch.nn.Linear(64, 10)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run_cli("evaluate", "tenhead:make", "--data", nine_classes, "--no-latency", "--json", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["classes_absent"] == 1


def test_a_label_the_model_cannot_output_is_exit_2(trained_mlp, digits, run_cli, tmp_path):
    _, folder = trained_mlp
    _, test = digits
    y = test.y.copy()
    y[0] = 10
    path = tmp_path / "ten.npz"
    np.savez(path, x=test.inputs["input"], y=y)
    r = run_cli("evaluate", folder, "--data", path, "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 2
    assert "has 1 of 450 labels ≥ 10 (up to 10) but model" in r.stderr and "outputs 10 classes" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the one-line error (and at most its hint)
