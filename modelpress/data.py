"""Datasets: what every stage and the evaluator consume.

A :class:`Dataset` holds named input arrays (one ``"input"`` array for tabular/image data; ``input_ids`` +
``attention_mask`` for text), integer labels and class names. An input may be a
:class:`~modelpress.images.LazyImages` (``images:DIR``): image files decoded batch by batch, so ``batches`` and
``subset`` never hold the whole folder. Loaders live in one :data:`LOADERS` registry, keyed by
scheme (``sklearn``, ``text``) or by suffix (``.npz``, ``.csv``, ``.jsonl``), filled here by :func:`register_builtins`
and by plugins through the ``modelpress.data`` entry-point group, so ``sklearn:digits``, ``data.npz``, ``data.csv``
and ``pkg.module:fn`` all reach one :func:`load_data` whatever was imported before.

A file or a factory is a dataset used whole; ``#train`` / ``#test`` pick a seeded split explicitly, and only the
bundled ``sklearn:`` sets (``meta["seeded_split"]``) fall back to the caller's split when the reference names none.

The CSV rule, stated once (:func:`csv_is_text`): a ``*.csv`` whose header has the text column (``text`` unless
``text_column=`` says otherwise) is text data, tokenized like ``*.jsonl``; any other CSV is numeric features. Before,
the rule depended on whether :mod:`modelpress.hf` had been imported (it monkeypatched the ``.csv`` loader).
"""

from __future__ import annotations

import contextlib
import csv
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import LazyImages
from .io import sha256_arrays
from .refs import SPLITS, Reference, parse_data_ref
from .registry import Registry

