"""Fuzz manifest.json: any edit of any field gives success or exit 2 — never another exit code — and never
imports a module outside modelpress's allow-list (issue 14)."""

from __future__ import annotations

import copy
import importlib
import json
import shutil
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BAIT = "mp_fuzz_bait_zz"
CODE_REFS = [f"{BAIT}:make", "subprocess:call", "os:system", "builtins:eval", "importlib:import_module"]
FORBIDDEN = {BAIT, "subprocess", "os", "builtins", "importlib"}

PATHS = [("format",), ("source",), ("inputs",), ("n_classes",), ("class_names",), ("builder",), ("transforms",),
         ("history",), ("metadata",), ("files",), ("manifest_version",), ("builder", "ref"), ("builder", "kwargs"),
         ("builder", "kwargs", "hidden"), ("builder", "kwargs", "input_shape"), ("builder", "kwargs", "n_classes"),
         ("builder", "shapes"), ("builder", "resized"), ("inputs", 0, "shape"), ("inputs", 0, "dtype"),
         ("inputs", 0, "name"), ("files", "model.safetensors")]

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(CODE_REFS + ["zoo:mlp", "zoo:cnn", "hf:.", "zoo:../x",
                                                                       "torch", "float16", "../model.safetensors"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=12)
_builders = st.fixed_dictionaries({"ref": st.sampled_from(CODE_REFS), "kwargs": st.dictionaries(
    st.sampled_from(["args", "input_shape", "n_classes", "hidden", "command"]), _values, max_size=3)})


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory):
    from modelpress.data import load_data
    from modelpress.sources import load_model

    root = tmp_path_factory.mktemp("fuzzman")
    marker = root / "IMPORTED"
    (root / f"{BAIT}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).touch()
        def make(**kw):
            Path({str(marker)!r}).touch()
    """))
    folder = root / "art"
    load_model("zoo:mlp", data=load_data("sklearn:iris", split="test"), kwargs={"hidden": [8]}).save(folder)
    sys.path.insert(0, str(root))
    yield folder, marker
    sys.path.remove(str(root))


def _set(doc, path, value):
    target = doc
    for key in path[:-1]:
        if isinstance(target, dict) and key in target and isinstance(target[key], (dict, list)):
            target = target[key]
        elif isinstance(target, list) and isinstance(key, int) and key < len(target):
            target = target[key]
        else:
            return
    if isinstance(target, dict):
        target[path[-1]] = value
    elif isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target):
        target[path[-1]] = value


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(_values, _builders)), min_size=1, max_size=3))
def test_any_manifest_edit_is_success_or_exit_2_and_imports_nothing(run_cli, seed_folder, tmp_path_factory,
                                                                     monkeypatch, edits):
    folder, marker = seed_folder
    work = tmp_path_factory.mktemp("case")
    art = work / "art"
    shutil.copytree(folder, art)
    doc = json.loads((art / "manifest.json").read_text())
    original = copy.deepcopy(doc)
    for path, value in edits:
        _set(doc, path, value)
    (art / "manifest.json").write_text(json.dumps(doc))
    imported: list[str] = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    r = run_cli("evaluate", art, "--data", "sklearn:iris", "--no-latency", "--out", work / "r")
    assert r.exit_code in (0, 2), (doc, r.stderr)
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and BAIT not in sys.modules
    assert not FORBIDDEN & {name.split(".")[0] for name in imported}, imported
    if doc == original:
        assert r.exit_code == 0, r.stderr
