"""k-NN probe on embeddings: equal to a direct scikit-learn computation, layers, reference similarity, bad k."""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.errors import InputError
from modelpress.evaluate.evaluator import EvalConfig, evaluate


def _direct_knn_accuracy(features, y, *, k, folds, seed):
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(KNeighborsClassifier(n_neighbors=k, metric="cosine"), features, y, cv=cv)
    return accuracy_score(y, predicted)


def test_knn_accuracy_equals_scikit_learn_on_the_same_embeddings(trained_mlp, digits):
    import torch

    artifact, _ = trained_mlp
    _, test = digits
    result = evaluate(artifact, test, config=EvalConfig(measure_latency=False, knn=7, knn_layer="2", knn_folds=4,
                                                        seed=3))
    knn = result.extra["knn"]
    with torch.no_grad():  # zoo:mlp(hidden=[32]) = Flatten, Linear, ReLU, Linear: module "2" is the hidden ReLU
        hidden = artifact.module[:3](torch.from_numpy(test.inputs["input"])).numpy()
    np.testing.assert_array_equal(result.embeddings, hidden)
    assert (knn["k"], knn["folds"], knn["dim"], knn["n_samples"]) == (7, 4, 32, len(test))
    assert knn["accuracy"] == _direct_knn_accuracy(hidden, test.y, k=7, folds=4, seed=3)
    assert 0.8 < knn["accuracy"] <= 1.0  # a trained hidden layer separates digits well
    assert result.extra["knn"]["fold_accuracies"] and "robustness" not in result.extra


def test_knn_on_the_model_output_and_similarity_to_a_reference(trained_mlp, digits):
    from modelpress.evaluate.knn import cosine_to_reference, knn_probe

    artifact, _ = trained_mlp
    _, test = digits
    first = evaluate(artifact, test, config=EvalConfig(measure_latency=False, knn=5))
    np.testing.assert_allclose(first.embeddings, first.logits, rtol=0, atol=0)  # default: the model output
    again = evaluate(artifact, test, config=EvalConfig(measure_latency=False, knn=5),
                     reference_embeddings=first.embeddings, reference_name="original")
    assert again.extra["knn"]["reference_cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert again.extra["knn"]["reference"] == "original"
    rng = np.random.default_rng(0)
    noisy = first.embeddings + rng.normal(scale=2.0, size=first.embeddings.shape).astype(np.float32)
    moved = cosine_to_reference(noisy, first.embeddings)
    assert moved["reference_cosine_min"] < moved["reference_cosine_mean"] < 1.0
    other_width = cosine_to_reference(first.embeddings[:, :4], first.embeddings)
    assert other_width["reference_cosine_mean"] is None and "shapes differ" in other_width["reference_cosine_reason"]
    assert knn_probe(first.embeddings, test.y, k=5)["accuracy"] == first.extra["knn"]["accuracy"]


def test_knn_layer_errors_and_onnx_outputs(trained_mlp, digits, tmp_path):
    import onnx

    from modelpress.compress.export import ExportConfig
    from modelpress.compress.registry import StageContext, run_stage

    artifact, _ = trained_mlp
    _, test = digits
    with pytest.raises(InputError, match="knn layer 'nope' is not a submodule"):
        evaluate(artifact, test, config=EvalConfig(measure_latency=False, knn=3, knn_layer="nope"))
    onnx_artifact = run_stage(artifact, ExportConfig(verify=False), StageContext(work_dir=tmp_path, eval=test))
    onnx_artifact = onnx_artifact.save(tmp_path / "onnx")
    result = evaluate(onnx_artifact, test, config=EvalConfig(measure_latency=False, knn=3, knn_layer="2"))
    assert result.extra["knn"]["accuracy"] is None and "no output or tensor '2'" in result.extra["knn"]["reason"]
    output = result.extra["knn"]["reason"].split("outputs: ")[1].rstrip(")")
    by_name = evaluate(onnx_artifact, test, config=EvalConfig(measure_latency=False, knn=3, knn_layer=output))
    plain = evaluate(onnx_artifact, test, config=EvalConfig(measure_latency=False, knn=3))
    assert by_name.extra["knn"]["accuracy"] == plain.extra["knn"]["accuracy"]
    # "module of the torch model, else tensor of its export": the ReLU's output tensor in the ONNX graph
    relu = next(n.output[0] for n in onnx.load(str(onnx_artifact.path)).graph.node if n.op_type == "Relu")
    config = EvalConfig(measure_latency=False, knn=3, knn_layer=f"2,{relu}")
    torch_side = evaluate(artifact, test, config=config)
    onnx_side = evaluate(onnx_artifact, test, config=config, reference_embeddings=torch_side.embeddings)
    assert (torch_side.extra["knn"]["layer"], onnx_side.extra["knn"]["layer"]) == ("2", relu)
    np.testing.assert_allclose(onnx_side.embeddings, torch_side.embeddings, atol=1e-4)
    assert onnx_side.extra["knn"]["reference_cosine_mean"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["--knn", "0"], "knn (k) must be an integer ≥ 1, got 0"),
    (["--knn", "-3"], "knn (k) must be an integer ≥ 1, got -3"),
    (["--knn", "450"], "knn k = 450 must be below the number of samples (450)"),
    (["--knn", "400"], "exceeds the smallest training fold"),
    (["--knn", "3", "--knn-folds", "1"], "knn_folds must be an integer ≥ 2, got 1"),
    (["--noise", "0.5,-0.1"], "noise level (sigma) must be a finite number ≥ 0, got -0.1"),
    (["--noise", "0.5,abc"], "--noise must be comma-separated numbers"),
], ids=["k-zero", "k-negative", "k-n-samples", "k-over-fold", "one-fold", "negative-sigma", "not-a-number"])
def test_bad_measurement_options_exit_2(run_cli, trained_mlp, args, message):
    _, folder = trained_mlp
    result = run_cli("evaluate", folder, "--data", "sklearn:digits", "--no-latency", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