DEFAULT_TEST_SIZE = 0.25
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Named model inputs (first axis = samples), integer labels in ``[0, n_classes)`` and class names.

    Inputs are numpy arrays or :class:`~modelpress.images.LazyImages` (decoded on demand). Unlabelled data
    (``meta["labelled"] = False``: an image folder without class folders) carries the placeholder label 0 of one class
    ``"unlabelled"``; it can calibrate and distill (the teacher is the label), and :meth:`require_labels` refuses it
    where labels are scored.
    """

    inputs: dict[str, np.ndarray]
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str
    split: str = "all"
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError(f"data {self.source} has no input arrays")
        n = len(self.y)
        if n == 0:
            raise InputError(f"data {self.source} ({self.split}) is empty: 0 samples", hint="pass a non-empty dataset")
        for name, array in self.inputs.items():
            if len(array) != n:
                raise InputError(f"data {self.source}: input {name!r} has {len(array)} rows but there are {n} labels")
            if np.issubdtype(array.dtype, np.floating) and not isinstance(array, LazyImages):  # decoded: finite
                bad = ~np.isfinite(array.reshape(n, -1)).all(axis=1)
                if bad.any():
                    raise InputError(
                        f"data {self.source}: {int(bad.sum())} of {n} samples have NaN/inf features "
                        f"(first at row {int(np.argmax(bad))})",
                        hint="clean or impute them first",
                    )
        if not np.issubdtype(self.y.dtype, np.integer):
            raise InputError(f"data {self.source}: labels must be integers, got dtype {self.y.dtype}")
        if self.y.min() < 0 or self.y.max() >= len(self.class_names):
            raise InputError(
                f"data {self.source}: labels span [{self.y.min()}, {self.y.max()}] "
                f"but there are {len(self.class_names)} class names"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        """False for unlabelled data, whose labels are a placeholder."""
        return bool(self.meta.get("labelled", True))

    def require_labels(self, purpose: str) -> None:
        """InputError (exit 2) when the data is unlabelled and ``purpose`` (e.g. "accuracy") needs labels."""
        if not self.labelled:
            raise InputError(f"data {self.source} has no labels (an unlabelled image folder or list), so it cannot "
                             f"give {purpose}",
                             hint="use it to calibrate or distill (alpha 1); to score a model give labelled data: one "
                                  "sub-folder per class, or a path,label list")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the first input (what zoo models are built for)."""
        return tuple(next(iter(self.inputs.values())).shape[1:])

    def sha256(self) -> str:
        """Hash of the inputs and labels. Lazy image inputs are hashed by their files' relative paths, sizes and
        mtimes plus the preprocessing options (:meth:`LazyImages.fingerprint`), never by decoding the folder."""
        if not any(isinstance(v, LazyImages) for v in self.inputs.values()):
            return sha256_arrays(*self.inputs.values(), self.y)
        import hashlib

        digest = hashlib.sha256()
        for name, array in self.inputs.items():
            part = array.fingerprint() if isinstance(array, LazyImages) else sha256_arrays(array)
            digest.update(f"{name}\0{part}\n".encode())
        digest.update(sha256_arrays(self.y).encode())
        return digest.hexdigest()

    def subset(self, index: np.ndarray | slice, *, split: str | None = None) -> Dataset:
        """The samples at ``index``; lazy image inputs stay lazy (nothing is decoded)."""
        return Dataset(
            {k: v.select(index) if isinstance(v, LazyImages) else v[index] for k, v in self.inputs.items()},
            self.y[index],
            self.class_names,
            self.source,
            split or self.split,
            dict(self.meta),
        )

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Consecutive batches in order (the last one may be smaller). Memory stays bounded by ``batch_size``."""
        if batch_size < 1:
            raise InputError(f"batch size must be ≥ 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield {k: v[start:stop] for k, v in self.inputs.items()}, self.y[start:stop]

    def describe(self) -> dict[str, object]:
        """The report's ``data`` block: which samples were used (``n_source`` in the file or set, ``n_samples`` of
        them used, ``split_rule`` saying how they were chosen), so a reader sees a cut instead of guessing it.
        Image data adds ``images`` (layout, preprocessing, images converted to RGB, bad images skipped, files
        ignored); unlabelled data says ``labels: "none"``."""
        extra: dict[str, object] = {}
        if not self.labelled:
            extra["labels"] = "none"
        if isinstance(self.meta.get("images"), dict):
            extra["images"] = self.meta["images"]
        return {
            "source": self.source,
            "split": self.split,
            "n_source": int(self.meta.get("n_source", len(self))),  # type: ignore[call-overload]
            "n_samples": len(self),
            "split_rule": str(self.meta.get("split_rule", "all: every sample of the source")),
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "sha256": self.sha256(),
            **extra,
        }

    def sample_digests(self) -> set[bytes]:
        """One digest per sample (its inputs and label): what :func:`overlap` compares."""
        import hashlib

        rows = [v.sample_keys() if isinstance(v, LazyImages) else np.ascontiguousarray(v.reshape(len(self), -1))
                for v in self.inputs.values()]  # an image is its file (never decoded here)
        return {hashlib.sha1(b"".join(r[i] if isinstance(r, list) else r[i].tobytes() for r in rows)
                             + self.y[i].tobytes()).digest()
                for i in range(len(self))}


def overlap(used: Dataset, evaluated: Dataset) -> int:
    """How many of ``evaluated``'s distinct samples also occur in ``used`` (training or calibration data)."""
    if used is evaluated:
        return len(evaluated.sample_digests())
    return len(used.sample_digests() & evaluated.sample_digests())


#: ``loader(ref, *, label_column, **options) -> Dataset``; ``ref`` is the parsed reference without its split.
DataLoader = Callable[..., Dataset]
#: Data loaders by scheme (``"sklearn"``) or suffix (``".npz"``, a name starting with a dot).
LOADERS: Registry[DataLoader] = Registry("data loader", entry_points="modelpress.data")


def data_schemes() -> tuple[str, ...]:
    """Scheme names a data reference may start with (built-in and plugins'): what :mod:`modelpress.refs` needs."""
    return tuple(n for n in LOADERS.names() if not n.startswith("."))


