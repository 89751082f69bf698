"""Image data: a folder of images (or a list of image files) read lazily, decoded with Pillow batch by batch.

``images:DIR`` has three layouts, chosen by what is there (``labels=`` overrides):

* **one sub-folder per class** (torchvision's ImageFolder): class names are the sorted folder names, or
  ``class_names=`` (a comma-separated list or a text file with one name per line) fixes class i = name i, so an
  ImageNet model judged on a few class folders keeps its output indices; images are found recursively under each
  class folder;
* **no sub-folders** (or ``labels=none``): unlabelled images, for calibration and distillation. Their labels are a
  placeholder (0, class ``"unlabelled"``, ``Dataset.labelled`` is false) that the evaluator refuses to score;
* **a file** (``images:list.csv``): one image per line, ``path,label`` or ``path`` (unlabelled); an optional header
  ``path,label``; paths relative to the list's folder.

Every image file (symlinks resolved) must lie inside DIR, or inside the list's folder; ``allow_outside=true`` lifts
that. Files with other extensions are ignored and counted, hidden files and folders (``.name``) too.

Preprocessing (:class:`Preprocess`): convert to RGB (grayscale, CMYK, palette and alpha images are converted and
counted; alpha is dropped, not composited), resize the shorter side to ``resize`` (aspect kept), center-crop
``size`` × ``size``, then ``(pixel - mean) / std`` with pixels on the 0…1 scale, NCHW float32. ``resize`` defaults
to ``round(size / 0.875)`` (224 → 256), the crop fraction both presets use. EXIF orientation is not applied (as in
torchvision's and TensorFlow's evaluation pipelines, which the published weights were measured with).

Bad images: a file Pillow cannot open, a truncated or corrupt one, or one over Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``, kept on; its warning is treated as the error) is exit 2 naming the file: at load
when its header is bad, at the batch that decodes it when only its pixels are. With ``skip_bad_images=true`` every
file is decoded once at load (bounded memory: one image at a time) so bad ones are dropped and counted before the
sample count is fixed.

:class:`LazyImages` is the input array: ``len``, ``shape``, ``dtype`` and ``__getitem__`` (an index, a slice, an
index or boolean array) decode only the images asked for. ``Dataset`` (``modelpress.data``) keeps it as it is, so
``Dataset.batches`` and ``Dataset.subset`` never hold more than one batch of pixels.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

#: File extensions read as images (torchvision's ImageFolder set); others are ignored and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: The shorter side is resized to ``size / CROP_FRACTION`` unless ``resize=`` says otherwise (224 → 256).
CROP_FRACTION = 0.875
INTERPOLATIONS = ("bilinear", "bicubic")
#: Pillow modes converted to RGB, by what the report's note calls them.
_CONVERTIBLE = {"L": "grayscale", "1": "grayscale", "LA": "grayscale", "La": "grayscale", "P": "palette",
                "PA": "palette", "RGBA": "alpha", "RGBa": "alpha", "RGBX": "alpha", "CMYK": "CMYK",
                "YCbCr": "YCbCr", "LAB": "LAB", "HSV": "HSV"}
#: Placeholder class of unlabelled images (``Dataset.labelled`` is false; the evaluator refuses to score it).
UNLABELLED = "unlabelled"
#: Option keys of ``images:`` references.
OPTIONS = ("preset", "size", "resize", "mean", "std", "interpolation", "labels", "class_names", "skip_bad_images",
           "allow_outside")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize``, center-crop ``size``, normalize ``(pixel - mean_255) / std_255`` with
    pixels on the 0…255 scale (the ImageNet preset's 0…1 statistics are stored × 255)."""

    size: int = 224
    resize: int = 256
    mean_255: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std_255: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    interpolation: str = "bilinear"
    preset: str = "imagenet"

    def describe(self) -> dict[str, Any]:
        return {"preset": self.preset, "size": self.size, "resize": self.resize,
                "mean": [round(m / 255, 6) for m in self.mean_255], "std": [round(s / 255, 6) for s in self.std_255],
                "interpolation": self.interpolation, "layout": "NCHW float32, RGB"}


