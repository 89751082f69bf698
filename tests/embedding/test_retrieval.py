"""Embedding models without the real MiniLM: the retrieval metrics against hand-computed values, the pairs loader,
sentence-transformers folder detection and pooling on a tiny 1-layer BERT, and the builder/manifest trust rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from modelpress.data import Dataset, load_data
from modelpress.errors import InputError
from modelpress.evaluate import retrieval
from modelpress.sources import check_builder, load_model

from ..conftest import save_tiny_bert


# ---- retrieval metrics: hand-computed expectations ----------------------------------------------------------------
def _unit_rows(angles_deg):
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_recall_and_ndcg_match_a_hand_ranking():
    # 3 queries, 4 documents on the unit circle: cosine = cos(angle difference), so the ranking is by angle distance
    queries = _unit_rows([0, 90, 180])
    docs = _unit_rows([10, 50, 100, 300])
    sims = queries @ docs.T
    # by hand: q0 (0°): d0 10°, d1 50°, d3 60°, d2 100° → order d0 d1 d3 d2
    #          q1 (90°): d2 10°, d1 40°, d0 80°, d3 150° → order d2 d1 d0 d3
    #          q2 (180°): d2 80°, d1 130°, d3 120°, d0 170° → order d2 d3 d1 d0
    relevant = np.array([1, 2, 0])  # q0's own document is d1 (2nd), q1's d2 (1st), q2's d0 (4th)
    assert retrieval.recall_at_k(sims, relevant, 1) == pytest.approx(1 / 3)
    assert retrieval.recall_at_k(sims, relevant, 2) == pytest.approx(2 / 3)
    assert retrieval.recall_at_k(sims, relevant, 10) == pytest.approx(1.0)  # k beyond the documents: all of them
    relevance = np.zeros_like(sims)
    relevance[np.arange(3), relevant] = 1
    want = np.mean([1 / math.log2(3), 1 / math.log2(2), 1 / math.log2(5)])  # DCG of one relevant doc at rank r
    assert retrieval.ndcg_at_k(sims, relevance, 10) == pytest.approx(want)
    assert retrieval.ndcg_at_k(sims, relevance, 2) == pytest.approx(np.mean([1 / math.log2(3), 1.0, 0.0]))


def test_ranking_fidelity_is_one_for_the_same_ranking_and_counts_the_overlap():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8))
    q, d = np.arange(30), np.arange(30)
    sims = retrieval.similarity(emb, q, d)
    assert np.isneginf(np.diag(sims)).all()  # a query never retrieves itself
    assert retrieval.ranking_overlap(sims, sims * 2.0, 10) == (pytest.approx(1.0), pytest.approx(1.0))
    # two queries over 4 documents: the candidate swaps the reference's 2nd and 3rd for q0 and loses its 2nd for q1
    ref = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.1, 0.2]])
    cand = np.array([[0.9, 0.7, 0.8, 0.1], [0.9, 0.1, 0.3, 0.2]])
    recall, ndcg = retrieval.ranking_overlap(ref, cand, 2)
    assert recall == pytest.approx((1 / 2 + 1 / 2) / 2)  # top-2 sets {0,1}/{0,2} and {0,1}/{0,2}
    gain = lambda r, pos: r / math.log2(pos + 1)  # noqa: E731
    ideal = gain(2, 1) + gain(1, 2)
    assert ndcg == pytest.approx(np.mean([gain(2, 1) / ideal, gain(2, 1) / ideal]))  # both: only the 1st relevant


def test_embedding_blocks_on_pairs_and_on_plain_data():
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(6, 4))
    queries = docs + 0.01 * rng.normal(size=docs.shape)  # each query next to its own document
    emb = np.vstack([queries, docs]).astype(np.float32)
    inputs = {"input_ids": np.zeros((12, 3), np.int64), "attention_mask": np.ones((12, 3), np.int64)}
    pairs = Dataset(inputs, np.zeros(12, np.int64), ("unlabelled",), "pairs:x.jsonl",
                    meta={"task": "embedding", "n_queries": 6, "relevant": list(range(6)), "n_source": 12})
    metrics = retrieval.embedding_metrics(pairs, emb)
    assert metrics["accuracy"] is None and metrics["n_queries"] == 6 and metrics["n_documents"] == 6
    assert metrics["recall_at_1"] == metrics["recall_at_10"] == metrics["ndcg_at_10"] == pytest.approx(1.0)
    fid = retrieval.embedding_fidelity(emb, emb * 3.0, pairs)  # a scaled copy: same directions, same ranking
    assert fid["cosine_min"] == pytest.approx(1.0) and fid["ranking_recall_at_10"] == pytest.approx(1.0)
    noisy = emb + rng.normal(size=emb.shape).astype(np.float32)
    fid = retrieval.embedding_fidelity(emb, noisy, pairs)
    cos = np.sum(emb * noisy, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(noisy, axis=1)
    assert fid["cosine_min"] == pytest.approx(cos.min()) and fid["cosine_mean"] == pytest.approx(cos.mean())
    part = pairs.subset(slice(0, 8))  # a cut set is not the pairs any more: every row against every other
    plain = retrieval.embedding_metrics(part, emb[:8])
    assert plain["recall_at_1"] is None and "pairs" in plain["recall_at_1_reason"] and plain["n_queries"] == 8


# ---- a tiny sentence-transformers folder ---------------------------------------------------------------------------
WORDS = ["the", "soup", "was", "cold", "good", "team", "won", "fast", "chip", "slow", "food", "tech"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), WORDS)


def _st_folder(base: Path, dest: Path, pooling: str, normalize: bool) -> Path:
    import shutil

    shutil.copytree(base, dest)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (dest / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (dest / "1_Pooling").mkdir()
    flags = {f"pooling_mode_{m}": m.startswith(pooling) for m in ("cls_token", "mean_tokens", "max_tokens")}
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16, **flags}))
    return dest


def _hidden(folder: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


def _run(artifact, ids, mask):
    import torch

    with torch.no_grad():
        return artifact.module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


IDS = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 10, 11, 9, 12, 13, 3]], dtype=np.int64)
MASK = (IDS != 0).astype(np.int64)


def test_a_sentence_transformers_folder_is_detected_with_its_pooling(tiny_bert, tmp_path):
    cls_folder = _st_folder(tiny_bert, tmp_path / "cls", "cls", normalize=False)
    artifact = load_model(f"hf:{cls_folder}")  # no data, no head: the folder says it is an embedding model
    assert artifact.task == "embedding" and artifact.n_classes == 16
    assert artifact.builder["kwargs"] == {"task": "embedding", "pooling": "cls", "normalize": False, "attn": "eager"}
    hidden = _hidden(tiny_bert, IDS, MASK)
    np.testing.assert_allclose(_run(artifact, IDS, MASK), hidden[:, 0], atol=1e-6)
    mean_norm = load_model(f"hf:{_st_folder(tiny_bert, tmp_path / 'mean', 'mean', normalize=True)}")
    mean = (hidden * MASK[..., None]).sum(1) / MASK.sum(1, keepdims=True)  # padding left out
    np.testing.assert_allclose(_run(mean_norm, IDS, MASK), mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-6)
    maxed = load_model(f"hf:{cls_folder}?pooling=max&normalize=true")
    masked = np.where(MASK[..., None] == 1, hidden, -np.inf).max(1)
    np.testing.assert_allclose(_run(maxed, IDS, MASK), masked / np.linalg.norm(masked, axis=1, keepdims=True),
                               atol=1e-6)


def test_a_plain_folder_is_a_classifier_unless_task_embedding(tiny_bert):
    with pytest.raises(InputError, match="needs the class count"):
        load_model(f"hf:{tiny_bert}")
    artifact = load_model(f"hf:{tiny_bert}?task=embedding")
    assert artifact.task == "embedding" and artifact.builder["kwargs"]["pooling"] == "mean"
    assert not artifact.builder["kwargs"]["normalize"]
    with pytest.raises(InputError, match="task must be one of"):
        load_model(f"hf:{tiny_bert}?task=ranking")
    with pytest.raises(InputError, match="unknown option"):
        load_model(f"hf:{tiny_bert}?pool=mean")


def test_a_classifier_is_kept_when_one_is_asked_for(tiny_bert, tmp_path):
    folder = _st_folder(tiny_bert, tmp_path / "st", "mean", normalize=True)
    assert load_model(f"hf:{folder}", kwargs={"n_classes": 3}).task == "classification"
    assert load_model(f"hf:{folder}?task=classification", kwargs={"n_classes": 2}).task == "classification"
    labelled = Dataset({"input_ids": IDS, "attention_mask": MASK}, np.array([0, 1]), ("a", "b"), "t.jsonl")
    assert load_model(f"hf:{folder}", data=labelled).task == "classification"  # text classification data


def test_unsupported_pooling_configs_are_refused(tiny_bert, tmp_path):
    folder = _st_folder(tiny_bert, tmp_path / "two", "mean", normalize=False)
    config = folder / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}))
    with pytest.raises(InputError, match="pooling .* is not supported"):
        load_model(f"hf:{folder}")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match="Dense"):
        load_model(f"hf:{folder}")


def test_the_saved_artifact_says_embedding_and_the_manifest_is_checked(tiny_bert, tmp_path):
    artifact = load_model(f"hf:{tiny_bert}?task=embedding&normalize=true")
    saved = artifact.save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["task"] == "embedding" and manifest["builder"]["kwargs"]["normalize"] is True
    again = load_model(str(tmp_path / "art"))
    assert again.task == "embedding"
    np.testing.assert_allclose(_run(again, IDS, MASK), _run(saved, IDS, MASK), atol=1e-6)
    for edit, message in [({"task": "classification"}, "builder makes a 'embedding' model"),
                          ({"task": "regression"}, "task must be one of")]:
        broken = {**manifest, **edit}
        (tmp_path / "art" / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(InputError, match=message):
            load_model(str(tmp_path / "art"))


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "embedding", "pooling": "median"}, "pooling='median'"),
    ({"task": "embedding", "normalize": "yes"}, "normalize='yes' is not allowed"),
    ({"task": "embedding", "n_classes": 3}, "exactly one of them"),
    ({"attn": "eager"}, "exactly one of them"),
    ({"task": "embedding", "layers": 2}, "layers=2 is not allowed"),
])
def test_the_builder_allow_list_checks_embedding_arguments(tiny_bert, kwargs, message):
    with pytest.raises(InputError, match=message):
        check_builder({"ref": f"hf:{tiny_bert}", "kwargs": kwargs}, where="manifest.json")
    ok = {"ref": f"hf:{tiny_bert}", "kwargs": {"task": "embedding", "pooling": "cls", "normalize": False}}
    assert check_builder(ok, where="manifest.json") == ok


# ---- pairs data --------------------------------------------------------------------------------------------------
def _pairs_file(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_pairs_put_queries_first_and_share_a_repeated_document(tiny_bert, tmp_path):
    rows = [{"query": "cold soup", "document": "the soup was cold", "label": "food"},
            {"query": "team", "document": "the team won", "label": "sports"},
            {"query": "soup", "document": "the soup was cold", "label": "food"}]
    ref = f"pairs:{_pairs_file(tmp_path / 'p.jsonl', rows)}?tokenizer=hf:{tiny_bert}&max_length=8"
    data = load_data(ref + "#test")  # never split: the pairs are used whole
    assert len(data) == 5 and data.meta["n_queries"] == 3 and data.meta["relevant"] == [0, 1, 0]
    assert data.class_names == ("food", "sports") and list(data.y) == [0, 1, 0, 0, 1]
    assert data.inputs["input_ids"].shape == (5, 8)
    unlabelled = load_data(f"pairs:{_pairs_file(tmp_path / 'u.jsonl', [{k: r[k] for k in ('query', 'document')} for r in rows])}"
                           f"?tokenizer=hf:{tiny_bert}")
    assert unlabelled.class_names == ("unlabelled",) and unlabelled.meta["topic_labels"] is False


@pytest.mark.parametrize("rows, message", [
    ([{"query": "a"}], r"p.jsonl:1: needs keys 'query' and 'document'"),
    ([{"query": "a", "document": ""}], r"'document' must be a non-empty string"),
    ([{"query": "a", "document": "b", "label": "x"}, {"query": "c", "document": "d"}], "label every pair, or none"),
    ([], "0 pairs"),
])
def test_bad_pairs_files_are_one_line_errors(tiny_bert, tmp_path, rows, message):
    path = _pairs_file(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError, match=message) as info:
        load_data(f"pairs:{path}?tokenizer=hf:{tiny_bert}")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="needs a tokenizer"):
        load_data(f"pairs:{path}")


def test_a_pipeline_reports_an_embedding_model_and_compare_reads_it(tiny_bert, tmp_path, run_cli):
    folder = _st_folder(tiny_bert, tmp_path / "st", "mean", normalize=True)
    words = WORDS
    rows = [{"query": f"{words[i]} {words[i + 1]}", "document": f"the {words[i]} {words[i + 1]} {words[i + 2]}",
             "label": "ab"[i % 2]} for i in range(1, 9)]
    pairs = _pairs_file(tmp_path / "pairs.jsonl", rows)
    spec = tmp_path / "emb.yaml"
    spec.write_text(f"""name: emb