def parse_data(ref: str) -> Reference:
    """``ref`` parsed with the registered schemes (``sklearn:digits#train``, ``text:f.jsonl?max_length=64``)."""
    return parse_data_ref(str(ref), schemes=data_schemes())


def load_data(
    ref: str,
    *,
    split: str = "test",
    label_column: str = "label",
    test_size: float = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SEED,
    **options: object,
) -> Dataset:
    """Load a dataset reference: a file or a factory is used whole unless the reference names a split.

    ``#train`` / ``#test`` pick a seeded, stratified split (identical on every machine), ``#all`` the whole set.
    Only sets that declare a seeded default (the bundled ``sklearn:`` sets, ``meta["seeded_split"]``) take
    ``split`` when the reference names none: a user's test file evaluated by default on a quarter of its rows
    reported metrics on 43 of 171 samples and let a 7-point regression pass ``compare`` (issue 15).
    """
    parsed = parse_data(ref)
    if parsed.split is not None and parsed.split not in SPLITS:
        raise InputError(f"unknown split {parsed.split!r}", hint=f"use one of {', '.join(SPLITS)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be in (0, 1), got {test_size}")
    base = str(replace(parsed, split=None)) if parsed.split else parsed.text
    suffix = Path(parsed.body).suffix.lower() if parsed.kind == "path" else ""
    if parsed.kind == "scheme":
        loader = LOADERS.get(parsed.scheme)
    elif suffix and LOADERS.find(suffix) is not None:
        path = Path(parsed.body)
        if not path.exists():
            raise InputError(f"data file {base} does not exist")
        if not path.is_file():
            raise InputError(f"data path {base} is not a file")
        loader = LOADERS.get(suffix)
    elif parsed.kind == "code":
        loader = _load_python
    else:
        known = ", ".join([f"{s}:NAME" if not s.startswith(".") else f"*{s}" for s in LOADERS.names()]
                          + ["pkg.module:fn"])
        raise InputError(f"cannot read data {ref!r}", hint=f"use one of {known}")
    whole = loader(base, label_column=label_column, **options)
    if whole.meta.get("presplit"):
        return whole
    chosen = parsed.split or (split if whole.meta.get("seeded_split") else "all")
    return train_test_split(whole, split=chosen, test_size=test_size, seed=seed)


def train_test_split(data: Dataset, *, split: str, test_size: float, seed: int) -> Dataset:
    """Seeded split, stratified when every class has at least two samples; the result's meta says how it was cut."""
    n = len(data)
    if split == "all":
        return Dataset(data.inputs, data.y, data.class_names, data.source, "all",
                       {**data.meta, "n_source": n, "split_rule": "all: every sample of the source"})
    from sklearn.model_selection import train_test_split as sk_split

    index = np.arange(n)
    counts = np.bincount(data.y, minlength=data.n_classes)
    stratify = data.y if counts[counts > 0].min() >= 2 else None
    if n < 2:
        raise InputError(f"data {data.source} has {n} sample; a train/test split needs ≥ 2", hint="use #all")
    train_idx, test_idx = sk_split(index, test_size=test_size, random_state=seed, stratify=stratify)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    share = test_size if split == "test" else 1.0 - test_size
    rule = (f"{split}: seeded {'stratified ' if stratify is not None else ''}split, {share:.0%} of the source "
            f"(seed {seed})")
    part = data.subset(chosen, split=split)
    part.meta.update(n_source=n, split_rule=rule)
    return part


_SKLEARN = {
    "digits": ("load_digits", "scale16"),
    "breast_cancer": ("load_breast_cancer", "standardize"),
    "wine": ("load_wine", "standardize"),
    "iris": ("load_iris", "standardize"),
}