#: ``preset=NAME``: torchvision's ImageNet evaluation transform, and the published EfficientNet-Lite weights' input
#: (mean 127, std 128 on 0…255, i.e. [-1, 1]; as ``modelpress.zoo.efficientnet_lite`` and ``zoo.photos`` use it,
#: bilinear with antialiasing; pass size=240 for Lite1's native resolution).
PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(),
    "efficientnet-lite": Preprocess(mean_255=(127.0, 127.0, 127.0), std_255=(128.0, 128.0, 128.0),
                                    preset="efficientnet-lite"),
}


@dataclass(frozen=True)
class ImageFile:
    """One image: its path, its path relative to the root (what the hash records), size and mtime at load."""

    path: str
    rel: str
    size: int
    mtime_ns: int


@dataclass
class ImageIndex:
    """What a folder or list holds: the images (in order), their raw labels, class names and the counts the
    report's data block shows."""

    files: list[ImageFile]
    labels: list[Any] | None  # None: unlabelled
    class_names: tuple[str, ...] | None  # None: derive from the labels
    layout: str  # "class folders" | "unlabelled folder" | "list"
    root: str
    converted: dict[str, int] = field(default_factory=dict)  # kind → count
    ignored: dict[str, int] = field(default_factory=dict)  # extension / "hidden" → count
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason) of bad images dropped
    empty_classes: list[str] = field(default_factory=list)
    outside_classes: int = 0  # images at the root beside class folders (no class): ignored


# ---- options ----------------------------------------------------------------------------------------------------
def parse_options(options: dict[str, str], source: str) -> tuple[Preprocess, dict[str, Any]]:
    """``images:`` reference options → the preprocessing and the loading options (labels, class_names,
    skip_bad_images, allow_outside). Raises InputError naming the key, the value and what is allowed."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"data {source}: unknown option(s) {unknown}", hint=f"options are {', '.join(OPTIONS)}")
    name = options.get("preset", "imagenet")
    if name not in PRESETS:
        raise InputError(f"data {source}: preset must be one of {', '.join(PRESETS)}, got {name!r}")
    pre = PRESETS[name]
    size = _int_option(options, "size", pre.size, source)
    resize = _int_option(options, "resize", round(size / CROP_FRACTION) if "size" in options else pre.resize, source)
    if resize < size:
        raise InputError(f"data {source}: resize ({resize}, the shorter side) must be ≥ size ({size}, the crop)")
    mean, std = _triple(options, "mean", source, positive=False), _triple(options, "std", source, positive=True)
    interpolation = options.get("interpolation", pre.interpolation)
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"data {source}: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                         f"got {interpolation!r}")
    custom = any(k in options for k in ("size", "resize", "mean", "std", "interpolation"))
    pre = replace(pre, size=size, resize=resize, interpolation=interpolation,
                  mean_255=_times_255(mean) if mean else pre.mean_255, std_255=_times_255(std) if std else pre.std_255,
                  preset=f"{name} (changed)" if custom else name)
    labels = options.get("labels", "auto")
    if labels not in ("auto", "folders", "none"):
        raise InputError(f"data {source}: labels must be auto, folders or none, got {labels!r}")
    loading = {"labels": labels, "class_names": options.get("class_names"),
               "skip_bad_images": _bool_option(options, "skip_bad_images", source),
               "allow_outside": _bool_option(options, "allow_outside", source)}
    return pre, loading


def _int_option(options: dict[str, str], key: str, default: int, source: str) -> int:
    text = options.get(key)
    if text is None:
        return default
    if not text.strip().isdigit() or not 1 <= int(text) <= 4096:
        raise InputError(f"data {source}: {key} must be an integer in [1, 4096] (pixels), got {text!r}")
    return int(text)


def _triple(options: dict[str, str], key: str, source: str, *, positive: bool) -> tuple[float, float, float] | None:
    """``key=r,g,b`` (or one value for all three) on the 0…1 pixel scale: mean in [0, 1], std in (0, 1]."""
    text = options.get(key)
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    low_ok = (lambda v: v > 0) if positive else (lambda v: v >= 0)
    if len(values) != 3 or not all(np.isfinite(values)) or not all(low_ok(v) and v <= 1 for v in values):
        allowed = "(0, 1]" if positive else "[0, 1]"
        raise InputError(f"data {source}: {key} must be 1 or 3 comma-separated numbers in {allowed} on the 0-1 pixel "
                         f"scale (R,G,B), got {text!r}", hint="e.g. mean=0.485,0.456,0.406 (values on 0-255: "
                                                             "divide by 255)")
    return values[0], values[1], values[2]


def _times_255(values: tuple[float, float, float]) -> tuple[float, float, float]:
    return values[0] * 255, values[1] * 255, values[2] * 255


def _bool_option(options: dict[str, str], key: str, source: str) -> bool:
    text = options.get(key, "false").strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise InputError(f"data {source}: {key} must be true or false, got {options[key]!r}")


# ---- decoding ---------------------------------------------------------------------------------------------------
class BadImage(Exception):
    """An image Pillow cannot read (unreadable, truncated, corrupt, over the decompression-bomb limit)."""


def _open(path: str) -> Any:
    """The opened image (header read, pixels not yet); BadImage with the reason when Pillow refuses it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"over Pillow's decompression-bomb limit ({exc})".replace("\n", " ")[:200]) from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except OSError as exc:
        raise BadImage(f"unreadable ({exc.strerror or exc})") from None


