"""Every registry lists the same names whatever was imported first, plugins arrive through entry points, and the
two import-order bugs of issue 17 stay fixed (each checked in a fresh interpreter, where import order shows)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from modelpress.data import LOADERS, load_data
from modelpress.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

LIST_ALL = """
import json
from modelpress.artifacts import TRANSFORMS
from modelpress.compress.registry import STAGES
from modelpress.data import LOADERS
from modelpress.sources import SOURCES
print(json.dumps({"stages": sorted(STAGES.names()), "sources": sorted(SOURCES.names()),
                  "data": sorted(LOADERS.names()), "transforms": sorted(TRANSFORMS.names())}))
"""
#: What a user's script might import before asking a registry: nothing else, the hf module, the stages, the CLI.
FIRST = {"nothing": "", "hf": "import modelpress.hf", "compress": "import modelpress.compress",
         "cli": "import modelpress.cli", "sources": "import modelpress.sources"}


def _python(code: str, *, timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def listings() -> dict[str, dict[str, list[str]]]:
    out = {}
    for label, first in FIRST.items():
        done = _python(first + "\n" + LIST_ALL)
        assert done.returncode == 0, done.stderr[-2000:]
        out[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("registry", ["stages", "sources", "data", "transforms"])
def test_a_registry_lists_the_same_names_whatever_was_imported_first(registry, listings):
    seen = {label: listing[registry] for label, listing in listings.items()}
    assert len({tuple(names) for names in seen.values()}) == 1, seen
    builtin = {"stages": {"distill", "export", "prune", "quantize", "train"}, "sources": {"zoo", "hf", ".onnx"},
               "data": {"sklearn", "text", ".npz", ".csv", ".jsonl"}, "transforms": {"torch_dynamic_int8"}}
    assert builtin[registry] <= set(seen["nothing"])


def _csv_result(path: Path, first: str) -> str:
    done = _python(f"""
        {first}
        from modelpress.data import load_data
        from modelpress.errors import InputError
        try:
            data = load_data({str(path)!r}, split="all")
            print(sorted(data.inputs), data.inputs[next(iter(data.inputs))].dtype, len(data))
        except InputError as exc:
            print("InputError:", exc)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_csv_rule_does_not_depend_on_import_order(tmp_path):
    numeric = tmp_path / "numbers.csv"
    numeric.write_text("a,b,label\n0.5,1,0\n1.5,2,1\n", encoding="utf-8")
    text = tmp_path / "reviews.csv"
    text.write_text("text,label\ngood soup,food\nfast chip,tech\n", encoding="utf-8")
    for path, expected in ((numeric, "['input'] float32 2"), (text, "needs a tokenizer")):
        results = {first: _csv_result(path, first) for first in ("", "import modelpress.hf")}
        assert len(set(results.values())) == 1, results
        assert expected in results[""]


