"""Fixtures shared by the common contract tests: a tiny model and tiny data, built once per session.

Everything here is small on purpose (zoo:mlp with 8 hidden units, iris's 150 rows): the contract tests run every
registry entry, so their cost grows with each new stage, backend, source and metric.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import save_tiny_bert

#: The model and data every contract test starts from.
MODEL = "zoo:mlp"
MODEL_KWARGS = {"hidden": [8]}
DATA = "sklearn:iris"


@pytest.fixture(scope="session")
def iris_test():
    from modelpress.data import load_data

    return load_data(DATA, split="test")


@pytest.fixture(scope="session")
def tiny_torch(iris_test):
    """zoo:mlp (8 hidden units) sized for iris, untrained: contracts are about plumbing, not accuracy."""
    from modelpress.sources import load_model

    return load_model(MODEL, data=iris_test, kwargs=MODEL_KWARGS)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_torch, iris_test, tmp_path_factory) -> Path:
    """The tiny model exported by the export stage (verified against torch), saved as an artifact folder."""
    from modelpress.compress.export import ExportConfig
    from modelpress.compress.registry import StageContext, run_stage

    folder = tmp_path_factory.mktemp("tiny-onnx")
    ctx = StageContext(work_dir=folder, eval=iris_test, original=tiny_torch)
    run_stage(tiny_torch, ExportConfig(), ctx).save(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A 1-layer BERT (hidden 16) with a 17-token WordPiece vocabulary, saved like a Hugging Face folder."""
    words = ["the", "soup", "was", "cold", "good", "team", "won", "fast", "chip", "slow", "food", "tech"]
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-hf"), words)