model: hf:{folder}
data:
  eval: pairs:{pairs}?tokenizer=hf:{folder}&max_length=8
stages:
  - {{type: export, exporter: torchscript}}
  - {{type: quantize, mode: dynamic, smooth_quant: 0, min_agreement: 0.5}}
evaluate: {{latency: false, knn: 3, knn_folds: 2}}
""", encoding="utf-8")
    result = run_cli("run", str(spec), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "emb" / "report.json").read_text())
    assert report["data"]["n_classes"] == 2  # the pairs' labels, not the embedding width
    last = report["stages"][-1]
    assert last["metrics"]["accuracy"] is None and last["metrics"]["n_queries"] == 8
    assert 0.5 <= last["fidelity"]["cosine_min"] <= last["fidelity"]["cosine_mean"] <= 1.0
    assert last["quantization"]["check"]["min_cosine"] == pytest.approx(last["fidelity"]["cosine_min"], abs=0.05)
    markdown = (tmp_path / "out" / "emb" / "report.md").read_text()
    assert "recall@1" in markdown and "cosine mean / min" in markdown and "ranking recall@10 / nDCG@10" in markdown
    compared = run_cli("compare", str(tmp_path / "out" / "emb"), str(tmp_path / "out" / "emb"),
                       "--baseline-stage", "00-original", "--max-size-ratio", "5")  # tiny: graph overhead
    assert compared.exit_code == 0, compared.stderr
    assert "| recall@10 |" in compared.stdout and "| cosine min |" in compared.stdout