def _load_sklearn(ref: str, **_: object) -> Dataset:
    name = parse_data(ref).body
    if name not in _SKLEARN:
        raise InputError(f"unknown sklearn dataset {name!r}", hint=f"choose one of {', '.join(_SKLEARN)}")
    import sklearn.datasets

    fn_name, scaling = _SKLEARN[name]
    bunch = getattr(sklearn.datasets, fn_name)()
    x = np.asarray(bunch.data, dtype=np.float32)
    if scaling == "scale16":
        x = x / 16.0  # digits pixels are 0..16; a fixed scale keeps train and test identical without fitting
    else:
        # Standardise with statistics of the whole bundled set: a fixed, documented transform that every split and
        # every run shares (fitting on one split would make the test features depend on the split seed).
        x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    names = tuple(str(n) for n in getattr(bunch, "target_names", range(int(bunch.target.max()) + 1)))
    return Dataset({"input": x.astype(np.float32)}, np.asarray(bunch.target, dtype=np.int64), names, ref,
                   meta={"seeded_split": True})  # bundled sets: train and test come from the one set, seeded


def _labels_and_names(raw: np.ndarray, source: str, class_names: object = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels stay as they are (class i = label i); other labels map to sorted unique values."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise InputError(f"data {source}: labels must be one-dimensional, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)):
        raw = raw.astype(np.int64)
    if np.issubdtype(raw.dtype, np.integer):
        if len(raw) and raw.min() < 0:
            raise InputError(f"data {source}: labels must be ≥ 0, found {int(raw.min())}")
        n = int(raw.max()) + 1 if len(raw) else 0
        names = tuple(str(c) for c in (class_names if class_names is not None else range(n)))
        if len(names) < n:
            raise InputError(f"data {source}: labels go up to {n - 1} but only {len(names)} class names are given")
        return raw.astype(np.int64), names
    values, y = np.unique(raw.astype(str), return_inverse=True)
    if np.issubdtype(raw.dtype, np.floating):  # 0.5 / 1.5 are rarely meant as class names: say so, keep going
        _note(f"data {source}: labels are non-integer floats; each distinct value is a class "
              f"({', '.join(values[:4])}{', …' if len(values) > 4 else ''})")
    return y.astype(np.int64), tuple(str(v) for v in values)


def _note(message: str) -> None:
    """A coerced input that still loads: the CLI prints it as ``note:`` and evaluate records it in the report."""
    import warnings

    from .artifacts import InputNote

    warnings.warn(message, InputNote, stacklevel=3)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive


def _load_npz(ref: str, **_: object) -> Dataset:
    with open(ref, "rb") as handle:  # 4 bytes tell a real .npz from a text, sparse or .npy file, whatever its size
        head = handle.read(8)
    if not head.startswith(_ZIP_MAGIC):
        size = Path(ref).stat().st_size
        what = "a single .npy array" if head.startswith(b"\x93NUMPY") else f"starts with {head[:4]!r}"
        raise InputError(f"{ref} is not an .npz file ({size:,} bytes, {what}); an .npz is a zip of .npy arrays",
                         hint="write it with numpy.savez(path, x=..., y=...)")
    try:
        with np.load(ref, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" not in str(exc).lower():
            raise InputError(f"{ref} is truncated or corrupt ({str(exc)[:160]})") from None
        raise InputError(f"{ref} holds Python objects (pickle); modelpress reads plain numeric arrays only") from exc
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError: all mean the file is damaged
        raise InputError(f"{ref} is truncated or corrupt ({type(exc).__name__})") from None
    if "y" not in arrays:
        raise InputError(f"{ref} has no array 'y' (labels); found {sorted(arrays)}")
    y, names = _labels_and_names(arrays.pop("y"), ref, arrays.pop("class_names", None))
    if "x" in arrays:
        inputs = {"input": arrays.pop("x")}
    else:
        inputs = {k: v for k, v in arrays.items() if not k.startswith("_")}
    if not inputs:
        raise InputError(f"{ref} has no feature array 'x'")
    inputs = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v for k, v in inputs.items()}
    return Dataset(inputs, y, names, ref)