def test_a_saved_hf_artifact_loads_in_a_fresh_interpreter(tmp_path):
    """Before: ``load_model(<folder>)`` raised KeyError in a fresh interpreter unless hf had been imported."""
    transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'modelpress[hf]'")
    encoder = tmp_path / "encoder"
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(encoder, safe_serialization=True)
    from modelpress.sources import load_model

    load_model(f"hf:{encoder}", kwargs={"n_classes": 3}).save(tmp_path / "artifact")
    done = _python(f"""
        import torch
        from modelpress.sources import load_model
        artifact = load_model({str(tmp_path / 'artifact')!r})
        ids = torch.ones((2, 8), dtype=torch.long)
        print(artifact.n_classes, tuple(artifact.module(ids, torch.ones_like(ids)).shape))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "(2,", "3)"]


PLUGIN = '''
import numpy as np
from modelpress.data import Dataset


def load_bin(ref, *, label_column="label", **options):
    raw = np.fromfile(ref, dtype=np.float32).reshape(-1, 3)
    return Dataset({"input": raw[:, :2]}, raw[:, 2].astype(np.int64), ("no", "yes"), ref)


def register(registry):
    registry.add(".bin", load_bin)
'''


def _install_plugin(tmp_path, monkeypatch, module: str, text: str, group: str, registry) -> None:
    """Write a plugin module, advertise its ``register`` under ``group`` as an installed package would, and give the
    test a copy of ``registry`` that has not read its entry points yet (the session's registry is left as it was)."""
    (tmp_path / f"{module}.py").write_text(text, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name=module, value=f"{module}:register", group=group)
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [point] if kw.get("group") == group else real(**kw))
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(registry, "_plugins_loaded", False)


def test_a_third_party_data_loader_arrives_through_an_entry_point(tmp_path, monkeypatch):
    _install_plugin(tmp_path, monkeypatch, "mp_fake_plugin", PLUGIN, "modelpress.data", LOADERS)
    rows = np.array([[0.1, 0.2, 0], [0.3, 0.4, 1], [0.5, 0.6, 1]], dtype=np.float32)
    rows.tofile(tmp_path / "d.bin")
    data = load_data(str(tmp_path / "d.bin"), split="all")
    assert len(data) == 3 and data.class_names == ("no", "yes") and data.y.tolist() == [0, 1, 1]
    assert ".bin" in LOADERS.names()


def test_a_broken_plugin_is_an_input_error_naming_it(tmp_path, monkeypatch):
    point = metadata.EntryPoint(name="broken", value="mp_no_such_plugin_module:register", group="modelpress.data")
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [point])
    monkeypatch.setattr(LOADERS, "_entries", dict(LOADERS._entries))
    monkeypatch.setattr(LOADERS, "_plugins_loaded", False)
    with pytest.raises(InputError, match=r"data loader plugin 'broken' \(mp_no_such_plugin_module:register\) failed"):
        load_data(str(tmp_path / "x.unknownsuffix"))


def test_an_int8_torch_artifact_reloads_without_importing_the_stages(tmp_path, digits):
    """Its transform is found on the artifacts' floor; before, loading imported ``modelpress.compress`` to find it."""
    import torch

    from modelpress.compress.quantize_torch import run_torch_dynamic
    from modelpress.sources import load_model

    _, test = digits
    quantized = run_torch_dynamic(load_model("zoo:mlp", data=test, kwargs={"hidden": [16]}), engine="x86", notes=[])
    quantized.save(tmp_path / "int8")
    x = test.inputs["input"][:8]
    np.save(tmp_path / "x.npy", x)
    done = _python(f"""
        import sys
        import numpy as np
        import torch
        from modelpress.sources import load_model
        artifact = load_model({str(tmp_path / 'int8')!r})
        assert "modelpress.compress" not in sys.modules, "loading an artifact imported the stages"
        print(type(artifact.module[1]).__module__)
        x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))
        np.save({str(tmp_path / 'out.npy')!r}, artifact.module(x).numpy())
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("torch.ao.nn.quantized")
    with torch.inference_mode():
        expected = quantized.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


SOURCE_PLUGIN = '''
from modelpress.artifacts import InputSpec, ModelArtifact


def load_toy(ref, *, data=None, trust_checkpoint=False, **options):
    import torch

    return ModelArtifact("torch", (InputSpec("input", (None, 4)),), int(ref.body), str(ref),
                         module=torch.nn.Linear(4, int(ref.body)))


def register(registry):
    registry.add("toy", load_toy)
'''


def test_a_third_party_model_source_gets_the_parsed_reference(tmp_path, monkeypatch):
    from modelpress.sources import SOURCES, load_model, model_schemes

    _install_plugin(tmp_path, monkeypatch, "mp_fake_source", SOURCE_PLUGIN, "modelpress.sources", SOURCES)
    artifact = load_model("toy:5")
    assert artifact.n_classes == 5 and artifact.source == "toy:5" and "toy" in model_schemes()
