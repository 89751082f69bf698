"""Shared fixtures: tiny data and models, and a CLI runner that goes through ``main`` (exit-code mapping)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MODELPRESS_QUIET", "1")


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder, so default outputs (reports/) never land in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train faster on one intra-op thread; the process setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """``run_cli("evaluate", ...)`` → CliResult(exit_code, stdout, stderr), via modelpress.cli.main."""
    from modelpress.cli import _State, main

    def run(*args: str) -> CliResult:
        _State.debug = False
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def digits():
    """(train, test) splits of sklearn digits."""
    from modelpress.data import load_data

    return load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")


@pytest.fixture(scope="session")
def trained_cnn(digits, tmp_path_factory):
    """zoo:cnn (narrow) trained 3 epochs on digits, saved as an artifact folder. Returns (artifact, folder)."""
    from modelpress.compress.train import fit
    from modelpress.sources import load_model

    train, test = digits
    artifact = load_model("zoo:cnn", data=test, kwargs={"channels": [8, 16], "hidden": 32})
    fit(artifact.module, train, epochs=3, lr=1e-2, batch_size=64, seed=0)
    folder = tmp_path_factory.mktemp("cnn")
    return artifact.save(folder), folder


@pytest.fixture(scope="session")
def trained_mlp(digits, tmp_path_factory):
    from modelpress.compress.train import fit
    from modelpress.sources import load_model

    train, test = digits
    artifact = load_model("zoo:mlp", data=test, kwargs={"hidden": [32]})
    fit(artifact.module, train, epochs=5, lr=1e-2, batch_size=64, seed=0)
    folder = tmp_path_factory.mktemp("mlp")
    return artifact.save(folder), folder


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y)
    return path


def save_tiny_bert(folder: Path, words: list[str], *, layers: int = 1, seed: int | None = None,
                   **config: object) -> Path:
    """Save a BERT with hidden size 16 and a WordPiece vocabulary of ``words`` (+ 5 specials) like a Hugging Face
    folder: what the hf tests build instead of downloading a model. ``seed`` fixes its random weights."""
    transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'modelpress[hf]'")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    bert = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=layers,
                                   num_attention_heads=2, intermediate_size=32, max_position_embeddings=32, **config)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    transformers.BertModel(bert).save_pretrained(folder, safe_serialization=True)
    return folder
