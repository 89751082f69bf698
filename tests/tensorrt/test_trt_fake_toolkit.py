"""The export → engine → verify → evaluate glue, run against a stand-in ``tensorrt`` module on the CPU.

The stand-in implements the slice of the TensorRT 10 Python API that modelpress calls (builder, config, profiles,
timing cache, ONNX parser, calibrator callbacks, runtime, engine, execution context); its "engine" runs the ONNX
model with onnxruntime on the fake device memory. It cannot say whether real TensorRT accepts these calls — the
GPU tests do that — but it checks that every call modelpress makes is made in a working order, with the values
the real API takes, and that the results land in the artifact, the report and the exit code.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import sys
import types

import numpy as np
import pytest

from modelpress.runtime import tensorrt as tensorrt_backend


def _make_fake_trt(cuda, log):  # noqa: C901 - one self-contained stand-in
    import onnxruntime as ort
    from onnx import load

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0"

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            log.append("logger")

    trt.ILogger = ILogger
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 INT8 TF32")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    trt.DataType = enum.Enum("DataType", "FLOAT INT32 INT64")
    trt.nptype = lambda dt: {"FLOAT": np.float32, "INT32": np.int32, "INT64": np.int64}[dt.name]

    class IInt8EntropyCalibrator2:
        def __init__(self):
            log.append("calibrator")

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.path = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            model = load(path)
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(Tensor(vi.name, dims, trt.DataType.FLOAT))
            self.network.path = path
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            assert all(isinstance(d, int) for d in (*lo, *opt, *hi))
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return memoryview(b"FAKECACHE" + b"x" * 8)

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool, self.cache = set(), [], None, None
            self.int8_calibrator = self.calibration_profile = None

        def set_memory_pool_limit(self, kind, size):
            assert kind is trt.MemoryPoolType.WORKSPACE and size > 0
            self.pool = size

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)
            log.append(f"clear {flag.name}")

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        def create_timing_cache(self, data):
            if data and not bytes(data).startswith(b"FAKECACHE"):
                raise RuntimeError("cannot deserialize timing cache")
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            strongly_typed = bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            if strongly_typed and config.flags & {"FP16", "INT8"}:  # as TensorRT 10 refuses them
                self.logger.log(trt.ILogger.Severity.ERROR, "precision flags are not allowed on a strongly typed "
                                                            "network")
                return None
            if config.int8_calibrator is not None and (strongly_typed or "INT8" not in config.flags):
                raise AssertionError("a calibrator works only on a weakly typed network with the INT8 flag")
            batches = 0
            if config.int8_calibrator is not None:
                names = [t.name for t in network.inputs]
                while config.int8_calibrator.get_batch(names) is not None:
                    batches += 1
                config.int8_calibrator.write_calibration_cache(memoryview(b"calibration table"))
            log.append(f"build flags={sorted(config.flags)} calibration_batches={batches}"
                       + (" strongly_typed" if strongly_typed else ""))
            blob = {"onnx": base64.b64encode(open(network.path, "rb").read()).decode(),
                    "profile": config.profiles[0].shapes, "fp16": "FP16" in config.flags}
            return memoryview(json.dumps(blob).encode())

    class Engine:
        def __init__(self, blob):
            self.session = ort.InferenceSession(base64.b64decode(blob["onnx"]), providers=["CPUExecutionProvider"])
            self.profile, self.fp16 = blob["profile"], blob["fp16"]
            self.names = [i.name for i in self.session.get_inputs()] + [o.name for o in self.session.get_outputs()]

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.profile else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_profile_shape(self, name, index):
            assert index == 0
            return self.profile[name]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            lo, _, hi = self.engine.profile[name]
            ok = all(a <= d <= b for d, a, b in zip(shape, lo, hi))
            if ok:
                self.shapes[name] = tuple(shape)
            return ok

        def get_tensor_shape(self, name):
            n = next(iter(self.shapes.values()))[0]
            out = self.engine.session.get_outputs()[0]
            return (n, *out.shape[1:])

        def set_tensor_address(self, name, ptr):
            assert isinstance(ptr, int)
            self.addresses[name] = ptr

        def execute_async_v3(self, stream_handle):
            feeds = {}
            for name, shape in self.shapes.items():
                nbytes = int(np.prod(shape)) * 4
                feeds[name] = cuda.mem[self.addresses[name]][:nbytes].view(np.float32).reshape(shape)
            out = self.engine.session.run(None, feeds)[0].astype(np.float32)
            if self.engine.fp16:
                out = out.astype(np.float16).astype(np.float32)
            raw = out.reshape(-1).view(np.uint8)
            cuda.mem[self.addresses[self.engine.names[-1]]][: raw.size] = raw
            cuda.clock_ms += 1.0
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(bytes(data)))
            except ValueError:
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def fake_toolkit(monkeypatch, fake_cuda):
    log: list[str] = []
    monkeypatch.setitem(sys.modules, "tensorrt", _make_fake_trt(fake_cuda, log))
    monkeypatch.setattr(tensorrt_backend, "tensorrt_missing", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "_LOGGER", None)
    fake_cuda.device_info = lambda device=0: {"name": "Fake GPU", "compute_capability": "8.6",
                                              "total_memory_bytes": 1 << 30}
    monkeypatch.setattr(tensorrt_backend, "CudaRuntime", lambda: fake_cuda)
    return log, fake_cuda


def test_cli_export_fp32_then_evaluate_with_two_latency_rows(run_cli, fake_toolkit, trained_mlp, tmp_path):
    log, cuda = fake_toolkit
    _, folder = trained_mlp
    out = tmp_path / "trt"
    r = run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--max-batch", "64",
                "--timing-cache", tmp_path / "t.cache", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "verified: max abs diff" in r.stdout
    assert "engine: TensorRT 10.99.0 fp32 on Fake GPU (compute capability 8.6)" in r.stdout
    assert "clear TF32" in log and any(line.startswith("build flags=[]") for line in log)
    manifest = json.loads((out / "manifest.json").read_text())
    meta = manifest["metadata"]
    assert manifest["format"] == "tensorrt" and (out / "model.engine").exists() and (out / "model.onnx").exists()
    assert meta["tensorrt"]["profiles"]["input"] == {"min": [1, 64], "opt": [32, 64], "max": [64, 64]}
    assert meta["tensorrt"]["timing_cache"] == {"path": str(tmp_path / "t.cache"), "reused": False, "bytes_in": 0}
    assert meta["verification"]["passed"] and meta["verification"]["max_abs_diff"] == 0.0
    assert meta["onnx_verification"]["passed"]
    assert (tmp_path / "t.cache").read_bytes().startswith(b"FAKECACHE")
    assert not cuda.mem  # every session freed its buffers

    from modelpress.data import load_data
    from modelpress.evaluate.evaluator import EvalConfig, evaluate, predict
    from modelpress.runtime.latency import LatencyConfig
    from modelpress.sources import load_model

    test = load_data("sklearn:digits", split="test")
    reference = predict(load_model(str(folder), data=test), test)
    quick = LatencyConfig(warmup_min_calls=2, warmup_min_s=0.0, min_calls=20, min_s=0.0)
    result = evaluate(load_model(str(out), data=test), test, config=EvalConfig(batch_sizes=(4,), latency=quick),
                      reference_logits=reference, reference_name="torch")
    assert [(row["backend"], row["batch_size"]) for row in result.latency] == [("tensorrt", 4), ("tensorrt+copy", 4)]
    assert result.latency[0]["median_ms"] == pytest.approx(1.0)  # the fake kernel's device time
    assert result.latency[1]["median_ms"] > 1.0 and result.latency[1]["includes_copies"] is True
    assert result.fidelity["top1_agreement"] == 1.0 and result.metrics["accuracy"] > 0.85
    assert not cuda.mem


def test_fp16_int8_and_timing_cache_reuse(run_cli, fake_toolkit, trained_mlp, tmp_path):
    log, _ = fake_toolkit
    _, folder = trained_mlp
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"garbage")
    r = run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--precision", "fp16",
                "--timing-cache", cache, "-o", tmp_path / "fp16")
    assert r.exit_code == 0, r.stderr
    assert f"note: timing cache {cache} was not usable" in r.stderr
    meta = json.loads((tmp_path / "fp16" / "manifest.json").read_text())["metadata"]
    assert meta["tensorrt"]["builder_flags"] == ["FP16"] and 0 < meta["verification"]["max_abs_diff"] < 1e-2

    r = run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--precision", "int8",
                "--trt-int8", "calibrator", "--timing-cache", cache, "-o", tmp_path / "int8")
    assert r.exit_code == 0, r.stderr
    assert "note: INT8 calibrated with IInt8EntropyCalibrator2 (deprecated since TensorRT 10.1" in r.stderr
    meta = json.loads((tmp_path / "int8" / "manifest.json").read_text())["metadata"]["tensorrt"]
    assert meta["timing_cache"]["reused"] is True and meta["int8_mode"] == "calibrated"
    assert meta["calibration"] == {"algorithm": "entropy2", "batch_size": 32, "batches": 16, "samples": 512}
    assert meta["qdq"] is None and meta["strongly_typed"] is False
    assert "build flags=['INT8'] calibration_batches=16" in log
    assert (tmp_path / "int8" / "calibration.cache").read_bytes() == b"calibration table"


def test_int8_default_quantizes_to_qdq_and_builds_strongly_typed(run_cli, fake_toolkit, trained_mlp, tmp_path):
    """The stand-in engine runs model.qdq.onnx in onnxruntime, so the verification measures real int8 error."""
    from modelpress.compress.tensorrt import qdq_info
    from modelpress.onnx_utils import load_onnx

    log, cuda = fake_toolkit
    _, folder = trained_mlp
    out = tmp_path / "int8"
    r = run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--precision", "int8",
                "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "IInt8EntropyCalibrator2" not in r.stderr and "calibrator" not in log
    meta = json.loads((out / "manifest.json").read_text())["metadata"]
    trt_meta = meta["tensorrt"]
    assert trt_meta["int8_mode"] == "qdq" and trt_meta["strongly_typed"] is True and trt_meta["builder_flags"] == []
    assert trt_meta["calibration"] is None and not (out / "calibration.cache").exists()
    assert trt_meta["qdq"]["source"] == "modelpress" and trt_meta["qdq"]["file"] == "model.qdq.onnx"
    assert trt_meta["qdq"]["calibration"] == {"algorithm": "minmax", "batches": 16, "samples": 512}
    assert "build flags=[] calibration_batches=0 strongly_typed" in log
    info = qdq_info(load_onnx(out / "model.qdq.onnx"))
    assert info["problems"] == [] and info["nodes"] == trt_meta["qdq"]["nodes"] >= 4  # 2 Gemm: input + weight each
    verification = meta["verification"]
    assert verification["passed"] and verification["n_samples"] == 450  # int8 verifies on ≥ 500 or all samples
    assert 0 < verification["max_abs_diff"] <= verification["atol"] and verification["top1_agreement"] >= 0.99
    assert not cuda.mem


def test_over_tolerance_engine_exits_1_and_leaves_nothing(run_cli, fake_toolkit, trained_mlp, tmp_path):
    _, folder = trained_mlp
    out = tmp_path / "strict"
    r = run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--precision", "fp16",
                "--trt-atol", "0", "--trt-rtol", "0", "-o", out)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: TensorRT fp16 outputs differ from onnxruntime on 64 samples: max abs diff")
    assert lines[0].endswith("; raise --trt-atol/--trt-rtol/--trt-min-top1 if the difference is expected")
    assert not out.exists() and not list(tmp_path.glob(".strict*"))


def test_engine_checks_on_load(run_cli, fake_toolkit, trained_mlp, tmp_path):
    _, folder = trained_mlp
    out = tmp_path / "trt"
    assert run_cli("export", folder, "--data", "sklearn:digits", "--format", "tensorrt", "--no-verify",
                   "-o", out).exit_code == 0
    engine = out / "model.engine"
    original = engine.read_bytes()
    engine.write_bytes(original[:100])
    r = run_cli("evaluate", out, "--data", "sklearn:digits", "--no-latency")
    assert r.exit_code == 2  # checked by the engine loader, or earlier by the artifact loader's file hashes
    assert re.search(r"model\.engine (is truncated or corrupt \(sha256 differs from its manifest\)|does not match "
                     r"the sha256 recorded)", r.stderr), r.stderr
    engine.write_bytes(original)  # intact again: now only the GPU differs
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["metadata"]["tensorrt"]["compute_capability"] = "9.0"
    (out / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("evaluate", out, "--data", "sklearn:digits", "--no-latency")
    assert r.exit_code == 2
    assert "was built for compute capability 9.0; this GPU is 8.6; rebuild the engine on this machine" in r.stderr


@pytest.mark.parametrize("symmetric", [False, True], ids=["uint8-refused", "int8-qdq-builds"])
def test_qdq_model_from_the_quantize_stage(fake_toolkit, trained_mlp, digits, tmp_path, symmetric):
    from modelpress.compress.export import ExportConfig
    from modelpress.compress.quantize import QuantizeConfig
    from modelpress.compress.registry import StageContext, run_stage
    from modelpress.errors import InputError

    log, _ = fake_toolkit
    artifact, _ = trained_mlp
    train, test = digits
    options = {"activation_type": "int8", "symmetric_activations": True} if symmetric else {}
    ctx = StageContext(work_dir=tmp_path / "q", train=train, eval=test, calibration=train)
    qdq = run_stage(artifact, QuantizeConfig(mode="static", **options), ctx).save(tmp_path / "q")
    ctx = StageContext(work_dir=tmp_path / "e", train=train, eval=test, calibration=train)
    config = ExportConfig(format="tensorrt", precision="int8")
    if not symmetric:
        with pytest.raises(InputError, match=r"Q/DQ nodes TensorRT cannot build \(first: .*uint8 zero point\).*"
                                             r"--activation-type int8 --symmetric-activations"):
            run_stage(qdq, config, ctx)
        return
    from modelpress.compress.tensorrt import qdq_info
    from modelpress.onnx_utils import load_onnx

    qdq_nodes = qdq_info(load_onnx(qdq.path))["nodes"]
    engine = run_stage(qdq, config, ctx)
    meta = engine.metadata["tensorrt"]
    assert meta["int8_mode"] == "qdq" and meta["calibration"] is None and meta["builder_flags"] == []
    assert meta["strongly_typed"] is True and meta["qdq"] == {"source": "model", "nodes": qdq_nodes}
    assert "build flags=[] calibration_batches=0 strongly_typed" in log
    assert not (tmp_path / "e" / "model.qdq.onnx").exists()  # an already quantized model is built as it is
    assert engine.metadata["verification"]["passed"] and engine.metadata["verification"]["n_samples"] == 450
