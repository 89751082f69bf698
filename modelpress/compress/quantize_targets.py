"""The quantization defaults of each CPU target, in one table (README "Quantization" shows it with its evidence).

Every INT8 default that depends on how the target's integer kernels add up products lives here and nowhere else:
the activation / weight types (U8S8, U8U8, S8S8), ``reduce_range`` (7-bit weights), per-channel weight scales,
the op types quantized per mode, the residual ``Sum`` rewrite, bias correction and SmoothQuant's alpha. A user setting always wins over the table; what
was taken from the table is recorded in ``manifest.json`` (``quantization.target.defaults_from_target``).

Why the rows differ (onnxruntime's "Quantize ONNX models" guide, and the measurements in
``benchmarks/quantize.py``):

* **x86-vnni** (AVX-512 VNNI, AVX-VNNI, AMX): U8S8 with full 8-bit weights. ``vpdpbusd`` sums four u8×s8
  products straight into int32, so nothing saturates. Demo CNN on a Xeon (Sapphire Rapids, AVX-512 VNNI + AMX):
  static INT8 agreement 0.998 with 8-bit weights, as with 7-bit (accuracy 97.6 % vs 98.0 %, FP32 97.8 %).
* **x86-avx2**, **x86-avx512** (no VNNI): U8S8 with ``reduce_range`` = 7-bit weights. MLAS uses ``vpmaddubsw``
  there, which adds each pair of u8×s8 products into int16 with saturation: 2 × 255 × 127 = 64770 > 32767.
  With 7-bit weights (onnxruntime writes them in [-64, 64]) the largest pair is 2 × 255 × 64 = 32640 and cannot
  saturate. onnxruntime's guide recommends exactly this for x86 without VNNI. Measured with ``benchmarks/quantize.py --workload saturation`` on
  the demo's FP32 CNN, on AVX2 kernels (qemu ``-cpu max``: AVX2 + FMA, no AVX-512 / VNNI), top-1 agreement with
  FP32 on 450 digits: 8-bit U8S8 0.873 (accuracy 97.8 % → 88.0 %), S8S8 0.873, **7-bit U8S8 0.998** (98.0 %),
  U8U8 0.996. U8U8 also avoids saturation but runs on slower kernels; it stays an explicit choice
  (``--weight-type uint8``).
  x86-avx512 without VNNI uses the same ``vpmaddubsw`` kernels (AVX512BW); it is not measured on such a CPU here.
* **arm64**: U8S8 with 8-bit weights. MLAS's Arm kernels widen to 16 bits with exact products (``umull``/``sdot``
  /``udot``) and accumulate in int32: no saturation. Not measured on an Arm CPU here (none was available).

Bias correction (static mode, on by default on every row): the mean output shift that rounding a Conv's weights
causes, measured on the calibration data, is subtracted from its bias (Nagel et al. 2019). Pretrained
EfficientNet-Lite1 at 224×224 on a Xeon (Sapphire Rapids), mean logit cosine to FP32: 8-bit per-channel 0.993 →
0.997, 7-bit per-channel (the saturating rows' setting, whose outputs the VNNI kernels reproduce exactly) 0.980 →
0.995, at the same speed (``benchmarks/quantize.py --workload imagenet-cnn``; README "Quantization"). The Arm row
computes the same integers as VNNI (exact int32) and takes the same default, not measured on Arm.

SmoothQuant (``smooth_quant``, alpha 0.7 on every row; applied by default in dynamic mode to graphs with
LayerNormalization, i.e. transformers, when calibration data is given): each quantized constant-weight MatMul's input
channels are divided by ``s = max|x|^0.7 / max|w|^0.3`` (one float ``Mul``, shared by the MatMuls that read the same
tensor) and the weight rows multiplied by it (Xiao et al. 2023; :func:`.equalize.smooth_activations`). On
all-MiniLM-L6-v2, dynamic INT8, min / mean cosine of the pooled embedding to FP32 on 200 held-out sentences
(``benchmarks/quantize.py --workload minilm-saturation``; Xeon, Sapphire Rapids): 8-bit weights (``x86-vnni``,
``arm64``) 0.9874 / 0.9925 → 0.9968 / 0.9979, 7-bit weights (``x86-avx2``, ``x86-avx512``) 0.9854 / 0.9913 →
0.9940 / 0.9966 — with 7-bit weights the AVX2 kernels gave identical cosines under qemu (24 of the sentences;
README "Quantization"), while 8-bit + SmoothQuant saturates there (0.9926 vs 0.9973). Alpha 0.7 was
chosen on other sentences (0.6-0.9 all reach min cosine ≥ 0.99 there; the paper's 0.5 does not: 0.9824 here).
Static mode keeps it off by default: static INT8 of MiniLM stays far below dynamic with or without it (min cosine
0.900 → 0.922).
The Arm row takes the VNNI row's value (same exact int32 arithmetic), not measured on Arm.

Per-channel weights, the op sets and the residual ``Sum`` rewrite are the same on every row: they change speed
or rounding, not how the kernels accumulate (measured on the Xeon above; README "Quantization").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..runtime.target import DYNAMIC_OPS, STATIC_OPS, TARGETS, Target  # noqa: F401 (op sets re-exported)

@dataclass(frozen=True)
class TargetDefaults:
    """The INT8 defaults for one target (see the module docstring for the evidence behind each row)."""

    activation_type: str  # static mode: uint8 (U8S8/U8U8) or int8 (S8S8)
    weight_type: str  # int8 (U8S8, S8S8) or uint8 (U8U8)
    reduce_range: bool  # 7-bit weights: no u8×s8 pair can saturate int16
    per_channel: bool
    residual_sum: bool
    bias_correction: bool  # static mode: Conv biases corrected for weight rounding (compress/equalize.py)
    smooth_quant: float  # SmoothQuant alpha, dynamic mode on graphs with LayerNormalization (0: off)
    dynamic_ops: tuple[str, ...]
    static_ops: tuple[str, ...]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


_EXACT = dict(activation_type="uint8", weight_type="int8", reduce_range=False, per_channel=True, residual_sum=True,
              bias_correction=True, smooth_quant=0.7,
              dynamic_ops=DYNAMIC_OPS, static_ops=STATIC_OPS)
_SATURATING = {**_EXACT, "reduce_range": True}

#: target name → defaults. The one table; README "Quantization" renders it.
DEFAULTS: dict[str, TargetDefaults] = {
    "x86-vnni": TargetDefaults(**_EXACT, why="VNNI sums u8×s8 products in int32: 8-bit weights are exact"),
    "x86-avx2": TargetDefaults(**_SATURATING, why="no VNNI: u8×s8 pairs saturate int16 unless weights are 7-bit"),
    "x86-avx512": TargetDefaults(**_SATURATING, why="AVX-512 without VNNI: same saturating vpmaddubsw as AVX2"),
    "arm64": TargetDefaults(**_EXACT, why="Arm kernels widen products exactly and accumulate in int32"),
}
if set(DEFAULTS) != set(TARGETS):  # pragma: no cover - a new target must get a row here
    raise RuntimeError(f"quantization defaults cover {sorted(DEFAULTS)}, targets are {sorted(TARGETS)}")


def defaults_for(target: Target) -> TargetDefaults:
    """The defaults row of ``target``."""
    return DEFAULTS[target.name]


def saturation_fix(target: Target) -> str:
    """The one-line fix to name when a model built with 8-bit U8S8 weights collapses on ``target``."""
    return (f"{target.name} adds u8×s8 products in pairs into int16 with saturation: use --reduce-range (7-bit "
            "weights, the default for this target) or --weight-type uint8 (U8U8, exact but slower)")