def _check_mode(mode: str) -> None:
    if mode != "RGB" and mode not in _CONVERTIBLE:
        raise BadImage(f"mode {mode} (16-bit or float pixels) is not read; convert it to 8-bit RGB")


def image_mode(path: str) -> str:
    """The file's Pillow mode, from its header only (no pixels decoded). Raises BadImage."""
    with _open(path) as img:
        _check_mode(str(img.mode))
        return str(img.mode)


def decode(path: str, pre: Preprocess) -> np.ndarray:
    """One image as a (3, size, size) float32 array, preprocessed as ``pre`` says. Raises BadImage."""
    from PIL import Image

    resample = Image.Resampling.BICUBIC if pre.interpolation == "bicubic" else Image.Resampling.BILINEAR
    with _open(path) as img:
        _check_mode(str(img.mode))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "palette images with transparency...": converted, as said
                img.load()
                rgb = img if img.mode == "RGB" else img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise BadImage(f"truncated or corrupt ({str(exc)[:120]})") from None
    width, height = rgb.size
    if width < height:
        new = (pre.resize, int(pre.resize * height / width))
    else:
        new = (int(pre.resize * width / height), pre.resize)
    if new != (width, height):
        rgb = rgb.resize(new, resample)
    top = int(round((new[1] - pre.size) / 2.0))
    left = int(round((new[0] - pre.size) / 2.0))
    pixels = np.asarray(rgb, dtype=np.float32)[top:top + pre.size, left:left + pre.size]
    mean = np.asarray(pre.mean_255, dtype=np.float32)
    std = np.asarray(pre.std_255, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


class LazyImages:
    """(N, 3, size, size) float32 images decoded on demand: ``x[i]``, ``x[a:b]``, ``x[index_array]`` decode only
    those files. ``select`` makes a lazy view (what ``Dataset.subset`` uses); ``np.asarray(x)`` decodes every image
    (counted in ``n_full_decodes``: the streamed paths never do it).

    ``n_decoded`` counts decoded images and ``largest_batch`` the most decoded in one call: what a test of bounded
    memory reads.
    """

    def __init__(self, files: Sequence[ImageFile], pre: Preprocess, *, counter: dict[str, int] | None = None):
        self.files = tuple(files)
        self.pre = pre
        self.counter = counter if counter is not None else {"n_decoded": 0, "largest_batch": 0, "n_full_decodes": 0}

    # array-like surface read by Dataset, the sources (input specs) and check_inputs
    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.pre.size, self.pre.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.files)

    @property
    def n_decoded(self) -> int:
        return self.counter["n_decoded"]

    @property
    def largest_batch(self) -> int:
        return self.counter["largest_batch"]

    def _positions(self, key: Any) -> np.ndarray:
        n = len(self.files)
        if isinstance(key, slice):
            return np.arange(n)[key]
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} for {n} images")
            return np.flatnonzero(index)
        if not np.issubdtype(index.dtype, np.integer):
            raise IndexError(f"images are indexed by integers, slices or boolean masks, got {index.dtype}")
        if index.size and (index.max() >= n or index.min() < -n):
            raise IndexError(f"index out of range for {n} images")
        return np.where(index < 0, index + n, index)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        positions = self._positions(key)
        out = np.empty((len(positions), 3, self.pre.size, self.pre.size), dtype=np.float32)
        for row, i in enumerate(positions):
            out[row] = self._decode(self.files[int(i)])
        self.counter["n_decoded"] += len(positions)
        self.counter["largest_batch"] = max(self.counter["largest_batch"], len(positions))
        return out

    def _decode(self, image: ImageFile) -> np.ndarray:
        try:
            return decode(image.path, self.pre)
        except BadImage as exc:
            raise InputError(f"image {image.path}: {exc}",
                             hint="remove or fix it, or add skip_bad_images=true to the images: reference") from None

    def select(self, key: Any) -> LazyImages:
        """The images at ``key`` (slice, index or boolean array), still lazy: nothing is decoded."""
        return LazyImages([self.files[int(i)] for i in self._positions(key)], self.pre, counter=self.counter)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        self.counter["n_full_decodes"] += 1
        array = self[slice(None)]
        return array if dtype is None else array.astype(dtype)

    def fingerprint(self) -> str:
        """sha256 of the relative paths, sizes and mtimes of the files, in order, and the preprocessing: what
        identifies these inputs without decoding them (a file rewritten in place with the same size and mtime is
        not seen)."""
        digest = hashlib.sha256(repr(sorted(self.pre.describe().items())).encode())
        for f in self.files:
            digest.update(f"{f.rel}\0{f.size}\0{f.mtime_ns}\n".encode())
        return digest.hexdigest()

    def sample_keys(self) -> list[bytes]:
        """One key per image (its resolved path, size and mtime): samples are the same when their files are."""
        return [f"{os.path.realpath(f.path)}\0{f.size}\0{f.mtime_ns}".encode() for f in self.files]

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} images, {self.pre.size}x{self.pre.size}, preset {self.pre.preset})"


