"""Numpy stand-ins for CUDA and a TensorRT engine, so the runner, calibrator and latency code run without a GPU.

``FakeCuda`` keeps "device memory" as numpy byte arrays keyed by integer pointers and a virtual device clock that
copies and kernels advance, so CUDA-event intervals are exact numbers. ``FakeEngine`` computes ``x @ W`` (or row
sums of integer ids) from the memory at the addresses it was given, like an execution context would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from modelpress.runtime.tensorrt import TensorInfo

KERNEL_MS = 2.0
COPY_MS_PER_KB = 0.5


class FakeCuda:
    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}
        self.next_ptr = 0x1000
        self.freed: list[int] = []
        self.host_allocs = 0
        self.host_freed = 0
        self.copies: list[tuple[str, int, int]] = []
        self.clock_ms = 0.0
        self.streams_open = 0
        self.syncs = 0

    def malloc(self, nbytes: int) -> int:
        ptr = self.next_ptr
        self.next_ptr += int(nbytes) + 256
        self.mem[ptr] = np.zeros(max(1, int(nbytes)), dtype=np.uint8)
        return ptr

    def free(self, ptr: int) -> None:
        del self.mem[ptr]
        self.freed.append(ptr)

    def host_empty(self, nbytes: int) -> np.ndarray:
        self.host_allocs += 1
        return np.zeros(int(nbytes), dtype=np.uint8)

    def host_free(self, array: np.ndarray) -> None:
        self.host_freed += 1

    def _advance(self, nbytes: int) -> None:
        self.clock_ms += COPY_MS_PER_KB * nbytes / 1024

    def h2d(self, dst: int, src: np.ndarray, stream: object) -> None:
        raw = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        buf = self.mem[dst]
        if raw.size > buf.size:
            raise AssertionError(f"h2d of {raw.size} bytes into a {buf.size}-byte buffer")
        buf[: raw.size] = raw
        self.copies.append(("h2d", dst, raw.size))
        self._advance(raw.size)

    def d2h(self, dst: np.ndarray, src: int, stream: object) -> None:
        flat = dst.reshape(-1).view(np.uint8)
        flat[:] = self.mem[src][: flat.size]
        self.copies.append(("d2h", src, flat.size))
        self._advance(flat.size)

    def stream_create(self) -> str:
        self.streams_open += 1
        return "stream"

    def stream_sync(self, stream: object) -> None:
        self.syncs += 1

    def stream_destroy(self, stream: object) -> None:
        self.streams_open -= 1

    def event_create(self) -> dict[str, float]:
        return {"t": math.nan}

    def event_record(self, event: dict[str, float], stream: object) -> None:
        event["t"] = self.clock_ms

    def event_elapsed_ms(self, start: dict[str, float], end: dict[str, float]) -> float:
        return end["t"] - start["t"]

    def event_destroy(self, event: dict[str, float]) -> None:
        event["t"] = math.nan


@dataclass
class Profile:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


class FakeEngine:
    """A linear classifier ``logits = x @ W`` (kind="dense") or per-row id sums (kind="text") behind EngineIO."""

    def __init__(self, cuda: FakeCuda, *, kind: str = "dense", features: int = 4, classes: int = 3,
                 batch: tuple[int, int, int] = (1, 8, 16), seq: tuple[int, int, int] = (1, 8, 16)) -> None:
        self.cuda, self.kind = cuda, kind
        self.weight = np.arange(features * classes, dtype=np.float32).reshape(features, classes) / 10 - 0.5
        if kind == "dense":
            inp = TensorInfo("input", True, np.dtype(np.float32), (batch[0], features), (batch[1], features),
                             (batch[2], features))
        else:
            inp = TensorInfo("input_ids", True, np.dtype(np.int32), (batch[0], seq[0]), (batch[1], seq[1]),
                             (batch[2], seq[2]))
            classes = 2
        self.classes = classes
        self.tensors = (inp, TensorInfo("logits", False, np.dtype(np.float32)))
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executed_batches: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
        info = self.tensors[0]
        if name != info.name or not all(lo <= d <= hi for d, lo, hi in zip(shape, info.min_shape, info.max_shape)):
            raise AssertionError(f"shape {shape} for {name} is outside the profile")
        self.shapes[name] = tuple(int(d) for d in shape)

    def output_shape(self, name: str) -> tuple[int, ...]:
        return (self.shapes[self.tensors[0].name][0], self.classes)

    def set_address(self, name: str, ptr: int) -> None:
        self.addresses[name] = ptr

    def execute(self, stream: object) -> None:
        info = self.tensors[0]
        shape = self.shapes[info.name]
        n_bytes = int(np.prod(shape)) * info.dtype.itemsize
        x = self.cuda.mem[self.addresses[info.name]][:n_bytes].view(info.dtype).reshape(shape)
        out = x @ self.weight if self.kind == "dense" else np.stack([x.sum(1), -x.sum(1)], 1).astype(np.float32)
        raw = out.astype(np.float32).reshape(-1).view(np.uint8)
        self.cuda.mem[self.addresses["logits"]][: raw.size] = raw
        self.executed_batches.append(shape[0])
        self.cuda.clock_ms += KERNEL_MS


@pytest.fixture
def fake_cuda() -> FakeCuda:
    return FakeCuda()


@pytest.fixture
def fake_engine_cls() -> type[FakeEngine]:
    return FakeEngine

