"""Every registered backend through the same contract (scikit-learn's test_common.py is the model).

A new backend added to ``modelpress.runtime.sessions.BACKENDS`` (in modelpress or through the ``modelpress.backends``
entry points) gets these tests for free: a well-formed declaration, exit 2 for an artifact of a format it does not
run, exit 3 (or nothing) from its availability check, and — for the formats these tests can build here (torch, ONNX)
— outputs that reproduce the torch model's.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelpress.artifacts import FORMATS
from modelpress.errors import BackendUnavailable, InputError
from modelpress.runtime.sessions import BACKENDS, make_runner

NAMES = list(BACKENDS.names())


@pytest.fixture(scope="module")
def iris():
    from modelpress.data import load_data

    return load_data("sklearn:iris", split="test")


@pytest.fixture(scope="module")
def models(iris, tmp_path_factory):
    """The same tiny untrained MLP as a torch artifact and as its ONNX export, by format."""
    from modelpress.runtime.onnx_export import export_torch_onnx
    from modelpress.sources import load_model

    torch_model = load_model("zoo:mlp", data=iris, kwargs={"hidden": [8]})
    folder = tmp_path_factory.mktemp("backend-contracts")
    onnx_model = export_torch_onnx(torch_model, folder / "mlp.onnx", opset=18, exporter="torchscript",
                                   dynamic_batch=True)
    return {"torch": torch_model, "onnx": onnx_model}


@pytest.mark.parametrize("name", NAMES)
def test_declaration_is_well_formed(name):
    backend = BACKENDS.get(name)
    assert backend.name == name and callable(backend.runner)
    assert backend.formats and set(backend.formats) <= set(FORMATS), backend.formats
    assert backend.check_available is None or callable(backend.check_available)
    assert backend.latency is None or callable(backend.latency)


@pytest.mark.parametrize("name", NAMES)
def test_an_artifact_of_another_format_is_exit_2_naming_the_backend(name, models):
    other = next((m for fmt, m in models.items() if fmt not in BACKENDS.get(name).formats), None)
    if other is None:
        pytest.skip(f"{name} runs every format these tests build")
    with pytest.raises(InputError, match=f"backend {name} runs") as info:
        make_runner(other, name, threads=1)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name", NAMES)
def test_availability_check_is_exit_3_or_nothing(name):
    check = BACKENDS.get(name).check_available
    if check is None:
        return
    try:
        check()
    except BackendUnavailable as exc:
        assert exc.exit_code == 3 and name in exc.format_message()


@pytest.mark.parametrize("name", NAMES)
def test_outputs_reproduce_the_torch_model(name, models, iris):
    backend = BACKENDS.get(name)
    fmt = next((f for f in backend.formats if f in models), None)
    if fmt is None:
        pytest.skip(f"{name} runs {backend.formats}, which these tests cannot build here")
    batch = {k: v[:16] for k, v in iris.inputs.items()}
    want = make_runner(models["torch"], "torch", threads=1)(batch)
    got = make_runner(models[fmt], name, threads=2)(batch)
    assert got.dtype == np.float32 and got.shape == (16, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