def csv_is_text(path: str, text_column: str = "text") -> bool:
    """The CSV rule: a header holding ``text_column`` makes the file text data (else numeric features)."""
    with contextlib.suppress(OSError, UnicodeDecodeError, csv.Error):
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None) or []
        return text_column in header
    return False


def _load_csv(ref: str, *, label_column: str = "label", **options: object) -> Dataset:
    text_column = str(options.get("text_column", "text"))
    if csv_is_text(ref, text_column):
        return load_text(ref, label_column=label_column, text_column=text_column)
    with open(ref, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{ref} is empty")
        if label_column not in header:
            raise InputError(f"{ref} has no label column {label_column!r}; columns are {header[:10]}",
                             hint="name it with --label-column")
        li = header.index(label_column)
        rows = list(reader)
    features, labels = [], []
    for line_no, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(f"{ref}:{line_no}: {len(row)} fields, header has {len(header)}")
        labels.append(row[li])
        try:
            features.append([float(v) for i, v in enumerate(row) if i != li])
        except ValueError:
            bad = next(v for i, v in enumerate(row) if i != li and not _is_float(v))
            raise InputError(f"{ref}:{line_no}: non-numeric feature value {bad!r}") from None
    if not labels:
        raise InputError(f"data {ref} is empty: 0 samples", hint="pass a non-empty dataset")
    y, names = _labels_and_names(np.asarray(labels), ref)
    if all(_is_float(v) for v in labels):
        y, names = _labels_and_names(np.asarray([float(v) for v in labels]), ref)
    return Dataset({"input": np.asarray(features, dtype=np.float32).reshape(len(labels), -1)}, y, names, ref)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _load_python(ref: str, **options: object) -> Dataset:
    """``pkg.module:fn`` returning a Dataset or ``(x, y)``: trusted code the user names."""
    module_name, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} for data {ref!r}: {exc}") from None
    except AttributeError:
        raise InputError(f"module {module_name!r} has no attribute {attr!r}") from None
    try:
        result = fn()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"data function {ref} raised {type(exc).__name__}: {exc}") from None
    if isinstance(result, Dataset):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        x, y = (np.asarray(a) for a in result)
        y, names = _labels_and_names(y, ref)
        x = x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x
        return Dataset({"input": x}, y, names, ref)
    raise InputError(f"data function {ref} must return a Dataset or (x, y), got {type(result).__name__}")


# ---- text data (tokenized with an hf: model's tokenizer) ---------------------------------------------------------
def load_text(path: str, *, tokenizer: str | None = None, max_length: int | None = None, text_column: str = "text",
              label_column: str = "label", source: str | None = None) -> Dataset:
    """Read text + label rows (``*.jsonl`` or a text ``*.csv``) and tokenize them to one fixed length.

    The tokenizer comes from ``tokenizer`` or :func:`modelpress.hf.use_tokenizer` (the CLI sets it from an ``hf:``
    model); inputs are ``input_ids`` and ``attention_mask`` (int64).
    """
    from . import hf  # same floor, imported lazily: transformers is an optional extra

    choice = hf.current_tokenizer()
    tokenizer = tokenizer or (choice.ref if choice else None)
    if tokenizer is None:
        raise InputError(f"text data {path} needs a tokenizer",
                         hint=f"use it with an hf: model, or write text:{path}?tokenizer=hf:DIR&max_length=128")
    max_length = int(max_length or (choice.max_length if choice else hf.DEFAULT_MAX_LENGTH))
    if not Path(path).is_file():
        raise InputError(f"text data file {path} does not exist")
    texts, raw = hf.read_text_rows(path, text_column=text_column, label_column=label_column)
    if not texts:
        raise InputError(f"text data {path} is empty: 0 rows", hint="pass a non-empty dataset")
    if raw is None:  # unlabelled text (no row has a label): placeholder class 0, meta labelled False
        y, names = np.zeros(len(texts), np.int64), ("unlabelled",)
    else:
        y, names = _labels_and_names(np.asarray(raw), path)
    inputs = hf.tokenize(texts, tokenizer=tokenizer, max_length=max_length)
    n_truncated = int(inputs["attention_mask"].all(axis=1).sum())  # rows that reached max_length (maybe cut)
    return Dataset(inputs, y, names, source or path,
                   meta={"tokenizer": tokenizer, "max_length": max_length, "n_truncated": n_truncated,
                         **({"labelled": False} if raw is None else {})})


