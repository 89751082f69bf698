"""The report.json schema (version 1): build, validate and load reports.

A report is plain JSON so that ``compare`` can judge runs made on other machines, by other versions, or handed in by
a user. Reports from elsewhere are untrusted input: :func:`load_report` and :func:`validate_report` check the version,
the required keys and their types, and fail with one-line :class:`~modelpress.errors.InputError` messages that name
the stage and key, so nothing downstream meets a half-shaped dict.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_json

__all__ = [
    "MAX_REPORT_BYTES",
    "RELEVANT_CPU_FLAGS",
    "REPORT_FILENAME",
    "SCHEMA_VERSION",
    "load_report",
    "machine_fingerprint",
    "new_report",
    "run_info",
    "validate_report",
]

SCHEMA_VERSION = 1
REPORT_FILENAME = "report.json"

# Reports are read whole into memory; a cap keeps a hostile or mistaken file (a dataset, a model) from doing so.
MAX_REPORT_BYTES = 256 * 1024 * 1024

# CPU features that change which kernels onnxruntime / torch pick, hence the latency a report shows.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")

_NUMBER = "number"
_NONE = type(None)

# Required keys and their JSON types. ``_NUMBER`` is any real number except bool; ``_NONE`` allows null.
_TOP_KEYS: dict[str, tuple[Any, ...]] = {
    "schema_version": (int,),
    "run": (dict,),
    "data": (dict,),
    "stages": (list,),
}
_RUN_KEYS: dict[str, tuple[Any, ...]] = {"name": (str,), "created": (str,)}
_DATA_KEYS: dict[str, tuple[Any, ...]] = {"source": (str,), "n_samples": (int,), "n_classes": (int,)}
_STAGE_KEYS: dict[str, tuple[Any, ...]] = {
    "name": (str,),
    "kind": (str,),
    "params": (dict,),
    "artifact": (dict, _NONE),
    "metrics": (dict, _NONE),
    "fidelity": (dict, _NONE),
    "latency": (list,),
    "footprint": (dict, _NONE),
    "gates": (list,),
}
_ARTIFACT_KEYS: dict[str, tuple[Any, ...]] = {"path": (str,), "format": (str,)}
_METRICS_KEYS: dict[str, tuple[Any, ...]] = {"accuracy": (_NUMBER, _NONE)}
_LATENCY_KEYS: dict[str, tuple[Any, ...]] = {
    "backend": (str,),
    "batch_size": (int,),
    "median_ms": (_NUMBER, _NONE),
}
_GATE_KEYS: dict[str, tuple[Any, ...]] = {"name": (str,), "passed": (bool,)}


def run_info(name: str, *, threads: int) -> dict[str, Any]:
    """Describe the run and the machine it ran on, for the ``run`` section of a report.

    Latency is only comparable between runs on the same CPU, thread count and library versions, so all of them are
    recorded. Nothing here fails: a version that cannot be found is ``None``, a missing git checkout omits
    ``git_sha``. torch and onnxruntime are imported here, lazily, so that importing this module stays cheap.

    Args:
        name: The run name (pipeline name or the name given on the command line).
        threads: The intra-op thread count every backend used.

    Returns:
        The ``run`` dict: name, created (UTC, ISO-8601), modelpress_version, torch, onnxruntime, onnx, numpy,
        python, platform, cpu, cpu_flags, threads and, inside a git checkout, git_sha.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    info: dict[str, Any] = {
        "name": str(name),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "modelpress_version": _distribution_version("modelpress") or "0+unknown",
        "torch": _module_version("torch"),
        "onnxruntime": _module_version("onnxruntime"),
        "onnx": _distribution_version("onnx"),
        "numpy": _module_version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "threads": threads,
    }
    info["machine_id"] = machine_fingerprint(info)["id"]
    sha = _git_sha()
    if sha is not None:
        info["git_sha"] = sha
    return info


