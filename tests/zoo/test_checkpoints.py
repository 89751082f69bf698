"""Checkpoint layouts: known key names map onto the zoo modules; anything else is exit 2 with the closest layout."""

from __future__ import annotations

import pytest
import torch

from modelpress.errors import InputError
from modelpress.zoo import build_zoo, convert_checkpoint, load_checkpoint, read_checkpoint


def _model(name: str, n_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_zoo(name, input_shape=(3, 32, 32), n_classes=n_classes).eval()
    for module in model.modules():  # non-trivial BN statistics, so a lost buffer changes the outputs
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))


@pytest.mark.parametrize(("name", "wrap"), [("resnet18", "plain"), ("mobilenet_v2", "plain"),
                                            ("efficientnet_lite0", "plain"), ("resnet18", "module."),
                                            ("efficientnet_lite0", "model.")])
def test_known_layouts_round_trip_to_identical_outputs(name, wrap):
    source = _model(name)
    state = {("" if wrap == "plain" else wrap) + k: v.clone() for k, v in source.state_dict().items()}
    target = build_zoo(name, input_shape=(3, 32, 32), n_classes=10).eval()
    assert not torch.equal(_outputs(target), _outputs(source))
    load_checkpoint(target, name, state, source="synthetic")
    torch.testing.assert_close(_outputs(target), _outputs(source), rtol=0, atol=0)


def test_old_torchvision_files_without_num_batches_tracked_load():
    """torchvision's original ResNet files predate the BN counters: 20 of resnet18's 122 keys are absent."""
    source = _model("resnet18")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == 102
    converted = convert_checkpoint("resnet18", state, source)
    assert len(converted) == 122
    assert converted["bn1.num_batches_tracked"].dtype == torch.long


def test_unmatched_keys_name_the_closest_layout_and_the_first_keys():
    model = _model("resnet18")
    state = dict(model.state_dict())
    state["head.weight"] = state.pop("fc.weight")
    state["head.bias"] = state.pop("fc.bias")
    with pytest.raises(InputError) as info:
        convert_checkpoint("resnet18", state, model)
    assert info.value.exit_code == 2
    assert "closest is torchvision with 120 of 122 keys matched" in str(info.value)
    assert "2 unmatched file keys (head.weight, head.bias)" in str(info.value)
    assert "2 model keys not in the file (fc.weight, fc.bias)" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_another_family_is_refused():
    lite = _model("efficientnet_lite0").state_dict()
    resnet = _model("resnet18")
    with pytest.raises(InputError, match=r"match no known layout for zoo:resnet18: closest is .* with 0 of 296 keys "
                                         r"matched; 296 unmatched file keys \(_conv_stem.weight, _bn0.weight"):
        load_checkpoint(resnet, "resnet18", lite, source="lite.pt")


def test_shape_mismatch_is_one_message():
    source = _model("mobilenet_v2", n_classes=1000)
    target = _model("mobilenet_v2", n_classes=10)
    with pytest.raises(InputError, match=r"do not fit zoo:mobilenet_v2: 2 shape mismatches \(classifier.1.weight: "
                                         r"model \(10, 1280\) vs file \(1000, 1280\)"):
        load_checkpoint(target, "mobilenet_v2", source.state_dict(), source="mnv2.pth")


def test_read_checkpoint_never_unpickles_objects(tmp_path, monkeypatch):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert torch.equal(read_checkpoint(good)["w"], torch.ones(2))
    assert seen == [True]

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('payload ran')",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": Payload()}, evil)
    with pytest.raises(InputError, match=r"evil.pth could not be read with torch.load\(weights_only=True\)"):
        read_checkpoint(evil)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(InputError, match=r"cut.pth could not be read"):
        read_checkpoint(truncated)
    with pytest.raises(InputError, match=r"missing.pth does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