# ---- finding the images -----------------------------------------------------------------------------------------
def index_images(target: str, *, loading: dict[str, Any], pre: Preprocess, source: str) -> ImageIndex:
    """The images of a folder or list ``target``, checked: every header readable (or the bad ones dropped with
    ``skip_bad_images``, after a full decode of every image), every file inside the root unless
    ``allow_outside``. Raises InputError for a missing target, no images, or a bad file."""
    path = Path(target)
    if not path.exists():
        raise InputError(f"image data {target} does not exist", hint="images:DIR (a folder) or images:LIST.csv")
    if path.is_dir():
        index = _scan_folder(path, loading, source)
    else:
        index = _read_list(path, loading, source)
    if not index.files:
        ignored = sum(index.ignored.values())
        raise InputError(f"image data {target} holds no images"
                         + (f" ({ignored} files with other extensions ignored)" if ignored else ""),
                         hint=f"image files end in {', '.join(IMAGE_EXTENSIONS)}")
    _check_files(index, pre, skip_bad=bool(loading["skip_bad_images"]))
    if not index.files:
        raise InputError(f"image data {target}: all {len(index.skipped)} images are unreadable "
                         f"(first: {index.skipped[0][0]}: {index.skipped[0][1]})")
    return index


def _inside(file: Path, root: Path, allow_outside: bool, source: str, what: str) -> None:
    if allow_outside:
        return
    real = Path(os.path.realpath(file))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        raise InputError(f"data {source}: {what} resolves to {real}, outside {root}",
                         hint="keep the images inside it, or add allow_outside=true to the images: reference")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(folder: Path, root: Path, index: ImageIndex, allow_outside: bool, source: str) -> list[Path]:
    """Image files under ``folder``, sorted, recursively; others counted in ``index.ignored``."""
    found: list[Path] = []
    seen: set[str] = set()  # folders already walked (real paths): a symlink loop is walked once
    for current, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            index.ignored["symlink loop"] = index.ignored.get("symlink loop", 0) + 1
            dirs[:] = []
            continue
        seen.add(real)
        hidden = [d for d in dirs if d.startswith(".")]
        if hidden:
            index.ignored["hidden"] = index.ignored.get("hidden", 0) + len(hidden)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                index.ignored["hidden"] = index.ignored.get("hidden", 0) + 1
            elif _is_image(name):
                file = Path(current) / name
                _inside(file, root, allow_outside, source, f"image {file}")
                found.append(file)
            else:
                ext = Path(name).suffix.lower() or "(no extension)"
                index.ignored[ext] = index.ignored.get(ext, 0) + 1
    return found


