"""Every model source and data loader through the same contract.

Parametrized over :data:`~modelpress.sources.SOURCES` and :data:`~modelpress.data.LOADERS`: each scheme or suffix
resolves its canonical example (tiny files written in ``tmp_path``; nothing is downloaded) and refuses a bad one with
exit 2 and one line, through the library and through ``modelpress evaluate``. A new entry fails
:func:`test_every_entry_has_a_canonical_example` until it adds a row to :data:`SOURCE_EXAMPLES` or
:data:`DATA_EXAMPLES`, which then gives it every other test here. Also: every registry lists the same names whatever
was imported first (for stages, sources, data loaders and transforms that is ``tests/registries``; here the others).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpress.data import LOADERS, load_data
from modelpress.errors import InputError
from modelpress.sources import SOURCES, load_model

from .conftest import DATA

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Example:
    """A registry entry's canonical reference and a bad one, made from the session's tiny files.

    ``make(files) -> (good, bad)``; ``files`` maps ``"dir"`` (an empty folder), ``"onnx"`` (the tiny model's
    artifact folder) and ``"hf"`` (a tiny Hugging Face folder, made only when an example asks for it).
    ``tokenizer``: text entries load inside ``hf.use_tokenizer`` of the tiny hf folder.
    """

    make: Callable[[dict[str, Any]], tuple[str, str]]
    needs_hf: bool = False
    tokenizer: bool = False


def _write(path: Path, content: str | bytes) -> str:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def _npz(files: dict[str, Any]) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype(np.float32)
    good = files["dir"] / "good.npz"
    np.savez(good, x=x, y=np.arange(12) % 3)
    return str(good), _write(files["dir"] / "bad.npz", b"PK\x03\x04 truncated")


def _csv(files: dict[str, Any]) -> tuple[str, str]:
    rows = "".join(f"{i * 0.5},{i % 3 - 1},{i % 2}\n" for i in range(10))
    return (_write(files["dir"] / "good.csv", "a,b,label\n" + rows),
            _write(files["dir"] / "bad.csv", "a,b,target\n0.5,1,0\n"))  # no label column


_TEXT_ROWS = [("the soup was cold", "food"), ("the team won", "sports"), ("good fast chip", "tech"),
              ("slow soup", "food"), ("team was good", "sports"), ("the chip was slow", "tech")]


def _jsonl(files: dict[str, Any]) -> tuple[str, str]:
    good = "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in _TEXT_ROWS)
    return (_write(files["dir"] / "good.jsonl", good),
            _write(files["dir"] / "bad.jsonl", '{"text": "the soup", "label": "food"}\n{not json\n'))


def _text(files: dict[str, Any]) -> tuple[str, str]:
    good, _ = _jsonl(files)
    return f"text:{good}?tokenizer=hf:{files['hf']}&max_length=8", f"text:{good}?tokeniser=hf:{files['hf']}"


def _images(files: dict[str, Any]) -> tuple[str, str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(6):
        (files["dir"] / "imgs" / f"class{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(
            files["dir"] / "imgs" / f"class{k % 2}" / f"{k}.png")
    return f"images:{files['dir'] / 'imgs'}?size=8", f"images:{files['dir'] / 'no-such-folder'}"


def _pairs(files: dict[str, Any]) -> tuple[str, str]:
    rows = [("cold soup", "the soup was cold", "food"), ("team won", "the team won", "sports"),
            ("fast chip", "good fast chip", "tech")]
    good = _write(files["dir"] / "pairs.jsonl",
                  "".join(json.dumps({"query": q, "document": d, "label": y}) + "\n" for q, d, y in rows))
    bad = _write(files["dir"] / "bad-pairs.jsonl", '{"query": "cold soup"}\n')  # no document
    return f"pairs:{good}?tokenizer=hf:{files['hf']}&max_length=8", f"pairs:{bad}?tokenizer=hf:{files['hf']}"


#: Data loaders: their canonical example and a reference they must refuse.
DATA_EXAMPLES: dict[str, Example] = {
    "sklearn": Example(lambda files: ("sklearn:iris", "sklearn:no-such-set")),
    ".npz": Example(_npz),
    ".csv": Example(_csv),
    ".jsonl": Example(_jsonl, needs_hf=True, tokenizer=True),
    "text": Example(_text, needs_hf=True),
    "pairs": Example(_pairs, needs_hf=True),
    "images": Example(_images),
}
#: Model sources: their canonical example and a reference they must refuse.
SOURCE_EXAMPLES: dict[str, Example] = {
    "zoo": Example(lambda files: ("zoo:mlp", "zoo:no-such-model")),
    "hf": Example(lambda files: (f"hf:{files['hf']}", f"hf:{files['dir'] / 'no-such-folder'}"), needs_hf=True),
    ".onnx": Example(lambda files: (str(files["onnx"] / "model.onnx"),
                                    _write(files["dir"] / "broken.onnx", b"\x08\x07 not a protobuf model"))),
}


@pytest.fixture
def files(request, tmp_path, tiny_onnx) -> dict[str, Any]:
    out: dict[str, Any] = {"dir": tmp_path, "onnx": tiny_onnx}
    name = request.node.callspec.params["name"]
    example = {**DATA_EXAMPLES, **SOURCE_EXAMPLES}.get(name)
    if example is not None and example.needs_hf:
        out["hf"] = request.getfixturevalue("tiny_hf")
    return out


def _tokenizer(example: Example, files: dict[str, Any]):
    if not example.tokenizer:
        return contextlib.nullcontext()
    from modelpress import hf

    return hf.use_tokenizer(f"hf:{files['hf']}", max_length=8)


def _one_line(result, code: int) -> None:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("registry, examples", [(SOURCES, SOURCE_EXAMPLES), (LOADERS, DATA_EXAMPLES)],
                         ids=["sources", "data"])
def test_every_entry_has_a_canonical_example(registry, examples):
    missing = sorted(set(registry.names()) - set(examples))
    assert not missing, f"{registry.kind} entries without a canonical example here: {missing}"


@pytest.mark.parametrize("name", sorted(DATA_EXAMPLES))
def test_a_data_loader_resolves_its_canonical_example(name, files):
    example = DATA_EXAMPLES[name]
    good, _ = example.make(files)
    with _tokenizer(example, files):
        data = load_data(good, split="all")
        again = load_data(good, split="all")
    assert len(data) > 0 and data.n_classes >= 2 and data.inputs
    assert data.sha256() == again.sha256(), "loading the same file twice gave different data"
    if name.startswith("."):
        assert Path(good).suffix == name
    else:
        assert good.startswith(f"{name}:")


@pytest.mark.parametrize("name", sorted(DATA_EXAMPLES))
def test_a_data_loader_refuses_a_bad_reference_in_one_line(name, files, run_cli, tmp_path):
    example = DATA_EXAMPLES[name]
    _, bad = example.make(files)
    with _tokenizer(example, files), pytest.raises(InputError) as info:
        load_data(bad, split="all")
    assert info.value.exit_code == 2 and "\n" not in str(info.value), str(info.value)
    result = run_cli("evaluate", "zoo:mlp", "--data", bad, "--no-latency", "--out", tmp_path / "r")
    _one_line(result, 2)


@pytest.mark.parametrize("name", sorted(SOURCE_EXAMPLES))
def test_a_model_source_resolves_its_canonical_example(name, files, iris_test):
    good, _ = SOURCE_EXAMPLES[name].make(files)
    artifact = load_model(good, data=iris_test if name != "hf" else None, kwargs={"n_classes": 3})
    assert artifact.n_classes == 3 and artifact.inputs
    if name == "hf":
        import torch

        ids = torch.ones((2, 8), dtype=torch.long)
        with torch.inference_mode():
            assert tuple(artifact.module(ids, torch.ones_like(ids)).shape) == (2, 3)
        return
    from modelpress.runtime.sessions import make_runner, native_backend

    logits = make_runner(artifact, native_backend(artifact), threads=1)({"input": iris_test.inputs["input"][:5]})
    assert logits.shape == (5, 3) and np.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(SOURCE_EXAMPLES))
def test_a_model_source_refuses_a_bad_reference_in_one_line(name, files, run_cli, tmp_path):
    _, bad = SOURCE_EXAMPLES[name].make(files)
    with pytest.raises(InputError) as info:
        load_model(bad, kwargs={"n_classes": 3})
    assert info.value.exit_code == 2 and "\n" not in str(info.value), str(info.value)
    result = run_cli("evaluate", bad, "--data", DATA, "--no-latency", "--out", tmp_path / "r")
    _one_line(result, 2)


LIST_OTHERS = """
import json
from modelpress.metric_schema import METRICS
from modelpress.runtime.analyses import ANALYSES
from modelpress.runtime.sessions import BACKENDS
from modelpress.zoo import ZOO
print(json.dumps({"backends": list(BACKENDS.names()), "metrics": list(METRICS.names()),
                  "analyses": sorted(ANALYSES.names()), "zoo": sorted(ZOO.names())}))
"""


def test_the_other_registries_list_the_same_names_whatever_was_imported_first():
    """Backends, metrics, analyses and the zoo; each listing in a fresh interpreter, where import order shows."""
    seen = {}
    for first in ("", "import modelpress.cli", "import modelpress.hf", "import modelpress.reports"):
        done = subprocess.run([sys.executable, "-c", first + "\n" + textwrap.dedent(LIST_OTHERS)],
                              capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        seen[first or "nothing"] = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(listing == seen["nothing"] for listing in seen.values()), seen
    assert {"torch", "onnxruntime", "tensorrt"} <= set(seen["nothing"]["backends"])
    assert "metrics.accuracy" in seen["nothing"]["metrics"] and "mlp" in seen["nothing"]["zoo"]
