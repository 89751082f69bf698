"""Does the emulation of a CPU's INT8 kernels give what the real kernels give? (README, Diagnostics, item 0)

Two steps, so that the second runs without torch under an emulator that changes the CPU:

    python benchmarks/emulate.py build DIR          # native: train zoo:cnn (32, 64) and zoo:mlp (64) 2 epochs on
                                                    # digits, export ONNX, quantize with onnxruntime (static QDQ
                                                    # U8S8 per channel; dynamic)
    python benchmarks/emulate.py validate DIR       # this CPU's real kernels vs each target's emulation
    qemu-x86_64 -cpu max .venv/bin/python benchmarks/emulate.py validate DIR   # the same on AVX2 without VNNI

Each row: model, the CPU kind detected (CPUID through numpy), the target emulated, top-1 agreement of the emulated
outputs with the real ones and max |Δlogit|, the real outputs' top-1 agreement with FP32, and the layers' share
of saturated u8×s8 pair sums, on the first 360 test samples.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

MODELS = ("cnn-static", "mlp-static", "mlp-dynamic", "cnn-dynamic")


def build(folder: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static

    from modelpress.compress.export import ExportConfig, export_onnx
    from modelpress.compress.train import fit
    from modelpress.data import load_data
    from modelpress.sources import load_model

    folder.mkdir(parents=True, exist_ok=True)
    train, test = load_data("sklearn:digits", split="train"), load_data("sklearn:digits", split="test")
    name = next(iter(test.inputs))
    np.savez(folder / "test.npz", x=test.inputs[name])

    class Reader(CalibrationDataReader):
        def __init__(self, array: np.ndarray, key: str) -> None:
            self.batches = iter([{key: array[i:i + 16]} for i in range(0, 128, 16)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    for kind, kwargs in (("cnn", {}), ("mlp", {"hidden": [64]})):
        artifact = load_model(f"zoo:{kind}", data=test, kwargs=kwargs)
        fit(artifact.module, train, epochs=2, lr=1e-2, batch_size=64, seed=0)
        exported = export_onnx(artifact, folder / f"{kind}.onnx", config=ExportConfig())
        key = onnx.load(str(exported.path)).graph.input[0].name
        quantize_static(str(exported.path), str(folder / f"{kind}-static.onnx"), Reader(train.inputs[name], key),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        quantize_dynamic(str(exported.path), str(folder / f"{kind}-dynamic.onnx"), weight_type=QuantType.QInt8)
    print(f"models in {folder}")


def validate(folder: Path) -> None:
    import onnx
    import onnxruntime as ort

    from modelpress.runtime.emulate import emulate_outputs, ort_integer_outputs
    from modelpress.runtime.target import TARGETS, host_features, target_for_features

    host = target_for_features(host_features(), platform.machine())
    x = np.load(folder / "test.npz")["x"][:360]  # the first 360 test samples (the README table)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        key = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {key: x[i:i + 64]})[0] for i in range(0, len(x), 64)])

    print(f"CPU: {host.name} (features {', '.join(sorted(host_features()))}); {len(x)} samples\n")
    print("| model | emulated as | agreement with real | max \\|Δlogit\\| | real vs FP32 | saturated pairs per layer |")
    print("|---|---|---|---|---|---|")
    for name in MODELS:
        path = folder / f"{name}.onnx"
        real, fp32 = run(path), run(folder / f"{name.split('-')[0]}.onnx")
        model = onnx.load(str(path))
        key = model.graph.input[0].name
        outs = ort_integer_outputs(model)
        for target in ("x86-vnni", "x86-avx2"):
            emulated, emulator = emulate_outputs(model, TARGETS[target], ({key: x[i:i + 64]} for i in
                                                                         range(0, len(x), 64)), integer_outputs=outs)
            shares = ", ".join(f"{k} {v['clipped'] / v['pairs']:.2%}" for k, v in emulator.clipped.items()
                               if v["pairs"] and v["clipped"]) or "none"
            print(f"| {name} | {target} | {np.mean(emulated.argmax(1) == real.argmax(1)):.3f} | "
                  f"{np.abs(emulated - real).max():.3g} | {np.mean(real.argmax(1) == fp32.argmax(1)):.3f} | {shares} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["build", "validate"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    (build if args.step == "build" else validate)(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
