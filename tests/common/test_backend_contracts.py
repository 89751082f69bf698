"""Every registered backend as a user reaches it: ``evaluate --backend`` and YAML ``evaluate.backends``.

The library-level contract (a well-formed declaration, exit 2 for a format it does not run, outputs equal to
torch's) is in ``tests/runtime/test_backend_contracts.py``; this file adds what the interfaces promise for each entry
of :data:`~modelpress.runtime.sessions.BACKENDS`: an unknown name is exit 2 listing every registered name, each
available backend evaluates the tiny model end to end with logits that agree with torch, and a backend that cannot
run here, asked for explicitly, is exit 3 with one line (TensorRT on a machine without a GPU).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.errors import BackendUnavailable, InputError
from modelpress.pipeline import parse_spec
from modelpress.runtime.sessions import BACKENDS, make_runner

from .conftest import DATA

NAMES = list(BACKENDS.names())


def _available(name: str) -> bool:
    check = BACKENDS.get(name).check_available
    try:
        if check is not None:
            check()
    except BackendUnavailable:
        return False
    return True


AVAILABLE = [n for n in NAMES if _available(n)]
UNAVAILABLE = [n for n in NAMES if n not in AVAILABLE]


def _artifact_for(name: str, tiny_torch, tiny_onnx):
    """The tiny model in a format ``name`` runs (the formats these tests can build: torch and ONNX)."""
    from modelpress.sources import load_model

    formats = BACKENDS.get(name).formats
    if "torch" in formats:
        return str(tiny_onnx), tiny_torch  # the folder is unused for torch: the model is passed whole
    if "onnx" in formats:
        return str(tiny_onnx), load_model(str(tiny_onnx))
    pytest.fail(f"backend {name} runs {formats}: add a way to build that format from a torch model here")


def test_an_unknown_backend_is_exit_2_listing_every_name(run_cli, tmp_path):
    result = run_cli("evaluate", "zoo:mlp", "--data", DATA, "--backend", "no-such-backend", "--out", tmp_path)
    assert result.exit_code == 2
    assert all(name in result.stderr for name in NAMES), result.stderr
    with pytest.raises(InputError, match="unknown backend 'no-such-backend'") as info:
        make_runner(None, "no-such-backend")  # type: ignore[arg-type]  (refused before the artifact is read)
    assert all(name in info.value.format_message() for name in NAMES)


def test_an_unknown_backend_in_yaml_is_exit_2_naming_the_key():
    spec = f"name: b\nmodel: zoo:mlp\ndata: {DATA}\nstages:\n  - type: export\nevaluate:\n  backends: [no-such-backend]\n"
    with pytest.raises(InputError) as info:
        parse_spec(spec, source="p.yaml")
    message = info.value.format_message()
    assert "p.yaml:7" in message and "backends" in message and "no-such-backend" in message, message


@pytest.mark.parametrize("name", AVAILABLE)
def test_an_available_backend_evaluates_the_tiny_model_like_torch(name, run_cli, tiny_torch, tiny_onnx, iris_test,
                                                                  tmp_path):
    folder, artifact = _artifact_for(name, tiny_torch, tiny_onnx)
    want = make_runner(tiny_torch, "torch", threads=1)(iris_test.inputs)
    got = make_runner(artifact, name, threads=1)(iris_test.inputs)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    if artifact is tiny_torch:
        return  # the CLI reaches torch models by reference; the ONNX folder below covers the command for onnx
    result = run_cli("evaluate", folder, "--data", DATA, "--backend", name, "--no-latency", "--json",
                     "--out", tmp_path, "--name", "e")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["accuracy"] is not None


@pytest.mark.parametrize("name", UNAVAILABLE or [pytest.param("none", marks=pytest.mark.skip(
    reason="every registered backend can run on this machine"))])
def test_an_unavailable_backend_asked_for_explicitly_is_exit_3_in_one_line(name, run_cli, tiny_onnx, tmp_path):
    result = run_cli("evaluate", str(tiny_onnx), "--data", DATA, "--backend", name, "--out", tmp_path, "--name", "e")
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], lines
    assert "Traceback" not in result.stderr and not (tmp_path / "e" / "report.json").exists()
