"""The runner, calibrator batching and CUDA-event latency loop, driven by numpy fakes of CUDA and an engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from modelpress.compress.tensorrt import CalibrationFeeder, make_entropy_calibrator
from modelpress.errors import InputError
from modelpress.runtime.latency import LatencyConfig
from modelpress.runtime.tensorrt import (
    COMPUTE_BACKEND,
    COPY_BACKEND,
    TensorRTSession,
    measure_device_latency,
    time_session,
)


def _x(n, features=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


# ---- session: chunking, padding, casts, shape checks ---------------------------------------------------------------
def test_run_chunks_to_the_max_batch_and_matches_numpy(fake_cuda, fake_engine_cls):
    engine = fake_engine_cls(fake_cuda, batch=(1, 8, 16))
    session = TensorRTSession(engine, fake_cuda)
    x = _x(40)
    out = session.run({"input": x})
    np.testing.assert_allclose(out, x @ engine.weight, rtol=1e-6)
    assert out.dtype == np.float32 and out.shape == (40, 3)
    assert engine.executed_batches == [16, 16, 8]
    assert fake_cuda.syncs == 3


def test_small_batches_are_padded_to_the_min_batch_and_trimmed(fake_cuda, fake_engine_cls):
    engine = fake_engine_cls(fake_cuda, batch=(4, 8, 16))
    session = TensorRTSession(engine, fake_cuda)
    x = _x(1)
    out = session.run({"whatever_name": x})  # one unnamed input maps by position
    assert engine.executed_batches == [4] and out.shape == (1, 3)
    np.testing.assert_allclose(out, x @ engine.weight, rtol=1e-6)


def test_integer_inputs_are_cast_to_the_engine_dtype(fake_cuda, fake_engine_cls):
    engine = fake_engine_cls(fake_cuda, kind="text", seq=(1, 8, 12))
    session = TensorRTSession(engine, fake_cuda)
    ids = np.arange(30, dtype=np.int64).reshape(3, 10)
    out = session.run({"input_ids": ids})
    np.testing.assert_array_equal(out[:, 0], ids.sum(1))
    h2d = [c for c in fake_cuda.copies if c[0] == "h2d"]
    assert h2d[-1][2] == 3 * 10 * 4  # int64 ids arrived as int32


def test_sequence_longer_than_the_profile_is_an_input_error(fake_cuda, fake_engine_cls):
    session = TensorRTSession(fake_engine_cls(fake_cuda, kind="text", seq=(1, 8, 12)), fake_cuda)
    with pytest.raises(InputError, match=r"input 'input_ids' dim 1 = 20 is outside the engine's profile \[1, 12\]"):
        session.run({"input_ids": np.zeros((2, 20), dtype=np.int64)})


@pytest.mark.parametrize("batch, match", [
    ({"input": np.zeros((2, 5), np.float32)}, r"input 'input' dim 1 = 5 is outside the engine's profile \[4, 4\]"),
    ({"input": np.zeros((2, 4, 1), np.float32)}, r"expects input 'input' of rank 2, got shape \(2, 4, 1\)"),
    ({"a": np.zeros((2, 4)), "b": np.zeros((2, 4))}, r"expects inputs \['input'\] but the data has \['a', 'b'\]"),
])
def test_wrong_inputs_are_input_errors(fake_cuda, fake_engine_cls, batch, match):
    session = TensorRTSession(fake_engine_cls(fake_cuda), fake_cuda)
    with pytest.raises(InputError, match=match):
        session.run(batch)


def test_buffers_are_sized_for_the_max_profile_and_freed_on_close(fake_cuda, fake_engine_cls):
    session = TensorRTSession(fake_engine_cls(fake_cuda, batch=(1, 8, 16)), fake_cuda)
    sizes = sorted(buf.size for buf in fake_cuda.mem.values())
    assert sizes == [16 * 3 * 4, 16 * 4 * 4]  # logits (16, 3) and input (16, 4), float32
    session.close()
    assert not fake_cuda.mem and len(fake_cuda.freed) == 2 and fake_cuda.streams_open == 0
    session.close()  # idempotent


# ---- latency: CUDA-event samples and the stop rules ----------------------------------------------------------------
class StepTimer:
    """A host clock that advances ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_bound_batch_times_kernel_alone_and_with_copies(fake_cuda, fake_engine_cls):
    session = TensorRTSession(fake_engine_cls(fake_cuda, batch=(1, 8, 16)), fake_cuda)
    x = _x(8)
    bound = session.bind({"input": x})
    assert bound.device_ms(copies=False) == pytest.approx(2.0)
    in_kb, out_kb = 8 * 4 * 4 / 1024, 8 * 3 * 4 / 1024
    assert bound.device_ms(copies=True) == pytest.approx(2.0 + 0.5 * (in_kb + out_kb))
    np.testing.assert_allclose(bound.output(), x @ session.engine.weight, rtol=1e-6)
    bound.close()
    assert fake_cuda.host_freed == fake_cuda.host_allocs == 2


