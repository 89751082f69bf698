"""CPU targets: every kind of CPU maps to the right target, the host can be forced, unknown names list the known."""

from __future__ import annotations

import pytest

from modelpress.errors import InputError
from modelpress.runtime import target as t


@pytest.mark.parametrize(("features", "machine", "expected"), [
    ({"avx2"}, "x86_64", "x86-avx2"),                                        # laptops, many cloud VMs
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", "x86-avx512"),              # Skylake-SP: AVX-512, no VNNI
    ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "x86-vnni"),  # Cascade Lake and later
    ({"avx2", "avx_vnni"}, "x86_64", "x86-vnni"),                            # Alder Lake: AVX-VNNI without AVX-512
    ({"avx2", "avx512f", "avx512bw", "amx_int8"}, "x86_64", "x86-vnni"),     # AMX
    (set(), "x86_64", "x86-avx2"),                                           # nothing known: the saturating kind
    ({"asimddp"}, "aarch64", "arm64"),
    (set(), "arm64", "arm64"),
])
def test_features_map_to_targets(features, machine, expected):
    assert t.target_for_features(frozenset(features), machine).name == expected


def test_saturation_and_kernel_match_follow_the_accumulation():
    assert [name for name, target in t.TARGETS.items() if target.saturates] == ["x86-avx2", "x86-avx512"]
    assert t.TARGETS["x86-avx2"].kernels_match(t.TARGETS["x86-avx512"])
    assert not t.TARGETS["x86-avx2"].kernels_match(t.TARGETS["x86-vnni"])
    assert not t.TARGETS["x86-vnni"].kernels_match(t.TARGETS["arm64"])  # same arithmetic, another architecture


@pytest.mark.parametrize("name", list(t.TARGETS))
def test_host_can_be_forced(monkeypatch, name):
    monkeypatch.setenv(t.HOST_ENV, name)
    assert t.detect_host().name == name and t.resolve_target("auto").name == name
    assert t.resolve_target(None).name == name


def test_a_bad_forced_host_and_an_unknown_target_are_refused(monkeypatch):
    monkeypatch.setenv(t.HOST_ENV, "pentium")
    with pytest.raises(InputError, match=r"MODELPRESS_HOST_TARGET='pentium' is not a target"):
        t.detect_host()
    with pytest.raises(InputError, match=r"unknown target 'riscv'") as info:
        t.resolve_target("riscv")
    assert info.value.hint == "use one of auto, x86-avx2, x86-avx512, x86-vnni, arm64"


def test_detected_host_agrees_with_numpys_cpu_features(monkeypatch):
    monkeypatch.delenv(t.HOST_ENV, raising=False)
    numpy_flags = t._numpy_features()
    if not numpy_flags:
        pytest.skip("this numpy exposes no CPU feature table")
    host = t.detect_host()
    if numpy_flags.get("AVX512VNNI"):
        assert host.name == "x86-vnni"
    elif numpy_flags.get("AVX2") and not numpy_flags.get("AVX512BW"):
        assert host.name in ("x86-avx2", "x86-vnni")  # AVX-VNNI is not in numpy's table
