"""Weight-only INT4 (``quantize --mode int4``): MatMul weights block-wise 4-bit, onnxruntime's ``MatMulNBits``.

Each MatMul whose second input is a constant 2-D weight ``W`` (K × N: a transformer's linear layers; ``Gemm`` is
first rewritten as MatMul + Add) becomes one ``com.microsoft.MatMulNBits`` node: along K, every block of
``block_size`` weights (16-256, a power of two) gets one float scale (and, asymmetric, one 4-bit zero point), the
weights are stored as packed 4-bit codes and dequantized inside the kernel. Activations stay float: only the
weights shrink. Everything else stays as it was, in float: embedding tables (``Gather``), MatMuls of two
activations (attention), LayerNorm, softmax, biases; the stage's notes name them.

Algorithms (``onnxruntime.quantization.matmul_nbits_quantizer``, all shipped with onnxruntime, no extra package):

* ``rtn``: round to nearest per block (onnxruntime's own blockwise quantizer, ``DefaultWeightOnlyQuantConfig``).
* ``hqq``: Half-Quadratic Quantization (Badri & Shaji 2023): per block, the scale and zero point are optimised to
  minimise a robust (lp, p < 1) weight error; data-free; asymmetric only.
* ``gptq``: GPTQ (Frantar et al. 2023): weights quantized column by column, each rounding error compensated on the
  not-yet-quantized columns with the inverse Hessian of the layer's inputs, measured on calibration data.

``accuracy_level`` is the MatMulNBits attribute that sets the kernel's compute type for A (onnxruntime contrib op
docs: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8). On x86 CPUs, level 4 quantizes each block of A to int8 and runs
integer dot products; level 1 dequantizes W to fp32 and runs an fp32 GEMM. With 4-bit weights (|code| ≤ 15) no
u8×s8 pair can saturate int16, so the integer path computes the same on AVX2 and VNNI CPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, InputError
from ..runtime.onnx_graph import load, quiet, save

ALGORITHMS = ("rtn", "hqq", "gptq")
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (1, 4)
#: The op that holds a 4-bit weight, and the op it replaces (for op counts and reports).
KERNEL = "MatMulNBits"


def check_settings(block_size: int, symmetric: bool, algorithm: str) -> None:
    """Refuse settings onnxruntime's quantizers cannot build, with the allowed values."""
    if block_size not in BLOCK_SIZES:
        raise InputError(f"quantize.int4_block_size must be one of {', '.join(map(str, BLOCK_SIZES))} (a power of "
                         f"two ≥ 16, MatMulNBits' blocks), got {block_size}", hint="32 or 128 are usual")
    if algorithm == "hqq" and symmetric:
        raise InputError("quantize.int4_algorithm hqq is asymmetric only (it optimises a zero point per block)",
                         hint="use --int4-asymmetric with hqq, or --int4-algorithm rtn/gptq for symmetric weights")


def _quantizer_module() -> Any:
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb
    except ImportError as exc:  # pragma: no cover - onnxruntime < 1.17
        raise BackendUnavailable(f"int4 needs onnxruntime's matmul_nbits_quantizer ({exc})",
                                 hint="pip install 'onnxruntime>=1.17'") from exc
    return mnb