def test_bind_refuses_a_batch_outside_the_profile(fake_cuda, fake_engine_cls):
    session = TensorRTSession(fake_engine_cls(fake_cuda, batch=(2, 8, 16)), fake_cuda)
    with pytest.raises(InputError, match=r"latency batch size 32 is outside the engine's batch range \[2, 16\]"):
        session.bind({"input": _x(32)})


def test_measure_device_latency_follows_the_stop_rules():
    values = iter(np.linspace(1.0, 2.0, 1000))
    config = LatencyConfig(warmup_min_calls=5, warmup_min_s=0.0, min_calls=50, min_s=0.0, max_calls=200)
    stats, samples = measure_device_latency(lambda: next(values), config=config, batch_size=8, threads=1,
                                            backend="tensorrt", includes_copies=False, timer=StepTimer(1e-4))
    assert stats["warmup"] == 5 and stats["n"] == 50 and len(samples) == 50
    np.testing.assert_allclose(samples, np.linspace(1.0, 2.0, 1000)[5:55])
    assert stats["median_ms"] == pytest.approx(float(np.median(samples)))
    assert stats["p99_ms"] == pytest.approx(float(np.sort(samples)[49]))  # nearest rank: ceil(0.99*50) = 50th
    assert stats["clock"] == "cuda_events" and stats["includes_copies"] is False
    assert stats["throughput_per_s"] == pytest.approx(8 / (stats["median_ms"] / 1e3))


def test_measure_device_latency_caps_by_host_time():
    config = LatencyConfig(warmup_min_calls=0, warmup_min_s=0.0, min_calls=10, min_s=0.0, max_calls=100, max_s=0.5)
    stats, _ = measure_device_latency(lambda: 1.0, config=config, batch_size=1, threads=1, backend="tensorrt",
                                      includes_copies=True, timer=StepTimer(0.125))
    # readings: warm-up start 0.125 and check 0.25; t0 = 0.375; after call k the clock reads 0.375 + 0.125 k,
    # so the 4th call reaches max_s = 0.5 s although min_calls = 10 was not met
    assert stats["n"] == 4
    assert stats["warmup"] == 0 and stats["unstable"] is False


def test_time_session_gives_two_rows_with_cold_start(fake_cuda, fake_engine_cls):
    config = LatencyConfig(warmup_min_calls=3, warmup_min_s=0.0, min_calls=20, min_s=0.0)
    sessions = []

    def make():
        sessions.append(TensorRTSession(fake_engine_cls(fake_cuda, batch=(1, 8, 16)), fake_cuda))
        return sessions[-1]

    rows = time_session(make, {"input": _x(8)}, batch_size=8, threads=2, latency=config, timer=StepTimer(1e-3))
    (compute, s1), (copy, s2) = rows
    assert (compute["backend"], copy["backend"]) == (COMPUTE_BACKEND, COPY_BACKEND) == ("tensorrt", "tensorrt+copy")
    assert compute["includes_copies"] is False and copy["includes_copies"] is True
    assert compute["median_ms"] == pytest.approx(2.0) and copy["median_ms"] > compute["median_ms"]
    assert compute["cold_start_ms"] == copy["cold_start_ms"] == pytest.approx(1.0)  # one StepTimer step
    assert compute["threads"] == 2 and compute["n"] == 20 == len(s1) == len(s2)
    assert len(sessions) == 1 and not fake_cuda.mem  # the session was closed


# ---- calibration batching ------------------------------------------------------------------------------------------
def _feeder(fake_cuda, n=100, batch_size=32, max_batches=16, names=("input",), **kw):
    return CalibrationFeeder({"input": _x(n)}, list(names), {"input": np.float32}, batch_size, max_batches,
                             fake_cuda, **kw)


def test_feeder_serves_full_batches_of_distinct_samples_then_none(fake_cuda):
    feeder = _feeder(fake_cuda, n=100, batch_size=32)
    assert feeder.n_batches == 3 and feeder.shapes == {"input": (32, 4)}
    seen = []
    while (ptrs := feeder.get_batch(["input"])) is not None:
        assert len(ptrs) == 1
        seen.append(fake_cuda.mem[ptrs[0]][: 32 * 16].view(np.float32).reshape(32, 4).copy())
    assert len(seen) == 3 and feeder.get_batch(["input"]) is None
    rows = {tuple(r) for batch in seen for r in batch}
    assert len(rows) == 96  # no sample twice; the 4 left over are dropped
    assert rows <= {tuple(r) for r in _x(100)}
    assert len(fake_cuda.mem) == 1  # one device buffer, reused
    assert feeder.describe() == {"algorithm": "entropy2", "batch_size": 32, "batches": 3, "samples": 96}
    feeder.close()
    assert not fake_cuda.mem and fake_cuda.streams_open == 0


def test_feeder_order_is_seeded(fake_cuda):
    a, b, c = (_feeder(fake_cuda, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)


def test_feeder_caps_batches_and_shrinks_a_batch_larger_than_the_data(fake_cuda):
    assert _feeder(fake_cuda, n=1000, batch_size=10, max_batches=4).n_batches == 4
    small = _feeder(fake_cuda, n=5, batch_size=32)
    assert (small.batch_size, small.n_batches, small.shapes["input"]) == (5, 1, (5, 4))


def test_feeder_maps_one_unnamed_input_and_casts_dtypes(fake_cuda):
    ids = np.arange(24, dtype=np.int64).reshape(6, 4) - 12  # negative ids too: a wrong cast would show
    feeder = CalibrationFeeder({"x": ids}, ["input_ids"], {"input_ids": np.int32}, 3, 2, fake_cuda)
    (ptr,) = feeder.get_batch(["input_ids"])
    assert fake_cuda.mem[ptr].size == 3 * 4 * 4  # the buffer holds 3×4 int32, not int64
    got = fake_cuda.mem[ptr].view(np.int32).reshape(3, 4)
    np.testing.assert_array_equal(got, ids[feeder.batch_indices(0)])  # the seeded rows, values intact


@pytest.mark.parametrize("inputs, names, match", [
    ({"input": np.zeros((0, 4), np.float32)}, ["input"], "calibration data is empty"),
    ({"a": np.zeros((4, 4)), "b": np.zeros((4, 4))}, ["input"], r"calibration data has inputs \['a', 'b'\]"),
])
def test_feeder_rejects_bad_calibration_data(fake_cuda, inputs, names, match):
    with pytest.raises(InputError, match=match):
        CalibrationFeeder(inputs, names, {}, 4, 2, fake_cuda)


def test_calibrator_keeps_callback_errors_for_the_build(fake_cuda):
    class FakeTrt:  # just enough of the tensorrt module to subclass the calibrator
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

    feeder = _feeder(fake_cuda, n=64, batch_size=32)
    calibrator = make_entropy_calibrator(FakeTrt, feeder)
    assert calibrator.get_batch_size() == 32
    assert isinstance(calibrator.get_batch(["input"])[0], int)
    assert calibrator.get_batch(["nope"]) is None  # an error inside TensorRT's callback ends calibration...
    assert isinstance(feeder.error, InputError)  # ...and is kept for build_engine to raise
    calibrator.write_calibration_cache(memoryview(b"cache"))
    assert feeder.cache == b"cache" and calibrator.read_calibration_cache() is None


# ---- the evaluator: metrics through the runner, two latency rows through the hook ----------------------------------
def test_evaluator_reports_compute_and_copy_rows(request, fake_cuda, fake_engine_cls, tmp_path):
    from modelpress.artifacts import InputSpec, ModelArtifact
    from modelpress.data import load_data
    from modelpress.runtime import sessions as backends
    from modelpress.evaluate.evaluator import EvalConfig, evaluate

    data = load_data("sklearn:iris", split="test")
    weight = fake_engine_cls(fake_cuda).weight

    def make() -> TensorRTSession:
        return TensorRTSession(fake_engine_cls(fake_cuda, batch=(1, 8, 16)), fake_cuda)

    real = backends.BACKENDS.get("tensorrt")
    fake = dataclasses.replace(
        real, check_available=None,
        runner=lambda artifact, threads: backends.Runner("tensorrt", threads, ("input",), make().run),
        latency=lambda artifact, batch, **options: time_session(make, batch, **options))
    backends.BACKENDS.add("tensorrt", fake, replace=True)
    request.addfinalizer(lambda: backends.BACKENDS.add("tensorrt", real, replace=True))
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"\0" * 100)
    artifact = ModelArtifact("tensorrt", (InputSpec("input", (None, 4)),), 3, "fake", path=engine_file)
    latency = LatencyConfig(warmup_min_calls=2, warmup_min_s=0.0, min_calls=10, min_s=0.0)
    result = evaluate(artifact, data, config=EvalConfig(batch_sizes=(1, 8), threads=1, latency=latency))
    assert [(r["backend"], r["batch_size"]) for r in result.latency] == [
        ("tensorrt", 1), ("tensorrt+copy", 1), ("tensorrt", 8), ("tensorrt+copy", 8)]
    assert set(result.latency_samples) == {"tensorrt::b1", "tensorrt+copy::b1", "tensorrt::b8", "tensorrt+copy::b8"}
    np.testing.assert_allclose(result.logits, data.inputs["input"] @ weight, rtol=1e-5)
    assert result.metrics["n_samples"] == len(data) and result.footprint["size_bytes"] == 100