def _scan_folder(root: Path, loading: dict[str, Any], source: str) -> ImageIndex:
    allow = bool(loading["allow_outside"])
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    labels_mode = loading["labels"]
    if labels_mode == "folders" and not classes:
        raise InputError(f"data {source}: labels=folders but {root} has no sub-folders (one per class)")
    if labels_mode == "none" or not classes:
        index = ImageIndex([], None, None, "unlabelled folder", str(root))
        index.files = [_record(f, root) for f in _walk(root, root, index, allow, source)]
        return index
    names = _class_names(loading.get("class_names"), root, source)
    index = ImageIndex([], [], tuple(names) if names else tuple(classes), "class folders", str(root))
    if names:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise InputError(f"data {source}: class folder(s) {unknown[:5]} are not in class_names "
                             f"({len(names)} names)", hint="add them to class_names, or remove the folders")
    position = {c: i for i, c in enumerate(index.class_names or ())}
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith("."):
            continue
        if entry.name.startswith("."):
            index.ignored["hidden"] = index.ignored.get("hidden", 0) + 1
        elif _is_image(entry.name):
            index.outside_classes += 1
        else:
            ext = Path(entry.name).suffix.lower() or "(no extension)"
            index.ignored[ext] = index.ignored.get(ext, 0) + 1
    for name in classes:
        _inside(root / name, root, allow, source, f"class folder {name}")
        files = _walk(root / name, root, index, allow, source)
        if not files:
            index.empty_classes.append(name)
        index.files += [_record(f, root) for f in files]
        assert index.labels is not None
        index.labels += [position[name]] * len(files)
    return index


def _class_names(value: str | None, root: Path, source: str) -> list[str] | None:
    """``class_names=a,b,c``, or a text file (one name per line): absolute, or found inside DIR, beside DIR, or
    relative to the working directory (in that order)."""
    if value is None:
        return None
    if "," not in value:
        for candidate in (root / value, root.parent / value, Path(value)):
            if candidate.is_file():
                names = [line.strip() for line in candidate.read_text(encoding="utf-8").splitlines()]
                names = [n for n in names if n]
                break
        else:
            names = [value.strip()]
    else:
        names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise InputError(f"data {source}: class_names has an empty name ({value!r})")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"data {source}: class_names repeats {duplicates[:5]}")
    return names


def _record(file: Path, root: Path) -> ImageFile:
    stat = file.stat()
    rel = Path(os.path.relpath(file, root)).as_posix()  # "../x.jpg" for a file outside (allow_outside)
    return ImageFile(str(file), rel, int(stat.st_size), int(stat.st_mtime_ns))