def quantize_int4(src: Path, dst: Path, *, block_size: int, symmetric: bool, algorithm: str, accuracy_level: int,
                  exclude: list[str], calibration_reader: Any = None, threads: int = 1) -> Path:
    """Write ``src`` with every constant-weight MatMul not in ``exclude`` as a 4-bit ``MatMulNBits`` to ``dst``.

    ``threads`` bounds torch's intra-op threads while HQQ runs (it optimises in torch): with torch's default (one
    thread per core) on a busy machine its threads wait on each other and a MiniLM took over 15 minutes."""
    check_settings(block_size, symmetric, algorithm)
    mnb = _quantizer_module()
    model = load(src)
    ops = ("MatMul",)
    if algorithm == "rtn":
        algo = mnb.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric,
                                                accuracy_level=accuracy_level, op_types_to_quantize=ops)
    elif algorithm == "hqq":
        algo = mnb.HQQWeightOnlyQuantConfig(block_size=block_size, bits=4, op_types_to_quantize=ops)
    else:
        if calibration_reader is None:
            raise InputError("quantize.int4_algorithm gptq needs calibration data",
                             hint="pass --calibration DATA or --data DATA")
        if not hasattr(mnb, "GPTQWeightOnlyQuantConfig"):  # pragma: no cover - older onnxruntime
            raise BackendUnavailable("int4 gptq needs onnxruntime's GPTQ weight-only quantizer",
                                     hint="pip install 'onnxruntime>=1.17' (or use --int4-algorithm rtn/hqq)")
        if not symmetric:
            _check_gptq_blocks(model, block_size, exclude)
        calibration_reader.rewind()
        algo = mnb.GPTQWeightOnlyQuantConfig(calibration_data_reader=calibration_reader, block_size=block_size,
                                             op_types_to_quantize=ops)

    class _Quantizer(mnb.MatMulNBitsQuantizer):
        def _generate_q4_node_config(self) -> dict[str, Any]:  # GPTQ ignores nodes_to_exclude; "fp32" skips
            config = super()._generate_q4_node_config()
            return {**config, **dict.fromkeys(exclude, "fp32")}

    quantizer = _Quantizer(model, block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level,
                           nodes_to_exclude=list(exclude), algo_config=algo)
    try:
        with quiet(), _torch_threads(threads):
            quantizer.process()
    except ImportError as exc:  # a variant whose optional dependency is missing
        raise BackendUnavailable(f"int4 {algorithm} needs a package that is not installed: {exc.name or exc}",
                                 hint=f"pip install {exc.name}" if exc.name else "use --int4-algorithm rtn") from exc
    out = quantizer.model.model
    set_accuracy_level(out, accuracy_level)
    if any(n.domain == "com.microsoft" for n in out.graph.node) and not any(
            o.domain == "com.microsoft" for o in out.opset_import):  # GPTQ's output lacked it (onnx.checker fails)
        from onnx import helper

        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save(out, dst)
    return dst


def _check_gptq_blocks(model: Any, block_size: int, exclude: list[str]) -> None:
    """onnxruntime 1.32's GPTQ packs asymmetric zero points two per byte across columns, which breaks (a reshape
    error) when a weight has an odd number of K blocks per column: refuse that up front, naming the layer."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        dims = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if dims is None or len(dims) != 2 or node.name in exclude:
            continue
        blocks = -(-dims[0] // block_size)
        if blocks % 2:
            raise InputError(f"quantize.int4_algorithm gptq with asymmetric blocks cannot pack {node.name!r} (K = "
                             f"{dims[0]}, block {block_size}: {blocks} blocks per column, an odd count; onnxruntime's "
                             "GPTQ packs zero points in pairs)",
                             hint="use --int4-symmetric with gptq, another --int4-block-size, or rtn/hqq")


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    try:
        import torch
    except ImportError:  # only HQQ imports torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_accuracy_level(model: Any, level: int) -> int:
    """Give every MatMulNBits node ``accuracy_level = level`` (HQQ and GPTQ do not set it); returns how many."""
    from onnx import helper

    count = 0
    for node in model.graph.node:
        if node.op_type != KERNEL:
            continue
        for attr in [a for a in node.attribute if a.name == "accuracy_level"]:
            node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("accuracy_level", int(level)))
        count += 1
    return count


def int4_nodes(model: Any) -> dict[str, dict[str, int]]:
    """MatMulNBits nodes → their K, N, bits and block size (what the manifest records)."""
    from onnx import helper

    found = {}
    for node in model.graph.node:
        if node.op_type == KERNEL:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            found[node.name] = {k: int(attrs[k]) for k in ("K", "N", "bits", "block_size") if k in attrs}
    return found
