"""A tiny base pipeline for search tests: an untrained MLP on iris (the original model is the shared stage), pruned,
no timing, so a trial takes about a second; the train-prune-export-quantize chain, the latency objective and the
final re-timing are covered by examples/digits-search.yaml and benchmarks/search.py."""

from __future__ import annotations

from pathlib import Path

import pytest

BASE = """\
name: tiny
model: zoo:mlp
model_kwargs: {hidden: [16]}
seed: 0
data: {eval: sklearn:iris}
stages:
  - {type: prune, amount: 0.5}
evaluate:
  batch_sizes: [1]
  threads: 1
  latency: false
"""


def search_yaml(space: str = "  stages.prune.amount: [0.25, 0.5, 0.75]\n", *, extra: str = "",
                objectives: str = "  - maximize: metrics.accuracy\n  - minimize: footprint.sparsity\n") -> str:
    base = "\n".join("  " + line for line in BASE.splitlines())
    return f"name: s\nbase:\n{base}\nspace:\n{space}objectives:\n{objectives}{extra}"


@pytest.fixture
def write_search(tmp_path: Path):
    def write(text: str, name: str = "search.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
