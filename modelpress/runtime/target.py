"""The CPU an INT8 model is quantized for (its *target*), and how that CPU's integer kernels add up products.

Why this exists: the same INT8 ONNX model gives different outputs on different x86 CPUs. onnxruntime's u8×s8
kernels (MLAS) multiply uint8 activations by int8 weights. With VNNI (``vpdpbusd``, AVX-512 VNNI or AVX-VNNI) and
with AMX, four products are summed straight into int32: exact. Without VNNI (AVX2, and AVX-512 without VNNI) the
kernel uses ``vpmaddubsw``, which adds each *pair* of products into int16 **with saturation** (±32767), then widens.
Two products of 255 × 127 already overflow, so activations near the top of their range and large weights clip.
onnxruntime's docs recommend ``reduce_range`` (7-bit weights) on such CPUs; PyTorch (issue 103646) and OpenVINO
(NNCF ``OverflowFix``) report the same collapse. On an AVX2-only CPU it dropped the demo's quantized CNN from
99.1 % to 86.7 % accuracy, while the same model kept 99 % on AVX-512 VNNI.

Detection reads the CPU's own CPUID answers through numpy's feature table (``numpy._core._multiarray_umath
.__cpu_features__``), which is what the process really runs on (also under an emulator, where ``/proc/cpuinfo``
still describes the real host). ``/proc/cpuinfo`` only adds what numpy does not list (AVX-VNNI, AMX), and only when
it agrees with numpy on AVX-512 (otherwise it describes another CPU than the one executing us).

Tests and users can force the detected host kind with the environment variable ``MODELPRESS_HOST_TARGET``
(one of :data:`TARGET_NAMES`), so both branches are exercised on any machine.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InputError

#: Environment variable that overrides the detected host kind (tests force both kinds with it).
HOST_ENV = "MODELPRESS_HOST_TARGET"

#: How a target's u8×s8 kernel accumulates products.
EXACT_INT32 = "int32-exact"
PAIRWISE_INT16_SATURATING = "int16-pairs-saturating"


@dataclass(frozen=True)
class Target:
    """One kind of CPU an INT8 model can be built for.

    Attributes:
        name: the user-facing name (``--target NAME``, YAML ``target:``, ``manifest.json``).
        description: one line for reports.
        arch: ``x86_64`` or ``arm64``: a host can time a target's kernels only on the same architecture.
        u8s8_accumulation: :data:`EXACT_INT32` or :data:`PAIRWISE_INT16_SATURATING` (see the module docstring).
    """

    name: str
    description: str
    arch: str
    u8s8_accumulation: str

    @property
    def saturates(self) -> bool:
        """True when u8×s8 products are added in pairs into int16 with saturation (no VNNI)."""
        return self.u8s8_accumulation == PAIRWISE_INT16_SATURATING

    def kernels_match(self, other: Target) -> bool:
        """Whether a model built for ``self`` computes the same integers on ``other`` (same accumulation)."""
        return self.arch == other.arch and self.u8s8_accumulation == other.u8s8_accumulation


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("x86-avx2", "x86-64 with AVX2, no VNNI (u8×s8 pairs saturate in int16)", "x86_64",
               PAIRWISE_INT16_SATURATING),
        Target("x86-avx512", "x86-64 with AVX-512, no VNNI (u8×s8 pairs saturate in int16)", "x86_64",
               PAIRWISE_INT16_SATURATING),
        Target("x86-vnni", "x86-64 with VNNI (AVX-512 VNNI, AVX-VNNI or AMX: exact int32 dot products)", "x86_64",
               EXACT_INT32),
        Target("arm64", "64-bit Arm with dot-product instructions (exact int32)", "arm64", EXACT_INT32),
    )
}
TARGET_NAMES: tuple[str, ...] = ("auto", *TARGETS)

#: Ops quantized per mode when the user names none (``--op-types``). Dynamic: no Conv, since ConvInteger has no
#: fast CPU kernel (CNNs take static mode); static: compute ops plus the data-movement ops around them so that
#: the QDQ pairs between them fold away. Here (not in compress/) because ``explain`` reports them too.
DYNAMIC_OPS = ("MatMul", "Gather", "Attention", "LSTM", "EmbedLayerNormalization")
STATIC_OPS = ("Conv", "MatMul", "Gemm", "Gather", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Clip",
              "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Pad", "Resize", "Slice")


def _read_cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _numpy_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # type: ignore[no-redef]
        except ImportError:
            return {}
    return dict(__cpu_features__)


def host_features() -> frozenset[str]:
    """Lower-case feature names of the CPU executing this process that decide INT8 kernels.

    Possible members: ``avx2``, ``avx512f``, ``avx512bw``, ``avx512_vnni``, ``avx_vnni``, ``amx_int8``,
    ``asimddp`` (Arm dot product).
    """
    numpy_flags = _numpy_features()
    cpuinfo = _read_cpuinfo_flags()
    found: set[str] = set()
    if numpy_flags:
        for numpy_name, name in (("AVX2", "avx2"), ("AVX512F", "avx512f"), ("AVX512BW", "avx512bw"),
                                 ("AVX512VNNI", "avx512_vnni"), ("ASIMDDP", "asimddp")):
            if numpy_flags.get(numpy_name):
                found.add(name)
        # numpy does not list AVX-VNNI or AMX; trust /proc/cpuinfo for them only when it describes this CPU
        # (under an emulator it describes the real host: its AVX-512 answer then disagrees with CPUID's).
        if ("avx512f" in cpuinfo) == ("avx512f" in found) and "avx2" in found:
            found.update(flag for flag in ("avx_vnni", "amx_int8") if flag in cpuinfo)
    else:
        found.update(flag for flag in ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                                       "asimddp") if flag in cpuinfo)
    return frozenset(found)


def target_for_features(features: frozenset[str] | set[str], machine: str) -> Target:
    """The target kind of a CPU with these features (pure: the tests feed it every kind)."""
    machine = machine.lower()
    if machine in ("aarch64", "arm64", "armv8l"):
        return TARGETS["arm64"]
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(features):
        return TARGETS["x86-vnni"]
    if "avx512bw" in features:
        return TARGETS["x86-avx512"]
    return TARGETS["x86-avx2"]


@lru_cache(maxsize=1)
def _detected_host() -> Target:
    return target_for_features(host_features(), platform.machine())


def detect_host() -> Target:
    """The target kind of the CPU running this process; ``MODELPRESS_HOST_TARGET`` overrides it."""
    forced = os.environ.get(HOST_ENV, "").strip()
    if forced:
        if forced not in TARGETS:
            raise InputError(f"{HOST_ENV}={forced!r} is not a target", hint=f"use one of {', '.join(TARGETS)}")
        return TARGETS[forced]
    return _detected_host()


def resolve_target(name: str | None) -> Target:
    """``auto``/``None`` → the host; a known name → that target; anything else → InputError listing the names."""
    if name is None or name == "auto":
        return detect_host()
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r}", hint=f"use one of {', '.join(TARGET_NAMES)}")
    return TARGETS[name]
