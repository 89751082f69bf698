"""One parser for model and data references, used by the CLI, the YAML spec and the loaders.

Before, five places parsed references on their own (``startswith("hf:")``, ``rsplit("@")``, ``rsplit("#")``,
``partition("?")``) with slightly different rules. Here each reference is parsed once into a :class:`Reference`:

========================  =========================================================================================
``zoo:NAME``              ``kind="scheme"``, ``scheme="zoo"``, ``body="NAME"``
``hf:DIR``                ``scheme="hf"``
``sklearn:digits#test``   ``scheme="sklearn"``, ``split="test"``
``text:FILE?max_length=64``  ``scheme="text"``, ``body="FILE"``, ``options=(("max_length", "64"),)``
``images:DIR?size=240#test``  ``scheme="images"``, ``body="DIR"``, ``options=(("size", "240"),)``, ``split="test"``
``pkg.module:factory``    ``kind="code"`` (trusted code the user names), ``body="pkg.module:factory"``
``model.onnx``, ``DIR``   ``kind="path"``
``REF@weights.pt``        model references only: ``weights="weights.pt"``
========================  =========================================================================================

Rules that decide ambiguous text, each stated once:

* **An existing file wins.** ``data #1.npz`` names a file when that file exists; only otherwise is ``#1.npz`` read
  as a split (and then ``1.npz`` is no split: the error says the file does not exist either).
* ``@`` starts a weights file only when what follows ends in a checkpoint suffix (``.safetensors``, ``.pt``,
  ``.pth``, ``.bin``), so a folder called ``run@2`` stays a folder.
* A *scheme* is one of the names the caller passes (the registered model sources or data loaders); otherwise
  ``a.b:c`` is trusted code and anything else is a path. So ``zoo:mlp`` is the zoo, never a module ``zoo``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from .errors import InputError

#: ``pkg.module:callable`` — Python code the user names (trusted).
CODE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
#: Splits a data reference may name after ``#``.
SPLITS = ("train", "test", "all")
#: Suffixes that make the text after ``@`` a weights file.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: Schemes whose body is a file or folder (resolved against a spec's folder like a plain path).
PATH_SCHEMES = ("hf", "text", "images", "pairs")

_SCHEME = re.compile(r"^([A-Za-z][\w.-]*):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Reference:
    """A parsed model or data reference. ``str(ref)`` gives back canonical text that parses to the same value."""

    text: str
    kind: str  # "scheme" | "code" | "path"
    scheme: str = ""
    body: str = ""
    weights: str | None = None
    split: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def is_path(self) -> bool:
        """Whether the body names a file or folder (plain paths and ``hf:``/``text:``/``images:`` bodies)."""
        return self.kind == "path" or (self.kind == "scheme" and self.scheme in PATH_SCHEMES)

    @property
    def base(self) -> str:
        """The reference without weights, split and options (``sklearn:digits#test`` → ``sklearn:digits``)."""
        return f"{self.scheme}:{self.body}" if self.kind == "scheme" else self.body

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def resolved_against(self, folder: Path | str) -> Reference:
        """Relative file parts (the path, a path scheme's body, the weights file) made relative to ``folder``."""
        folder = Path(folder)

        def fix(part: str | None) -> str | None:
            if part is None or part == "" or Path(part).is_absolute():
                return part
            return str(folder / part)

        body = fix(self.body) if self.is_path else self.body
        return replace(self, body=body or "", weights=fix(self.weights), text=_render(
            self.kind, self.scheme, body or "", fix(self.weights), self.split, self.options))

    def __str__(self) -> str:
        return _render(self.kind, self.scheme, self.body, self.weights, self.split, self.options)


def _render(kind: str, scheme: str, body: str, weights: str | None, split: str | None,
            options: tuple[tuple[str, str], ...]) -> str:
    text = f"{scheme}:{body}" if kind == "scheme" else body
    if options:
        text += "?" + urlencode(options, safe=":/,")  # tokenizer=hf:NAME stays readable (parse_qsl reads both)
    if weights:
        text += "@" + weights
    if split:
        text += "#" + split
    return text


def _exists(path: str) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def parse_reference(
    text: str,
    *,
    role: str,
    schemes: Iterable[str],
    exists: Callable[[str], bool] = _exists,
) -> Reference:
    """Parse ``text`` as a ``role`` ("model" or "data") reference.

    Args:
        text: what the user wrote.
        role: ``"model"`` (may carry ``@weights``) or ``"data"`` (may carry ``#split``).
        schemes: the scheme names known to the caller (registered sources or loaders).
        exists: file-existence test (injected by tests).

    Raises:
        InputError: empty text, or an unknown ``#split`` on a data reference whose file does not exist.
    """
    if role not in ("model", "data"):
        raise ValueError(f"role must be 'model' or 'data', got {role!r}")
    raw = str(text)
    stripped = raw.strip()
    if not stripped:
        raise InputError(f"empty {role} reference",
                         hint="use zoo:NAME, pkg.module:factory, hf:DIR, *.onnx or a folder" if role == "model"
                         else "use sklearn:NAME, a .npz/.csv file or pkg.module:fn")
    known = set(schemes)
    rest = stripped
    split: str | None = None
    weights: str | None = None
    if role == "data" and "#" in rest and not exists(rest):
        head, _, tail = rest.rpartition("#")
        if tail not in SPLITS:
            hint = (f"{head!r} does not exist either" if not _scheme_of(head, known) and not exists(head)
                    else f"after '#' use one of {', '.join(SPLITS)}")
            raise InputError(f"unknown split {tail!r} in data reference {stripped!r}, and no file {stripped!r} "
                             f"exists", hint=f"{hint}; check the file name")
        rest, split = head, tail
    if role == "model" and "@" in rest and not exists(rest):
        head, _, tail = rest.rpartition("@")
        if head and Path(tail).suffix.lower() in WEIGHT_SUFFIXES:
            rest, weights = head, tail
    scheme = _scheme_of(rest, known)
    if scheme:
        body = rest[len(scheme) + 1:]
        options: tuple[tuple[str, str], ...] = ()
        if "?" in body and not exists(body):
            body, _, query = body.partition("?")
            options = tuple(parse_qsl(query, keep_blank_values=True))
        return Reference(stripped, "scheme", scheme, body, weights, split, options)
    if CODE_REF.match(rest) and not exists(rest):
        return Reference(stripped, "code", "", rest, weights, split)
    return Reference(stripped, "path", "", rest, weights, split)


def _scheme_of(text: str, known: set[str]) -> str:
    match = _SCHEME.match(text)
    if match and match.group(1) in known:
        return match.group(1)
    return ""


def parse_model_ref(text: str, *, schemes: Iterable[str] = ("zoo", "hf"),
                    exists: Callable[[str], bool] = _exists) -> Reference:
    """A model reference (see the module docstring)."""
    return parse_reference(text, role="model", schemes=schemes, exists=exists)


def parse_data_ref(text: str, *, schemes: Iterable[str] = ("sklearn", "text", "images"),
                   exists: Callable[[str], bool] = _exists) -> Reference:
    """A data reference (see the module docstring)."""
    return parse_reference(text, role="data", schemes=schemes, exists=exists)