#: What a latency depends on besides the model: a latency measured under other values is not this machine's.
FINGERPRINT_KEYS = ("cpu", "cpu_flags", "threads", "torch", "onnxruntime")


def machine_fingerprint(run: Mapping[str, Any] | None = None, *, threads: int = 1) -> dict[str, Any]:
    """The machine a latency was measured on: CPU model, the kernel-relevant CPU flags, threads, torch and
    onnxruntime versions, and ``id``, a short hash of them (stored with every latency row as ``machine_id``).

    Args:
        run: a report's ``run`` section to take the values from; None: this process and ``threads``.
    """
    if run is None:
        run = {"cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "threads": threads,
               "torch": _module_version("torch"), "onnxruntime": _module_version("onnxruntime")}
    values = {key: run.get(key) for key in FINGERPRINT_KEYS}
    if isinstance(values["cpu_flags"], list):
        values["cpu_flags"] = sorted(str(f) for f in values["cpu_flags"])
    text = "|".join(f"{key}={values[key]}" for key in FINGERPRINT_KEYS)
    return {**values, "id": hashlib.sha256(text.encode()).hexdigest()[:12]}


def new_report(name: str, *, data: Mapping[str, Any], threads: int) -> dict[str, Any]:
    """Start an empty report; stages append their result dicts to ``report["stages"]``.

    Args:
        name: The run name.
        data: The ``data`` section: source, n_samples, n_classes, class_names, sha256.
        threads: The intra-op thread count every backend uses.

    Returns:
        ``{"schema_version": 1, "run": run_info(...), "data": dict(data), "stages": []}``.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "run": run_info(name, threads=threads),
        "data": dict(data),
        "stages": [],
    }


def validate_report(report: Any, *, source: str) -> dict[str, Any]:
    """Check a report's version, required keys and their types; return it unchanged.

    Args:
        report: The decoded JSON.
        source: What to call the report in messages (usually its path).

    Returns:
        ``report``, so that ``validate_report(json.loads(text), source=p)`` chains.

    Raises:
        InputError: the version is not one this modelpress reads, or a key is missing or of the wrong type; the
            message names the stage (number and name) and the key.
    """
    if not isinstance(report, dict):
        raise InputError(f"{source} is not a modelpress report: expected a JSON object, got {_type_name(report)}")
    if "schema_version" not in report:
        raise InputError(f"{source} has no schema_version; is it a modelpress report.json?")
    version = report["schema_version"]
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        raise InputError(f"{source} has schema_version {version!r}; this modelpress reads {SCHEMA_VERSION}")
    _check_keys(report, _TOP_KEYS, where=source)
    _check_keys(report["run"], _RUN_KEYS, where=f"{source}: run")
    data = report["data"]
    _check_keys(data, _DATA_KEYS, where=f"{source}: data")
    class_names = data.get("class_names")
    if class_names is not None:
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise InputError(f"{source}: data key 'class_names' should be a list of strings")
        if len(class_names) != data["n_classes"]:
            raise InputError(
                f"{source}: data has n_classes {data['n_classes']} but {len(class_names)} class_names"
            )
    seen: dict[str, int] = {}
    for number, stage in enumerate(report["stages"], start=1):
        _validate_stage(stage, number=number, source=source)
        if stage["name"] in seen:
            raise InputError(
                f"{source}: stages {seen[stage['name']]} and {number} are both named {stage['name']!r}"
            )
        seen[stage["name"]] = number
    return report


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report.

    Args:
        path: A report.json, or the run folder that holds one.

    Returns:
        The validated report dict.

    Raises:
        InputError: the path does not exist, is too large, is not valid JSON, or is not a valid report.
    """
    given = Path(path)
    target = given / REPORT_FILENAME if given.is_dir() else given
    if not target.is_file():
        raise InputError(f"{target} does not exist; pass a report.json or the folder that holds it")
    try:
        size = target.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read {target} ({exc.strerror or exc})") from None
    if size > MAX_REPORT_BYTES:
        raise InputError(
            f"{target} is {size} bytes, over the {MAX_REPORT_BYTES}-byte limit for a report.json; is it a report?"
        )
    try:
        report = read_json(target)
    except (PermissionError, IsADirectoryError) as exc:
        raise InputError(f"cannot read {target} ({exc.strerror or exc})") from None
    except RecursionError:
        raise InputError(f"{target} is not valid JSON (nested too deeply)") from None
    bad = _first_non_finite(report, "")
    if bad is not None:  # json accepts NaN/Infinity; modelpress writes null, so someone edited the file
        shown = {"inf": "Infinity", "-inf": "-Infinity"}.get(str(bad[1]), "NaN")
        raise InputError(f"{target}: {bad[0] or 'the report'} is {shown}, not a finite number",
                         hint="modelpress writes null for an undefined value; restore or regenerate the report")
    return validate_report(report, source=str(target))


def _first_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The key path and value of the first NaN/±Infinity in a parsed JSON document, else None (iterative: a
    report is bounded in size, but not in nesting)."""
    import math

    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return where, item
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


def _validate_stage(stage: Any, *, number: int, source: str) -> None:
    if not isinstance(stage, dict):
        raise InputError(f"{source}: stage {number} should be a JSON object, got {_type_name(stage)}")
    name = stage.get("name")
    label = f"stage {number} ({name!r})" if isinstance(name, str) else f"stage {number}"
    where = f"{source}: {label}"
    _check_keys(stage, _STAGE_KEYS, where=where)
    notes = stage.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise InputError(f"{where} key 'notes' should be a list of strings")
    if stage["artifact"] is not None:
        _check_keys(stage["artifact"], _ARTIFACT_KEYS, where=f"{where} artifact")
    if stage["metrics"] is not None:
        _check_keys(stage["metrics"], _METRICS_KEYS, where=f"{where} metrics")
    for i, row in enumerate(stage["latency"]):
        _check_keys(row, _LATENCY_KEYS, where=f"{where} latency[{i}]")
    for i, gate in enumerate(stage["gates"]):
        _check_keys(gate, _GATE_KEYS, where=f"{where} gates[{i}]")


def _check_keys(obj: Any, spec: Mapping[str, tuple[Any, ...]], *, where: str) -> None:
    if not isinstance(obj, dict):
        raise InputError(f"{where} should be a JSON object, got {_type_name(obj)}")
    for key, allowed in spec.items():
        if key not in obj:
            raise InputError(f"{where} is missing key {key!r}")
        value = obj[key]
        if not any(_is_type(value, kind) for kind in allowed):
            wanted = " or ".join(_kind_name(kind) for kind in allowed)
            raise InputError(f"{where} key {key!r} should be {wanted}, got {_type_name(value)}")


def _is_type(value: Any, kind: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind == _NUMBER:
        return isinstance(value, numbers.Real)
    if kind is int:
        return isinstance(value, numbers.Integral)
    return isinstance(value, kind)


def _kind_name(kind: Any) -> str:
    names = {_NUMBER: "a number", _NONE: "null", int: "an integer", str: "a string", bool: "true/false",
             dict: "an object", list: "a list"}
    return names.get(kind, str(kind))


def _type_name(value: Any) -> str:
    names = {_NONE: "null", bool: "true/false", str: "a string", dict: "an object", list: "a list",
             int: "an integer", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _module_version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except Exception:  # a broken optional install must not stop a report from being written
        return _distribution_version(module)
    version = getattr(imported, "__version__", None)
    return str(version) if version is not None else _distribution_version(module)


def _distribution_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except Exception:
        return None


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return handle.read(1 << 20)
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> list[str]:
    present: set[str] = set()
    for line in _read_cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present.update(value.split())
            break
    return [flag for flag in RELEVANT_CPU_FLAGS if flag in present]


def _git_sha() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.getcwd(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    sha = done.stdout.strip()
    if done.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", sha):
        return None
    return sha

