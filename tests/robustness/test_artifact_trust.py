"""An artifact folder is data: a manifest never makes modelpress import or run code nobody named (issue 14).

The payload of the issue — ``"builder": {"ref": "subprocess:call", "kwargs": {"args": ["touch", MARKER]}}`` — goes
through every command that loads a model; a second payload names a module that would create the marker *when
imported*, so ``sys.modules`` proves that nothing was imported before the refusal.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

BAIT = "mp_bait_factory_zz"


@pytest.fixture(scope="module")
def clean_artifact(tmp_path_factory):
    """A tiny zoo:mlp artifact on iris (saved with file hashes)."""
    from modelpress.data import load_data
    from modelpress.sources import load_model

    folder = tmp_path_factory.mktemp("clean") / "art"
    load_model("zoo:mlp", data=load_data("sklearn:iris", split="test"), kwargs={"hidden": [8]}).save(folder)
    return folder


@pytest.fixture(scope="module")
def bait_module(tmp_path_factory):
    """A module that creates a marker file when imported and whose factory creates another when called."""
    root = tmp_path_factory.mktemp("bait")
    marker = root / "IMPORTED"
    (root / f"{BAIT}.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).touch()
        def make(input_shape=None, n_classes=3, hidden=None):
            import torch
            return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    """))
    sys.path.insert(0, str(root))
    yield marker
    sys.path.remove(str(root))
    sys.modules.pop(BAIT, None)


def _tampered(src: Path, dst: Path, builder: dict) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["builder"] = builder
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _commands(art: Path, tmp: Path, *, write: bool = True) -> dict[str, list[str]]:
    spec = tmp / "p.yaml"
    if write:
        spec.write_text(f"name: p\nmodel: {art}\ndata: {{eval: sklearn:iris}}\nstages:\n  - type: export\n")
    data = ["--data", "sklearn:iris"]
    return {
        "evaluate": ["evaluate", art, *data, "--no-latency", "--out", tmp / "rep"],
        "evaluate-reference": ["evaluate", "zoo:mlp", *data, "--no-latency", "--reference", art, "--out", tmp / "r2"],
        "export": ["export", art, *data, "-o", tmp / "o1"],
        "quantize": ["quantize", art, "--mode", "dynamic", *data, "-o", tmp / "o2"],
        "prune": ["prune", art, "--method", "magnitude", "--amount", "0.5", *data, "-o", tmp / "o3"],
        "distill-teacher": ["distill", "--teacher", art, "--student", "zoo:mlp", *data, "--epochs", "1",
                            "-o", tmp / "o4"],
        "distill-student": ["distill", "--teacher", "zoo:mlp", "--student", art, *data, "--epochs", "1",
                            "-o", tmp / "o5"],
        "explain": ["explain", art, "--reference", "zoo:mlp", *data, "--out", tmp / "r3"],
        "explain-reference": ["explain", "zoo:mlp", "--reference", art, *data, "--out", tmp / "r4"],
        "run": ["run", spec, "--out", tmp / "runs"],
        "run-dry": ["run", spec, "--dry-run", "--out", tmp / "runs2"],
    }


COMMANDS = list(_commands(Path("a"), Path("t"), write=False))


@pytest.mark.parametrize("command", COMMANDS)
def test_subprocess_payload_never_runs(run_cli, clean_artifact, tmp_path, command, monkeypatch):
    marker = tmp_path / "PWNED"
    art = _tampered(clean_artifact, tmp_path / "art", {"ref": "subprocess:call",
                                                       "kwargs": {"args": ["touch", str(marker)]}})
    imported: list[str] = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name) or real(name, *a))
    r = run_cli(*_commands(art, tmp_path)[command])
    assert r.exit_code == 2, r.stderr
    assert "subprocess:call" in r.stderr and "--model-code subprocess:call" in r.stderr, r.stderr
    assert "unexpected" not in r.stderr
    assert not marker.exists()
    assert "subprocess" not in imported


@pytest.mark.parametrize("command", COMMANDS)
def test_unnamed_factory_is_not_even_imported(run_cli, clean_artifact, bait_module, tmp_path, command):
    art = _tampered(clean_artifact, tmp_path / "art", {"ref": f"{BAIT}:make", "kwargs": {}})
    r = run_cli(*_commands(art, tmp_path)[command])
    assert r.exit_code == 2, r.stderr
    assert f"--model-code {BAIT}:make" in r.stderr and "--trust-code" in r.stderr
    assert BAIT not in sys.modules
    assert not bait_module.exists()


