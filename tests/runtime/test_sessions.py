"""One backend declaration in one registry: names, formats, memory, availability, runners."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from modelpress.errors import BackendUnavailable, InputError
from modelpress.runtime import sessions
from modelpress.runtime.memory import memory_backends
from modelpress.runtime.sessions import BACKENDS, Backend, Runner, backend_names, make_runner, native_backend


@pytest.fixture
def temporary_backend(request):
    """Register a backend for one test and remove it afterwards."""

    def add(backend: Backend) -> Backend:
        BACKENDS.add(backend.name, backend)
        request.addfinalizer(lambda: BACKENDS.pop(backend.name))
        return backend

    return add


def test_builtin_declarations():
    assert backend_names()[:3] == ("torch", "onnxruntime", "tensorrt")
    assert [BACKENDS.get(n).formats for n in ("torch", "onnxruntime", "tensorrt")] == [("torch",), ("onnx",),
                                                                                      ("tensorrt",)]
    assert memory_backends() == ("torch", "onnxruntime")  # TensorRT's memory is on the GPU
    assert BACKENDS.get("tensorrt").latency is not None and BACKENDS.get("torch").latency is None


def test_unknown_backend_is_exit_2_naming_the_backends(iris_mlp):
    with pytest.raises(InputError, match="unknown backend 'onnxruntim'") as info:
        make_runner(iris_mlp, "onnxruntim")
    assert info.value.exit_code == 2 and "onnxruntime" in info.value.format_message()
    with pytest.raises(InputError, match="did you mean 'onnxruntime'"):
        sessions.require_backend("onnxruntim")


def test_unknown_backend_on_the_command_line_is_exit_2(run_cli):
    r = run_cli("evaluate", "zoo:mlp", "--data", "sklearn:iris", "--backend", "nope")
    assert r.exit_code == 2
    assert "nope" in r.stderr and all(name in r.stderr for name in ("torch", "onnxruntime", "tensorrt"))


def test_availability_check_is_exit_3_only_when_asked_for(temporary_backend, iris_mlp):
    from modelpress.data import load_data
    from modelpress.evaluate.evaluator import EvalConfig, evaluate

    def missing() -> None:
        raise BackendUnavailable("backend fake needs a fake accelerator, which is not here")

    torch_backend = BACKENDS.get("torch")
    temporary_backend(dataclasses.replace(torch_backend, name="fake", formats=("torch",), check_available=missing))
    data = load_data("sklearn:iris", split="test")
    with pytest.raises(BackendUnavailable, match="fake accelerator") as info:
        evaluate(iris_mlp, data, config=EvalConfig(backends=("fake",), measure_latency=False))
    assert info.value.exit_code == 3
    # not asked for: the artifact's native backend (torch, registered first for its format) runs, nothing raised
    assert native_backend(iris_mlp) == "torch"
    result = evaluate(iris_mlp, data, config=EvalConfig(measure_latency=False))
    assert result.metrics["n_samples"] == len(data)


def test_a_registered_backend_runs_through_make_runner(temporary_backend, iris_mlp):
    def doubling(artifact, threads):
        return Runner("double", threads, ("x",), lambda batch: 2 * batch["x"])

    temporary_backend(Backend("double", ("torch",), doubling))
    runner = make_runner(iris_mlp, "double", threads=2)
    # a single input is fed by position whatever the batch calls it
    np.testing.assert_array_equal(runner({"anything": np.ones((2, 3), np.float32)}), np.full((2, 3), 2.0))
    with pytest.raises(InputError, match="threads must be ≥ 1, got 0"):
        make_runner(iris_mlp, "double", threads=0)


def test_ort_runner_reads_the_score_output_like_the_evaluator(tmp_path):
    """A converted classifier may put an integer label output first: the runner reads the first float output."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, [None])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
                               helper.make_node("Neg", ["x"], ["scores"])], "g", [x], [label, scores])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "two_outputs.onnx"
    onnx.save(model, path)
    out = sessions.ort_runner(path, threads=1)({"x": np.array([[1.0, 2.0]], np.float32)})
    np.testing.assert_array_equal(out, [[-1.0, -2.0]])


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_fixed_batch_model_runs_larger_batches_as_slices(tmp_path, fixed):
    """export --static-batch writes a model whose batch axis is fixed: evaluation feeds it whole batches."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [fixed, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [fixed, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    runner = sessions.ort_runner(path, threads=1)
    batch = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(runner({"x": batch}), -batch)
    if fixed == 1:
        np.testing.assert_array_equal(runner({"x": batch[:3]}), -batch[:3])
    else:
        with pytest.raises(InputError, match=r"fixed batch of 2 but got a batch of 3"):
            runner({"x": batch[:3]})


@pytest.fixture(scope="module")
def iris_mlp():
    from modelpress.data import load_data
    from modelpress.sources import load_model

    return load_model("zoo:mlp", data=load_data("sklearn:iris", split="test"))


def test_one_onnxruntime_session_options_helper():
    ort = pytest.importorskip("onnxruntime")
    opts = sessions.ort_session_options(threads=3, optimization="disabled")
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert sessions.ort_session_options(threads=1).graph_optimization_level == \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with pytest.raises(InputError, match="optimization must be one of all, extended, basic, disabled, got 'max'"):
        sessions.ort_session_options(threads=1, optimization="max")
