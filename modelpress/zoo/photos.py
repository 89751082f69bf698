"""Natural photos for the ImageNet CNNs without a download: seeded crops, flips and scales of the two photos that
scikit-learn ships (``sklearn.datasets.load_sample_images``: china.jpg, a temple; flower.jpg, a dahlia).

Two photos are not ImageNet, but their crops have the statistics INT8 calibration and a logit-cosine check need
(natural colour, edges, textures at several scales), where random noise would give activation ranges no real input
produces. Used by ``benchmarks/quantize.py --workload imagenet-cnn`` and ``examples/imagenet_cnn.yaml``.
"""

from __future__ import annotations

import numpy as np

from ..data import Dataset
from .efficientnet_lite import LITE_MEAN_255, LITE_STD_255

PHOTOS = ("china.jpg", "flower.jpg")
#: The ImageNet class of each photo's subject: 698 "palace" (china.jpg, a temple) and 985 "daisy" (flower.jpg, a
#: dahlia, which ImageNet lacks). They are the pretrained Lite1's own top-1 on the whole photos at 224×224.
PHOTO_CLASSES = (698, 985)


def sample_photos(n: int, *, seed: int = 0, size: int = 224, mean_255: tuple[float, float, float] = LITE_MEAN_255,
                  std_255: tuple[float, float, float] = LITE_STD_255) -> tuple[np.ndarray, np.ndarray]:
    """``n`` crops (N, 3, size, size) float32, normalized ``(pixel - mean) / std`` on the 0…255 scale, and the
    index of the photo each came from. Crop sides are 35-100 % of the photo's shorter side, anywhere in it, half of them
    mirrored, resized with antialiasing (bilinear). The default normalization is EfficientNet-Lite's."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(seed)
    images = [torch.from_numpy(np.array(load_sample_image(p))).permute(2, 0, 1).float() for p in PHOTOS]
    mean = torch.tensor(mean_255).view(1, 3, 1, 1)
    std = torch.tensor(std_255).view(1, 3, 1, 1)
    crops, which = [], np.arange(n) % len(images)
    for k in which:
        image = images[k]
        h, w = image.shape[1:]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = image[:, y:y + side, x:x + side][None]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crops.append(((crop - mean) / std)[0].numpy())
    return np.stack(crops).astype(np.float32), which.astype(np.int64)


def lite_photos() -> Dataset:
    """64 crops at 224×224 for EfficientNet-Lite, labelled with the ImageNet class of their photo's subject
    (:data:`PHOTO_CLASSES`; a data reference: ``modelpress.zoo.photos:lite_photos``). A crop of a temple roof may
    rightly be "pagoda" or "roof": judge a compressed model by its fidelity to the FP32 model (top-1 agreement,
    logit cosine) more than by this accuracy."""
    x, which = sample_photos(64, seed=0)
    names = [f"imagenet_{i}" for i in range(1000)]
    names[PHOTO_CLASSES[0]], names[PHOTO_CLASSES[1]] = "palace", "daisy"
    y = np.asarray(PHOTO_CLASSES, dtype=np.int64)[which]
    return Dataset({"input": x}, y, tuple(names), "modelpress.zoo.photos:lite_photos")
