"""ONNX graph helpers shared by the stages and the diagnostics above this floor: quiet onnxruntime tooling, load,
atomic save, and the float16 conversion (with the Cast round trips it leaves removed).

They were in ``compress/quantize_onnx.py``; ``diagnose/explain.py`` builds its FP16 baseline with the same
conversion the quantize stage's ``--mode fp16`` uses, and may not import a sibling package, so they live here.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["convert_fp16", "drop_cast_round_trips", "load", "quiet", "save"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime.quantization logs and prints advice on every call; keep it out of the user's terminal."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def save(model: Any, path: Path) -> Path:
    """Atomic save (temp file in the same folder, then rename)."""
    from ..io import write_bytes

    write_bytes(path, model.SerializeToString())
    return path


def convert_fp16(src: Path, dst: Path, *, keep_io_fp32: bool, exclude: list[str]) -> Path:
    """Float16 weights and compute via onnxruntime.transformers' float16 converter (onnxconverter-common's code)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load(src)
    with quiet():
        converted = convert_float_to_float16(model, keep_io_types=keep_io_fp32, node_block_list=list(exclude) or None)
    drop_cast_round_trips(converted)
    return save(converted, dst)


def drop_cast_round_trips(model: Any) -> int:
    """Remove FP32 → FP16 → FP32 Cast pairs (the converter puts one between two nodes it kept in FP32).

    Such a pair is not a no-op: it rounds to float16 and turns anything above 65504 into inf, which is exactly
    what keeping those nodes in FP32 was meant to avoid. Returns how many pairs were removed.
    """
    from onnx import TensorProto, helper

    def cast_to(node: Any) -> int | None:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)

    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    removed: set[int] = set()
    rename: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" or cast_to(node) != TensorProto.FLOAT16 or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "Cast" or cast_to(u) != TensorProto.FLOAT or u.output[0] in outputs
                            for u in users):
            continue
        removed.add(id(node))
        for user in users:
            removed.add(id(user))
            rename[user.output[0]] = node.input[0]
    if not rename:
        return 0
    kept = [n for n in model.graph.node if id(n) not in removed]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    live = {o for n in kept for o in n.output}
    stale = [v for v in model.graph.value_info if v.name not in live]
    for value in stale:
        model.graph.value_info.remove(value)
    return len(rename)
