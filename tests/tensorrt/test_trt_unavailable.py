"""Without TensorRT or a CUDA GPU: exit 3 with one line naming what is missing, optional stages skip with a note,
and nothing imports tensorrt or cuda until it is asked for."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from modelpress.artifacts import ModelArtifact
from modelpress.compress.export import ExportConfig
from modelpress.compress.registry import StageContext, run_stage
from modelpress.errors import BackendUnavailable, InputError
from modelpress.runtime import tensorrt as tensorrt_backend
from modelpress.runtime.sessions import make_runner

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
INSTALL = "pip install 'modelpress[tensorrt]' (TensorRT 10 + cuda-python) on a machine with an NVIDIA GPU and driver"


@pytest.fixture
def no_gpu(monkeypatch):
    """Pretend the package is there but no GPU is (the case a CI machine with the extra installed would hit)."""
    monkeypatch.setattr(tensorrt_backend, "tensorrt_missing", lambda: "no CUDA GPU was found")


def test_importing_modelpress_imports_neither_tensorrt_nor_cuda():
    code = (
        "import sys, modelpress, modelpress.cli, modelpress.pipeline, modelpress.compress.tensorrt, "
        "modelpress.runtime.tensorrt, modelpress.evaluate.evaluator\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cuda', 'pycuda')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here; the not-installed message cannot be produced")
def test_export_without_tensorrt_package_exits_3_naming_it(run_cli, tmp_path):
    out = tmp_path / "engine"
    r = run_cli("export", "zoo:mlp", "--data", "sklearn:iris", "--format", "tensorrt", "-o", out)
    assert r.exit_code == 3
    assert r.stderr.strip().splitlines() == [
        "error: export --format tensorrt needs TensorRT and a CUDA GPU, but the tensorrt Python package is not "
        f"installed; {INSTALL}"]
    assert not out.exists() and not list(tmp_path.glob(".engine*"))


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here; the not-installed message cannot be produced")
def test_evaluate_backend_tensorrt_without_package_exits_3(run_cli):
    r = run_cli("evaluate", "zoo:mlp", "--data", "sklearn:iris", "--backend", "tensorrt", "--no-latency")
    assert r.exit_code == 3
    assert r.stderr.strip().splitlines() == [
        "error: backend tensorrt needs the TensorRT Python package and a CUDA GPU, but the tensorrt Python package "
        f"is not installed; {INSTALL}"]


@pytest.mark.parametrize("args, start", [
    (["export", "zoo:mlp", "--data", "sklearn:iris", "--format", "tensorrt", "--precision", "fp16", "-o", "out"],
     "error: export --format tensorrt needs TensorRT and a CUDA GPU, but no CUDA GPU was found; pip install"),
    (["evaluate", "zoo:mlp", "--data", "sklearn:iris", "--backend", "tensorrt"],
     "error: backend tensorrt needs the TensorRT Python package and a CUDA GPU, but no CUDA GPU was found; pip"),
])
def test_no_gpu_exits_3_with_one_line(run_cli, no_gpu, args, start):
    r = run_cli(*args)
    assert r.exit_code == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start) and "Traceback" not in r.stderr


def test_bad_tensorrt_option_is_exit_2_before_anything_runs(run_cli, tmp_path):
    r = run_cli("export", "zoo:mlp", "--data", "sklearn:iris", "--format", "tensorrt", "--min-batch", "64",
                "--opt-batch", "8", "-o", tmp_path / "e")
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: export: min_batch ≤ opt_batch ≤ max_batch must hold, got 64, 8, 256"
    r = run_cli("export", "zoo:mlp", "--data", "sklearn:iris", "--precision", "int8", "-o", tmp_path / "e")
    assert r.exit_code == 2 and "export.precision applies to format tensorrt only" in r.stderr
    r = run_cli("export", "zoo:mlp", "--format", "tensorrt", "--workspace-mb", "0", "-o", tmp_path / "e")
    assert r.exit_code == 2 and "export.workspace_mb must be an integer > 0 (MiB), got 0" in r.stderr


def _mlp(iris_data):
    from modelpress.sources import load_model

    return load_model("zoo:mlp", data=iris_data, kwargs={"hidden": [8]})


@pytest.fixture
def iris():
    from modelpress.data import load_data

    return load_data("sklearn:iris", split="test")


def test_optional_tensorrt_export_is_skipped_with_a_note(no_gpu, iris, tmp_path):
    artifact = _mlp(iris)
    ctx = StageContext(work_dir=tmp_path / "stage", eval=iris)
    result = run_stage(artifact, ExportConfig(format="tensorrt", optional=True), ctx)
    assert ctx.notes == [
        f"skipped: export --format tensorrt needs TensorRT and a CUDA GPU, but no CUDA GPU was found; {INSTALL}"]
    assert result is not artifact and result.format == "torch" and result.module is artifact.module
    assert artifact.history == [] and [h["kind"] for h in result.history] == ["export"]
    assert not list((tmp_path / "stage").iterdir())  # nothing built, not even the ONNX


def test_required_tensorrt_export_raises_exit_3(no_gpu, iris, tmp_path):
    ctx = StageContext(work_dir=tmp_path / "stage", eval=iris)
    with pytest.raises(BackendUnavailable, match="no CUDA GPU was found") as info:
        run_stage(_mlp(iris), ExportConfig(format="tensorrt"), ctx)
    assert info.value.exit_code == 3 and ctx.notes == []


def test_pipeline_with_optional_tensorrt_stage_reports_the_skip(no_gpu, tmp_path):
    from modelpress.evaluate.evaluator import EvalConfig
    from modelpress.pipeline import DataSpec, PipelineSpec, run_pipeline

    spec = PipelineSpec(name="trt-optional", model="zoo:mlp", data=DataSpec(eval="sklearn:iris"),
                        stages=(ExportConfig(format="tensorrt", optional=True),),
                        evaluate=EvalConfig(measure_latency=False))
    report = run_pipeline(spec, out_dir=tmp_path / "run")
    last = report["stages"][-1]
    assert last["kind"] == "export" and last["artifact"]["format"] == "torch"
    assert any(n.startswith("skipped: export --format tensorrt needs TensorRT") for n in last["notes"]), last["notes"]


def test_tensorrt_backend_refuses_non_engine_artifacts_before_checking_the_gpu(no_gpu, iris, tmp_path):
    from modelpress.compress.export import export_onnx

    config = ExportConfig(exporter="torchscript", opset=17)
    onnx_artifact = export_onnx(_mlp(iris), tmp_path / "m.onnx", config=config)
    with pytest.raises(InputError, match=r"backend tensorrt runs TensorRT engines; .* is onnx.*--format tensorrt"):
        make_runner(onnx_artifact, "tensorrt")
    with pytest.raises(InputError, match="backend tensorrt runs TensorRT engines; zoo:mlp is torch"):
        make_runner(_mlp(iris), "tensorrt")


def test_saved_engine_artifact_needs_the_gpu_to_evaluate(run_cli, no_gpu, tmp_path, iris):
    spec = _mlp(iris).inputs
    engine = tmp_path / "src.engine"
    engine.write_bytes(b"not really an engine")
    folder = tmp_path / "trt"
    ModelArtifact("tensorrt", spec, 3, "zoo:mlp", path=engine,
                  metadata={"tensorrt": {"version": "10.0.0", "compute_capability": "8.0"}}).save(folder)
    assert (folder / "model.engine").read_bytes() == b"not really an engine"
    r = run_cli("evaluate", folder, "--data", "sklearn:iris", "--no-latency")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.startswith("error: backend tensorrt needs the TensorRT Python package and a CUDA GPU, but no "
                               "CUDA GPU was found")


def test_benchmark_script_exits_3_without_a_gpu(tmp_path):
    from pathlib import Path

    missing = tensorrt_backend.tensorrt_missing()
    if missing is None:
        pytest.skip("this machine has TensorRT and a GPU: the benchmark would run for real")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "tensorrt.py"
    out = tmp_path / "result.md"
    r = subprocess.run([sys.executable, str(script), "--out", str(out)], capture_output=True, text=True,
                       timeout=120, cwd=script.parent)
    assert r.returncode == 3, r.stderr
    # run from inside benchmarks/: the script must still find the tensorrt package, not itself
    assert r.stderr.strip() == f"benchmarks/tensorrt.py needs TensorRT and a CUDA GPU, but {missing}; {INSTALL}"
    assert not out.exists()


class _FakeErr(int):
    @property
    def name(self) -> str:
        return {0: "cudaSuccess", 35: "cudaErrorInsufficientDriver"}[int(self)]


class _FakeCudart:
    def __init__(self, err: int, count: int | None) -> None:
        self.err, self.count = err, count

    def cudaGetDeviceCount(self):
        return _FakeErr(self.err), self.count

    def cudaGetErrorString(self, err):
        return _FakeErr(0), b"CUDA driver version is insufficient for CUDA runtime version"


def _no_cuda_python():
    raise ImportError("No module named 'cuda'")


@pytest.mark.parametrize("trt_module, cudart, expected", [
    (None, None, "the tensorrt Python package is not installed"),
    ("fake", _no_cuda_python, "cuda-python is not installed"),
    ("fake", lambda: _FakeCudart(35, None), "no CUDA GPU is usable (cudaGetDeviceCount: cudaErrorInsufficientDriver: "
                                            "CUDA driver version is insufficient for CUDA runtime version)"),
    ("fake", lambda: _FakeCudart(0, 0), "no CUDA GPU was found"),
    ("fake", lambda: _FakeCudart(0, 1), None),
], ids=["no-tensorrt", "no-cuda-python", "no-driver", "no-device", "ready"])
def test_tensorrt_missing_names_what_is_missing(monkeypatch, trt_module, cudart, expected):
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt") if trt_module else None)
    if cudart is not None:
        monkeypatch.setattr(tensorrt_backend, "cudart_module", cudart)
    assert tensorrt_backend.tensorrt_missing() == expected
