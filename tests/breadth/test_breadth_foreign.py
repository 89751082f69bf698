"""Models from other frameworks via ONNX: skl2onnx classifiers evaluated and quantized; inputs mapped by name."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from modelpress.data import load_data
from modelpress.evaluate.evaluator import EvalConfig, evaluate
from modelpress.sources import load_model

pytest.importorskip("skl2onnx")


def test_sklearn_logistic_regression_evaluates_like_its_own_predictions(tmp_path, run_cli):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score

    from modelpress.runtime.sklearn_onnx import sklearn_to_onnx

    train = load_data("sklearn:breast_cancer", split="train")
    test = load_data("sklearn:breast_cancer", split="test")
    x = test.inputs["input"]
    model = LogisticRegression(max_iter=2000).fit(train.inputs["input"], train.y)
    info = sklearn_to_onnx(model, tmp_path / "lr.onnx", sample=x)
    assert info["input"] == "X" and info["n_classes"] == 2 and info["max_abs_diff"] < 1e-5
    artifact = load_model(str(tmp_path / "lr.onnx"), data=test)
    assert [s.name for s in artifact.inputs] == ["X"]  # the data calls it "input": mapped by position
    result = evaluate(artifact, test, config=EvalConfig(measure_latency=False))
    assert result.metrics["accuracy"] == accuracy_score(test.y, model.predict(x))
    assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(test.y, model.predict_proba(x)[:, 1]), abs=1e-6)
    cli = run_cli("evaluate", tmp_path / "lr.onnx", "--data", "sklearn:breast_cancer", "--no-latency", "--json")
    assert cli.exit_code == 0, cli.stderr
    assert json.loads(cli.stdout)["metrics"]["accuracy"] == result.metrics["accuracy"]


def test_sklearn_mlp_is_quantized_like_any_onnx_model(tmp_path, run_cli):
    import onnx
    from sklearn.neural_network import MLPClassifier

    from modelpress.runtime.sklearn_onnx import sklearn_to_onnx

    train, test = load_data("sklearn:iris", split="train"), load_data("sklearn:iris", split="test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on a 100-sample toy set
        model = MLPClassifier((64, 64), max_iter=400, random_state=0).fit(train.inputs["input"], train.y)
    sklearn_to_onnx(model, tmp_path / "mlp.onnx", sample=test.inputs["input"], input_name="float_input")
    graph = onnx.load(str(tmp_path / "mlp.onnx")).graph
    assert [o.name for o in graph.output] == ["probabilities"] and not any(n.op_type == "ZipMap" for n in graph.node)
    result = run_cli("quantize", tmp_path / "mlp.onnx", "--mode", "dynamic", "--data", "sklearn:iris",
                     "-o", tmp_path / "mlp-int8")
    assert result.exit_code == 0, result.stderr
    ops = {n.op_type for n in onnx.load(str(tmp_path / "mlp-int8" / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops
    quantized = evaluate(load_model(str(tmp_path / "mlp-int8")), test, config=EvalConfig(measure_latency=False))
    own = float(np.mean(model.predict(test.inputs["input"]) == test.y))
    assert abs(quantized.metrics["accuracy"] - own) <= 1 / len(test) + 1e-9


def test_a_converted_model_with_its_label_output_first_still_scores(tmp_path):
    """A user's own skl2onnx file (label output first, then probabilities) is scored from the probabilities."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    train, test = load_data("sklearn:wine", split="train"), load_data("sklearn:wine", split="test")
    model = LogisticRegression(max_iter=2000).fit(train.inputs["input"], train.y)
    proto = convert_sklearn(model, initial_types=[("float_input", FloatTensorType([None, 13]))],
                            options={id(model): {"zipmap": False}})
    assert [o.name for o in proto.graph.output] == ["label", "probabilities"]
    onnx.save(proto, str(tmp_path / "wine.onnx"))
    artifact = load_model(str(tmp_path / "wine.onnx"), data=test)
    assert artifact.n_classes == 3
    result = evaluate(artifact, test, config=EvalConfig(measure_latency=False))
    np.testing.assert_allclose(result.probabilities, model.predict_proba(test.inputs["input"]), atol=1e-5)


def _two_input_model(path):
    """out = softmax(concat(a, b) @ W) with a DOUBLE input b: order and names matter, and b needs a cast."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, -3.0]], dtype=np.float32)
    nodes = [helper.make_node("Cast", ["b"], ["b32"], to=TensorProto.FLOAT),
             helper.make_node("Concat", ["a", "b32"], ["ab"], axis=1),
             helper.make_node("MatMul", ["ab", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["proba"], axis=1)]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2]),
                                             helper.make_tensor_value_info("b", TensorProto.DOUBLE, [None, 2])],
                              [helper.make_tensor_value_info("proba", TensorProto.FLOAT, [None, 2])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w


def test_multi_input_models_take_the_data_arrays_by_name(tmp_path, run_cli):
    w = _two_input_model(tmp_path / "two.onnx")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 2)).astype(np.float32), rng.normal(size=(40, 2)).astype(np.float32)
    y = (np.concatenate([a, b], axis=1) @ w).argmax(1)
    np.savez(tmp_path / "two.npz", b=b, extra=np.zeros((40, 3), np.float32), a=a, y=y)  # not in the model's order
    data = load_data(str(tmp_path / "two.npz"), split="all")
    result = evaluate(load_model(str(tmp_path / "two.onnx"), data=data), data,
                      config=EvalConfig(measure_latency=False))
    assert result.metrics["accuracy"] == 1.0
    np.savez(tmp_path / "swapped.npz", a=b, b=a, y=y)  # the same arrays under the wrong names: by name, not order
    swapped = load_data(str(tmp_path / "swapped.npz"), split="all")
    wrong = evaluate(load_model(str(tmp_path / "two.onnx"), data=swapped), swapped,
                     config=EvalConfig(measure_latency=False))
    assert wrong.metrics["accuracy"] < 0.9
    np.savez(tmp_path / "missing.npz", a=a, c=b, y=y)
    cli = run_cli("evaluate", tmp_path / "two.onnx", "--data", f"{tmp_path / 'missing.npz'}#all", "--no-latency")
    assert cli.exit_code == 2 and "expects inputs ['a', 'b'] but the data has ['a', 'c']" in cli.stderr


def test_conversion_errors(tmp_path):
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from modelpress.errors import InputError
    from modelpress.runtime.sklearn_onnx import sklearn_to_onnx

    x = np.zeros((4, 3), np.float32)
    with pytest.raises(InputError, match="has no predict_proba"):
        sklearn_to_onnx(LinearRegression().fit(x, [0, 1, 0, 1]), tmp_path / "r.onnx", sample=x)
    with pytest.raises(InputError, match="predict_proba failed on the sample"):
        sklearn_to_onnx(LogisticRegression(), tmp_path / "u.onnx", sample=x)  # not fitted
    with pytest.raises(InputError, match="non-empty 2-D float array"):
        sklearn_to_onnx(LogisticRegression(), tmp_path / "u.onnx", sample=np.zeros(3))
    assert not list(tmp_path.iterdir())