def _load_jsonl(ref: str, *, label_column: str = "label", **options: object) -> Dataset:
    return load_text(ref, label_column=label_column, text_column=str(options.get("text_column", "text")))


_TEXT_OPTIONS = ("tokenizer", "max_length", "text_column", "label_column")


def text_options(ref: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str], int | None]:
    """``(path, options, max_length)`` of a tokenized-text reference (``text:``, ``pairs:``): unknown options and
    a non-integer ``max_length`` are exit 2, with the same words for every text scheme."""
    parsed = parse_data(ref)
    params = dict(parsed.options)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InputError(f"data {ref}: unknown option(s) {unknown}", hint=f"options are {', '.join(allowed)}")
    max_length = params.get("max_length")
    if max_length is not None and not max_length.isdigit():
        raise InputError(f"data {ref}: max_length must be an integer, got {max_length!r}")
    return parsed.body, params, int(max_length) if max_length else None


def _load_text_scheme(ref: str, *, label_column: str = "label", **_: object) -> Dataset:
    """``text:FILE?tokenizer=REF&max_length=N&text_column=C&label_column=L``."""
    path, params, max_length = text_options(ref, _TEXT_OPTIONS)
    return load_text(path, tokenizer=params.get("tokenizer"), max_length=max_length,
                     text_column=params.get("text_column", "text"),
                     label_column=params.get("label_column", label_column), source=ref)


# ---- image data (decoded lazily, batch by batch: modelpress/images.py) ----------------------------------------------
def _load_images(ref: str, **_: object) -> Dataset:
    """``images:DIR`` (class folders, or an unlabelled folder) or ``images:LIST.csv`` (``path,label`` lines), with
    ``?preset=imagenet|efficientnet-lite&size=&resize=&mean=&std=&interpolation=&labels=&class_names=&
    skip_bad_images=&allow_outside=`` (see :mod:`modelpress.images`)."""
    from . import images

    parsed = parse_data(ref)
    pre, loading = images.parse_options(dict(parsed.options), ref)
    index = images.index_images(parsed.body, loading=loading, pre=pre, source=ref)
    for line in images.summary_notes(index, ref):
        _note(line)
    x = images.LazyImages(index.files, pre)
    meta: dict[str, object] = {"images": images.describe_index(index, pre)}
    if index.labels is None:
        y, names = np.zeros(len(index.files), dtype=np.int64), (images.UNLABELLED,)
        meta["labelled"] = False
    elif index.layout == "class folders":
        y, names = np.asarray(index.labels, dtype=np.int64), tuple(index.class_names or ())
    else:  # a list: integer labels are class indices, other labels name classes (sorted), unless class_names
        raw = np.asarray(index.labels)
        if all(str(v).lstrip("-").isdigit() for v in index.labels):
            raw = raw.astype(np.int64)
        y, names = _labels_and_names(raw, ref, index.class_names)
    return Dataset({"input": x}, y, names, ref, meta=meta)


def register_builtins(registry: Registry[DataLoader]) -> None:
    """modelpress's own loaders; third-party ones come through the ``modelpress.data`` entry-point group."""
    registry.add("sklearn", _load_sklearn)
    registry.add("text", _load_text_scheme)
    registry.add("images", _load_images)
    registry.add(".npz", _load_npz)
    registry.add(".csv", _load_csv)
    registry.add(".jsonl", _load_jsonl)
    registry.add("pairs", lambda ref, **kw: importlib.import_module(f"{__package__}.text_pairs").load_pairs(ref, **kw))


register_builtins(LOADERS)
