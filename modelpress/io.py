"""Atomic file writing and hashing.

Every output goes through :func:`atomic_write`: a temp file in the target's folder, written, flushed, fsynced and
then ``os.replace``-d over the target. On any exception the temp file is removed and the old target stays
byte-identical. Multi-file artifacts write their data first and a manifest last, as the commit marker.

Permissions follow the umask, as ``open()`` would give them: ``mkstemp`` and ``mkdtemp`` create 0600 / 0700 so that
nobody reads a half-written file, and that mode would otherwise survive the rename (a CI artifact upload, a web
server or a serving container running as another user could not read report.json while model.onnx was 0644).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import InputError, ModelpressError

TMP_SUFFIX = ".tmp"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the kernel allows.

    Linux ≥ 4.7 reports it in ``/proc/self/status``; elsewhere ``os.umask`` must set it to read it, so the
    set-and-restore pair runs under a lock (another modelpress thread never sees the temporary value; a foreign thread
    creating a file in that microsecond could, which is why the ``/proc`` reading comes first).
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` would create now: 0o666 less the umask (0644 under 022, 0600 under 077)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would create now: 0o777 less the umask (0755 under 022, 0700 under 077)."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: str | os.PathLike[str], *, prefix: str, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh staging folder in ``parent`` (so that it can be renamed into place) with the umask's folder mode."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(folder, dir_mode())
    return folder


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on failure it is removed.

    Raises:
        ModelpressError: "no space left writing X" when the disk is full (the old file is intact).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        if not hasattr(os, "fchmod"):  # Windows before Python 3.13: only the read-only bit exists there anyway
            os.chmod(tmp_name, file_mode())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise ModelpressError(f"no space left writing {target}; previous file left intact") from exc
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON (NaN/inf become null) with sorted-stable, human-readable indentation."""
    write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def _json_safe(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def read_json(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p} is not valid JSON ({exc})") from None


def read_jsonl_objects(path: str | os.PathLike[str], *, needs: str,
                       hint: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file. A line that is not JSON, or not an
    object holding every key of ``needs`` (a space-separated list, e.g. ``"query document"``), is an InputError naming
    the file and line — the one JSONL rule that text data and query/document pairs share."""
    keys = needs.split()
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or any(k not in row for k in keys):
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise InputError(f"{path}:{line_no}: needs key{'s' if len(keys) > 1 else ''} "
                                 f"{' and '.join(repr(k) for k in keys)}, got {got}", hint=hint)
            yield line_no, row


def sha256_file(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(*arrays: Any) -> str:
    """Hash of array contents, dtypes and shapes: identifies a dataset independent of its file format."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete ``*.tmp`` left by a killed run (SIGKILL cannot run cleanup). Returns how many were removed."""
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for tmp in root.rglob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed
