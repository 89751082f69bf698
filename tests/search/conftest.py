"""A tiny base pipeline for search tests: an MLP on iris, trained 2 epochs, then pruned (seconds per trial)."""

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
  - {type: train, epochs: 2, lr: 0.01}
  - {type: prune, amount: 0.5}
evaluate:
  batch_sizes: [1]
  threads: 1
  latency: {warmup_min_calls: 1, warmup_min_s: 0, min_calls: 5, min_s: 0.01, max_s: 0.2, rounds: 2}
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
