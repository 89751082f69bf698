"""Judging an embedding model: retrieval quality against labels, and fidelity of embeddings and rankings to FP32.

An embedding model (artifact ``task: embedding``, e.g. ``hf:DIR`` of a sentence-transformers folder) outputs one
vector per text, no class scores, so accuracy and top-1 agreement do not apply. What matters is what the vectors are
used for, search:

* **against labels** (``metrics`` block; needs query/document pairs, ``pairs:FILE.jsonl``): each query ranks every
  document by cosine similarity; ``recall_at_1`` / ``recall_at_10`` are the fraction of queries whose own document
  (the pair's) is first / among the first 10, ``ndcg_at_10`` the mean nDCG@10 with relevance 1 for that document
  (scikit-learn's :func:`~sklearn.metrics.ndcg_score`).
* **against the reference** (``fidelity`` block; the FP32 model's embeddings of the same data): the cosine of each
  sample's embedding to the reference's (``cosine_mean``, ``cosine_min``: the worst sample is what a guard must
  hold), ``ranking_recall_at_10``, the mean fraction of the reference's top 10 documents per query that the
  candidate also ranks in its top 10, and ``ranking_ndcg_at_10``, the candidate's nDCG@10 when the reference's
  top 10 are the relevant documents, graded by the reference's order (10 for its first, 1 for its tenth).

Queries and documents: for pairs data the queries are the first ``meta["n_queries"]`` rows and the documents the
rest; any other data (``text:``, ``*.jsonl``) is ranked sample against sample, every sample a query over all the
others (itself left out), which measures ranking fidelity but has no labels to be judged against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import InputError

__all__ = ["K", "cosine_rows", "embedding_fidelity", "embedding_metrics", "ndcg_at_k", "rank_top_k", "ranking_overlap",
           "recall_at_k", "split_queries", "similarity"]

#: The cut-off of recall@k (besides 1) and nDCG@k.
K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of ``a`` with row i of ``b`` (float64, one per row)."""
    if np.shape(a) != np.shape(b):
        raise InputError(f"embeddings of shape {np.shape(b)} cannot be compared with the reference's {np.shape(a)}")
    return np.sum(_unit(a) * _unit(b), axis=1)


def split_queries(data: Dataset, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(query rows, document rows, relevant document per query or None) of ``data``'s ``n_rows`` embeddings.

    Pairs data (``meta["task"] == "embedding"`` with ``n_queries``) splits into its queries and documents; a subset
    of it (fewer rows than the pairs made) or any other data is every row against every row, without labels.
    """
    meta = data.meta
    n_queries = meta.get("n_queries")
    relevant = meta.get("relevant")
    whole = meta.get("n_source") == n_rows == len(data)
    if isinstance(n_queries, int) and isinstance(relevant, list) and whole and 0 < n_queries < n_rows:
        rel = np.asarray(relevant, dtype=np.int64)
        if len(rel) == n_queries and rel.min() >= 0 and rel.max() < n_rows - n_queries:
            return np.arange(n_queries), np.arange(n_queries, n_rows), rel
    everything = np.arange(n_rows)
    return everything, everything, None


def similarity(embeddings: np.ndarray, queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """``(n_queries, n_documents)`` cosine similarities; a query never retrieves its own row (set to −inf)."""
    unit = _unit(embeddings)
    sims = unit[queries] @ unit[documents].T
    same = queries[:, None] == documents[None, :]
    sims[same] = -np.inf
    return sims


def rank_top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Per query, the indices of the ``k`` most similar documents, best first (ties: the lower index first)."""
    k = min(k, sims.shape[1])
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, :k]


def recall_at_k(sims: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Fraction of queries whose relevant document is among their ``k`` most similar."""
    top = rank_top_k(sims, k)
    return float(np.mean(np.any(top == relevant[:, None], axis=1)))


def ndcg_at_k(sims: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Mean nDCG@k of the ranking by ``sims`` for graded ``relevance`` (same shape), via scikit-learn."""
    from sklearn.metrics import ndcg_score

    finite = np.where(np.isfinite(sims), sims, np.finfo(np.float64).min / 4)  # a query's own row: ranked last
    return float(ndcg_score(relevance, finite, k=k))


def ranking_overlap(reference_sims: np.ndarray, sims: np.ndarray, k: int) -> tuple[float, float]:
    """(recall@k, nDCG@k) of the candidate's ranking against the reference's top ``k`` (module docstring)."""
    k = min(k, sims.shape[1] - (1 if np.isinf(sims).any() else 0))
    if k < 1:
        raise InputError("ranking fidelity needs at least two samples (one query and one other document)")
    ref_top = rank_top_k(reference_sims, k)
    cand_top = rank_top_k(sims, k)
    recall = float(np.mean([len(set(r) & set(c)) / k for r, c in zip(ref_top, cand_top, strict=True)]))
    relevance = np.zeros_like(sims, dtype=np.float64)
    rows = np.arange(len(sims))[:, None]
    relevance[rows, ref_top] = np.arange(k, 0, -1)[None, :]
    return recall, ndcg_at_k(sims, relevance, k)


def embedding_metrics(data: Dataset, embeddings: np.ndarray) -> dict[str, Any]:
    """The ``metrics`` block of an embedding model: retrieval against the pairs' labels (None without pairs)."""
    queries, documents, relevant = split_queries(data, len(embeddings))
    out: dict[str, Any] = {"accuracy": None,
                           "accuracy_reason": "an embedding model has no classes: see recall@k and nDCG@10",
                           "n_samples": len(embeddings), "n_queries": int(len(queries)),
                           "n_documents": int(len(documents)), "k": min(K, len(documents))}
    if relevant is None:
        reason = "no query/document pairs (use pairs:FILE.jsonl)"
        out.update(recall_at_1=None, recall_at_10=None, ndcg_at_10=None, recall_at_1_reason=reason,
                   recall_at_10_reason=reason, ndcg_at_10_reason=reason)
        return out
    sims = similarity(embeddings, queries, documents)
    relevance = np.zeros_like(sims)
    relevance[np.arange(len(queries)), relevant] = 1.0
    out.update(recall_at_1=recall_at_k(sims, relevant, 1), recall_at_10=recall_at_k(sims, relevant, K),
               ndcg_at_10=ndcg_at_k(sims, relevance, K))
    return out


def embedding_fidelity(reference: np.ndarray, embeddings: np.ndarray, data: Dataset) -> dict[str, Any]:
    """The ``fidelity`` block of an embedding model against the reference model's embeddings of the same data."""
    reference = np.asarray(reference).reshape(len(reference), -1)
    embeddings = np.asarray(embeddings).reshape(len(embeddings), -1)
    cos = cosine_rows(reference, embeddings)
    queries, documents, _ = split_queries(data, len(embeddings))
    recall, ndcg = ranking_overlap(similarity(reference, queries, documents),
                                   similarity(embeddings, queries, documents), K)
    return {"n_samples": len(embeddings), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "ranking_recall_at_10": recall, "ranking_ndcg_at_10": ndcg,
            "max_abs_diff": float(np.abs(reference - embeddings).max()),
            "mean_abs_diff": float(np.abs(reference - embeddings).mean()),
            "top1_agreement": None, "top1_agreement_reason": "embeddings: see the cosine and ranking fidelity"}