@pytest.fixture(scope="module")
def factory_artifact(clean_artifact, bait_module, tmp_path_factory):
    """An artifact really built from the user's factory (the user named it: trusted then)."""
    from modelpress.data import load_data
    from modelpress.sources import load_model

    folder = tmp_path_factory.mktemp("fact") / "art"
    load_model(f"{BAIT}:make", data=load_data("sklearn:iris", split="test")).save(folder)
    sys.modules.pop(BAIT, None)
    bait_module.unlink()
    return folder


def test_factory_artifact_needs_the_factory_named_again(run_cli, factory_artifact, bait_module, tmp_path):
    args = ["evaluate", factory_artifact, "--data", "sklearn:iris", "--no-latency"]
    r = run_cli(*args, "--out", tmp_path / "a")
    assert r.exit_code == 2 and f"{BAIT}:make" in r.stderr
    assert BAIT not in sys.modules and not bait_module.exists()
    r = run_cli(*args, "--model-code", "other_pkg_zz:make", "--out", tmp_path / "b")
    assert r.exit_code == 2 and BAIT not in sys.modules
    r = run_cli(*args, "--model-code", f"{BAIT}:make", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.stderr
    sys.modules.pop(BAIT, None)
    r = run_cli(*args, "--trust-code", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.stderr


def test_factory_artifact_in_a_pipeline_needs_model_code(run_cli, factory_artifact, tmp_path):
    base = f"name: p\nmodel: {factory_artifact}\ndata: {{eval: sklearn:iris}}\nstages: []\n"
    (tmp_path / "no.yaml").write_text(base)
    (tmp_path / "yes.yaml").write_text(base + f"model_code: [{BAIT}:make]\n")
    r = run_cli("run", tmp_path / "no.yaml", "--dry-run", "--out", tmp_path / "r")
    assert r.exit_code == 2 and f"{BAIT}:make" in r.stderr
    r = run_cli("run", tmp_path / "yes.yaml", "--dry-run", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    sys.modules.pop(BAIT, None)


def test_trust_does_not_outlive_the_command(run_cli, factory_artifact, tmp_path):
    from modelpress.errors import InputError
    from modelpress.sources import load_model

    assert run_cli("evaluate", factory_artifact, "--data", "sklearn:iris", "--no-latency", "--trust-code",
                   "--out", tmp_path / "a").exit_code == 0
    sys.modules.pop(BAIT, None)
    with pytest.raises(InputError, match=f"asks to run the model factory {BAIT}:make"):
        load_model(str(factory_artifact))


@pytest.mark.parametrize("builder, message", [
    ({"ref": "zoo:nosuch"}, "unknown zoo model 'nosuch'"),
    ({"ref": "zoo:mlp", "kwargs": {"input_shape": [4], "n_classes": 3, "evil": 1}}, "takes no arguments ['evil']"),
    ({"ref": "zoo:mlp", "kwargs": {"input_shape": [4], "n_classes": 3, "hidden": [-5]}}, "cannot be built"),
    ({"ref": "hf:x", "kwargs": {"trust_remote_code": True}}, "trust_remote_code=True is not allowed"),
    ({"ref": "zoo:mlp?evil=1", "kwargs": {"input_shape": [4], "n_classes": 3}}, "takes no arguments ['evil']"),
    ({"ref": "/bin/sh -c id"}, "is not one of modelpress's builders"),
    ({"ref": "hf:antigravity", "kwargs": {"n_classes": 3}}, "is neither a model folder nor an installed model"),
    ({"ref": "zoo:mlp", "kwargs": {}, "exec": "x"}, "unknown builder keys ['exec']"),
    ({"ref": "zoo:mlp", "shapes": {"0.weight": ["x"]}}, "builder.shapes must map"),
    ("zoo:mlp", "builder must be an object"),
])
def test_builder_records_are_validated(clean_artifact, tmp_path, builder, message):
    from modelpress.errors import InputError
    from modelpress.sources import load_model

    art = _tampered(clean_artifact, tmp_path / "art", builder)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_model(str(art))
    assert "antigravity" not in sys.modules


def test_tampered_or_swapped_weights_are_refused(run_cli, clean_artifact, tmp_path):
    from safetensors.torch import load_file, save_file

    art = tmp_path / "art"
    shutil.copytree(clean_artifact, art)
    state = load_file(art / "model.safetensors")
    state = {k: v + 1 for k, v in state.items()}  # same shapes: it would load silently without the hash
    save_file(state, art / "model.safetensors", metadata={"format": "pt"})
    r = run_cli("evaluate", art, "--data", "sklearn:iris", "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 2
    assert "does not match the sha256 recorded in" in r.stderr and "model.safetensors" in r.stderr
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"] = {"../../etc/passwd": "0" * 64, **manifest["files"]}
    (art / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("evaluate", art, "--data", "sklearn:iris", "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "is not a plain path inside the artifact folder" in r.stderr


def test_version_1_manifest_loads_with_a_note(run_cli, clean_artifact, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(clean_artifact, art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["manifest_version"] = 1
    del manifest["files"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("evaluate", art, "--data", "sklearn:iris", "--no-latency", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.stderr
    assert "note: " in r.stderr and "version-1 manifest without file hashes" in r.stderr


@pytest.mark.parametrize("text", ["[]", "[" * 100_000 + "]" * 100_000, '{"manifest_version": 2, "builder": 5}', "\x00"],
                         ids=["list", "deep", "builder-int", "binary"])
@pytest.mark.parametrize("command", ["evaluate", "quantize"])
def test_manifest_that_is_not_a_manifest(run_cli, clean_artifact, tmp_path, text, command):
    art = tmp_path / "art"
    shutil.copytree(clean_artifact, art)
    (art / "manifest.json").write_text(text)
    r = run_cli(*_commands(art, tmp_path)[command])
    assert r.exit_code == 2, r.stderr
    assert "manifest.json" in r.stderr and "unexpected" not in r.stderr


def test_memory_child_rebuilds_what_the_parent_trusted(run_cli, factory_artifact, bait_module, tmp_path,
                                                      monkeypatch):
    """--memory measures in a fresh process, which trusts nothing: the parent passes on the factory it ran."""
    monkeypatch.setenv("PYTHONPATH", str(bait_module.parent))
    r = run_cli("evaluate", factory_artifact, "--data", "sklearn:iris", "--no-latency", "--memory", "--batch-size",
                "1", "--backend", "torch", "--model-code", f"{BAIT}:make", "--out", tmp_path / "m")
    sys.modules.pop(BAIT, None)
    assert r.exit_code == 0, r.stderr


def test_tampered_stage_folder_in_a_cached_run_never_runs(run_cli, tmp_path):
    """A run folder restored from a CI cache is data too: a resumed run recomputes or refuses, never runs it."""
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\nmodel: zoo:mlp\nmodel_kwargs: {hidden: [8]}\ndata: {eval: sklearn:iris}\n"
                    "evaluate: {latency: false}\n"
                    "stages:\n  - type: prune\n    method: magnitude\n    amount: 0.5\n")
    assert run_cli("run", spec, "--out", tmp_path / "runs").exit_code == 0
    stage = next((tmp_path / "runs" / "p" / "stages").glob("01-*"))
    marker = tmp_path / "PWNED"
    manifest = json.loads((stage / "manifest.json").read_text())
    manifest["builder"] = {"ref": "subprocess:call", "kwargs": {"args": ["touch", str(marker)]}}
    (stage / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("run", spec, "--out", tmp_path / "runs")
    assert r.exit_code in (0, 2), r.stderr
    assert not marker.exists()
    reloaded = json.loads((stage / "manifest.json").read_text())
    assert r.exit_code == 2 or reloaded["builder"]["ref"] == "zoo:mlp"


@pytest.mark.parametrize("edit, message", [
    (lambda m, art: m["files"].clear(), "records no sha256 for model.safetensors"),
    (lambda m, art: m.update(files="x"), "'files' must map file names to sha256 hex digests"),
    (lambda m, art: (art / "link").symlink_to(art / "model.safetensors") or m["files"].update(link="0" * 64),
     "file 'link' is not a plain path inside the artifact folder"),
    (lambda m, art: m["files"].update({"/etc/hostname": "0" * 64}), "is not a plain path inside"),
], ids=["unlisted", "not-a-map", "symlink", "absolute"])
def test_file_records_are_checked(clean_artifact, tmp_path, edit, message):
    from modelpress.errors import InputError
    from modelpress.sources import load_model

    art = tmp_path / "art"
    shutil.copytree(clean_artifact, art)
    manifest = json.loads((art / "manifest.json").read_text())
    edit(manifest, art)
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        load_model(str(art))