def _read_list(path: Path, loading: dict[str, Any], source: str) -> ImageIndex:
    """``path,label`` (or ``path``) lines, an optional header, ``#`` comments; paths relative to the list's folder."""
    root = path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(enumerate(csv.reader(handle), start=1))
    except UnicodeDecodeError:
        raise InputError(f"image list {path} is not UTF-8 text",
                         hint="images:DIR for a folder, or a text file of path,label lines") from None
    rows = [(n, [c.strip() for c in r]) for n, r in rows if r and any(c.strip() for c in r)
            and not r[0].lstrip().startswith("#")]
    if rows and [c.lower() for c in rows[0][1]] in (["path", "label"], ["path"]):
        rows = rows[1:]
    labelled = loading["labels"] != "none" and any(len(r) > 1 for _, r in rows)
    index = ImageIndex([], [] if labelled else None, None, "list", str(root))
    names = _class_names(loading.get("class_names"), root, source)
    index.class_names = tuple(names) if names else None
    for line, row in rows:
        if len(row) > 2 or (labelled and len(row) != 2):
            raise InputError(f"{path}:{line}: expected path,label, got {len(row)} field(s)")
        rel = row[0]
        file = root / rel
        _inside(file, root, bool(loading["allow_outside"]), source, f"{path.name}:{line}: {rel}")
        if not _is_image(rel):
            raise InputError(f"{path}:{line}: {rel} is not an image file (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        if not file.is_file():
            if loading["skip_bad_images"]:
                index.skipped.append((rel, "no such file"))
                continue
            raise InputError(f"{path}:{line}: image {rel} does not exist (relative to {root})")
        index.files.append(_record(file, root))
        if index.labels is not None:
            label = row[1]
            if names is not None and not label.lstrip("-").isdigit():
                if label not in names:
                    raise InputError(f"{path}:{line}: label {label!r} is not in class_names")
                label = str(names.index(label))
            index.labels.append(label)
    return index


def _check_files(index: ImageIndex, pre: Preprocess, *, skip_bad: bool) -> None:
    """Read every header (modes → the RGB conversion counts); with ``skip_bad``, decode every image once too and
    drop the bad ones with their labels. Without it the first bad header is exit 2 naming the file."""
    keep_files: list[ImageFile] = []
    keep_labels: list[Any] = []
    for k, image in enumerate(index.files):
        try:
            mode = image_mode(image.path)
            if skip_bad:
                decode(image.path, pre)
        except BadImage as exc:
            if not skip_bad:
                raise InputError(f"image {image.path}: {exc}", hint="remove or fix it, or add skip_bad_images=true "
                                                                    "to the images: reference") from None
            index.skipped.append((image.rel, str(exc)))
            continue
        if mode != "RGB":
            kind = _CONVERTIBLE.get(mode, mode)
            index.converted[kind] = index.converted.get(kind, 0) + 1
        keep_files.append(image)
        if index.labels is not None:
            keep_labels.append(index.labels[k])
    index.files = keep_files
    if index.labels is not None:
        index.labels = keep_labels


def summary_notes(index: ImageIndex, source: str) -> list[str]:
    """The ``note:`` lines a load prints (and evaluate keeps in its report)."""
    notes = []
    if index.converted:
        parts = ", ".join(f"{kind} {n}" for kind, n in sorted(index.converted.items()))
        total = sum(index.converted.values())
        dropped = "; alpha dropped" if "alpha" in index.converted else ""
        notes.append(f"data {source}: converted {total} image{'s' * (total != 1)} to RGB ({parts}{dropped})")
    if index.skipped:
        first = index.skipped[0]
        notes.append(f"data {source}: skipped {len(index.skipped)} bad image{'s' * (len(index.skipped) != 1)} "
                     f"(skip_bad_images; first: {first[0]}: {first[1]})")
    if index.ignored:
        total = sum(index.ignored.values())
        parts = ", ".join(f"{ext} {n}" for ext, n in sorted(index.ignored.items()))
        notes.append(f"data {source}: ignored {total} file{'s' * (total != 1)} without an image extension or hidden "
                     f"({parts})")
    if index.outside_classes:
        notes.append(f"data {source}: ignored {index.outside_classes} image(s) directly in {index.root}, outside "
                     f"every class folder")
    for name in index.empty_classes:
        notes.append(f"data {source}: class folder {name!r} holds no images (its class index is kept, 0 samples)")
    return notes


def describe_index(index: ImageIndex, pre: Preprocess) -> dict[str, Any]:
    """The ``images`` entry of the report's data block."""
    return {
        "layout": index.layout,
        "n_images": len(index.files),
        "preprocessing": pre.describe(),
        "converted_to_rgb": dict(sorted(index.converted.items())),
        "skipped_bad_images": len(index.skipped),
        "skipped_examples": [f"{rel}: {why}" for rel, why in index.skipped[:5]],
        "ignored_files": dict(sorted(index.ignored.items())),
        "empty_classes": list(index.empty_classes),
        "hash_rule": "sha256 of relative paths, sizes, mtimes and preprocessing (pixels are not read)",
    }
