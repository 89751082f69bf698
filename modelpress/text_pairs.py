"""Query/document pairs for judging embedding models: ``pairs:FILE.jsonl[?tokenizer=REF&max_length=N]``.

Each line is ``{"query": "...", "document": "..."}`` with an optional class ``"label"`` (a topic, say). The pair
says which document is relevant to the query: retrieval recall@k and nDCG@k against labels
(:mod:`modelpress.evaluate.retrieval`) count a query as answered when its own document is among the first k. The
labels, when every row has one, feed the k-NN probe (``evaluate.knn``).

The :class:`~modelpress.data.Dataset` holds the queries first, then the distinct documents (a document text that
several queries share is one document, relevant to each of them), tokenized like text data
(:func:`modelpress.hf.tokenize`, the tokenizer from ``tokenizer=`` or :func:`modelpress.hf.use_tokenizer`). Its
``meta`` says how to read it: ``task = "embedding"``, ``n_queries``, ``relevant`` (per query, the index of its
document among the documents). The set is used whole: a ``#train`` / ``#test`` split would cut pairs apart, so
the pairs are never split (``presplit``); write two files to hold pairs out.

Registered by :func:`modelpress.data.register_builtins` under the scheme ``pairs``; imports ``data`` lazily (same
floor), so ``data`` can register it without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import read_jsonl_objects

__all__ = ["PAIR_OPTIONS", "load_pairs", "read_pairs"]

PAIR_OPTIONS = ("tokenizer", "max_length", "label_column")
UNLABELLED = "unlabelled"  # the one class name of pairs without labels


def read_pairs(path: str | Path, *, label_column: str = "label") -> tuple[list[str], list[str], list[Any] | None]:
    """(queries, documents, labels or None) of a pairs JSONL file, one entry per pair, errors naming the line.

    Labels are returned only when every row has one; some rows with and some without is an error.
    """
    queries: list[str] = []
    documents: list[str] = []
    labels: list[Any] = []
    unlabelled = 0
    for line_no, row in read_jsonl_objects(path, needs="query document"):
        for key in ("query", "document"):
            if not isinstance(row[key], str) or not row[key].strip():
                raise InputError(f"{path}:{line_no}: {key!r} must be a non-empty string")
        queries.append(row["query"])
        documents.append(row["document"])
        if label_column in row and row[label_column] is not None:
            if not isinstance(row[label_column], (str, int)) or isinstance(row[label_column], bool):
                raise InputError(f"{path}:{line_no}: {label_column!r} must be a string or an integer")
            labels.append(row[label_column])
        else:
            unlabelled += 1
    if labels and unlabelled:
        raise InputError(f"{path}: {len(labels)} pairs have a {label_column!r} and {unlabelled} do not",
                         hint="label every pair, or none")
    return queries, documents, (labels or None)


def load_pairs(ref: str, *, label_column: str = "label", **_: object) -> Any:
    """``pairs:FILE.jsonl?tokenizer=REF&max_length=N&label_column=L`` → a Dataset (module docstring)."""
    from . import hf
    from .data import Dataset, text_options

    path, params, max_length = text_options(ref, PAIR_OPTIONS)
    if not path.lower().endswith(".jsonl"):
        raise InputError(f"data {ref}: pairs are read from a *.jsonl file of query/document lines, got {path!r}")
    if not Path(path).is_file():
        raise InputError(f"pairs data file {path} does not exist")
    choice = hf.current_tokenizer()
    tokenizer = params.get("tokenizer") or (choice.ref if choice else None)
    if tokenizer is None:
        raise InputError(f"pairs data {path} needs a tokenizer",
                         hint=f"use it with an hf: model, or write pairs:{path}?tokenizer=hf:DIR&max_length=128")
    length = max_length if max_length else (choice.max_length if choice else hf.DEFAULT_MAX_LENGTH)
    queries, documents, raw = read_pairs(path, label_column=params.get("label_column", label_column))
    if not queries:
        raise InputError(f"pairs data {path} is empty: 0 pairs", hint="write one JSON object per line")
    distinct: dict[str, int] = {}
    relevant = [distinct.setdefault(doc, len(distinct)) for doc in documents]
    docs = list(distinct)
    if raw is None:
        y = np.zeros(len(queries) + len(docs), dtype=np.int64)
        names: tuple[str, ...] = (UNLABELLED,)
    else:
        values = sorted({str(v) for v in raw})
        index = {v: i for i, v in enumerate(values)}
        doc_label = {relevant[i]: index[str(v)] for i, v in reversed(list(enumerate(raw)))}  # first pair wins
        y = np.asarray([index[str(v)] for v in raw] + [doc_label[d] for d in range(len(docs))], dtype=np.int64)
        names = tuple(values)
    inputs = hf.tokenize([*queries, *docs], tokenizer=tokenizer, max_length=length)
    n = len(queries) + len(docs)
    meta = {"task": "embedding", "n_queries": len(queries), "relevant": relevant, "topic_labels": raw is not None,
            "presplit": True, "n_source": n, "tokenizer": tokenizer, "max_length": length,
            "n_truncated": int(inputs["attention_mask"].all(axis=1).sum()),
            "split_rule": f"all: {len(queries)} queries then {len(docs)} distinct documents (pairs are never split)"}
    return Dataset(inputs, y, names, ref, "all", meta)
