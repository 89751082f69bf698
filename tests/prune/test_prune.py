"""Pruning: sparsity that holds and is permanent, channels that are really gone, 2:4 layout, recovery by fine-tuning."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from modelpress.compress import StageContext, config_for, run_stage
from modelpress.compress.prune import PruneConfig
from modelpress.compress.train import fit
from modelpress.errors import InputError
from modelpress.evaluate.evaluator import predict
from modelpress.runtime.footprint import footprint
from modelpress.sources import load_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dense_cnn(digits, tmp_path_factory):
    """zoo:cnn 16/32 channels trained to ~96% on digits, saved. Returns (artifact, folder, test accuracy)."""
    train, test = digits
    artifact = load_model("zoo:cnn", data=test, kwargs={"channels": [16, 32], "hidden": 64})
    fit(artifact.module, train, epochs=6, lr=1e-2, batch_size=64, seed=0)
    folder = tmp_path_factory.mktemp("dense-cnn")
    saved = artifact.save(folder)
    return saved, folder, _accuracy(saved, test)


def _accuracy(artifact, data) -> float:
    return float((predict(artifact, data).argmax(1) == data.y).mean())


def _prune(artifact, digits, tmp_path, **params):
    train, test = digits
    ctx = StageContext(work_dir=tmp_path / "stage", train=train, eval=test, original=artifact)
    result = run_stage(artifact, config_for("prune", params), ctx)
    saved = result.save(tmp_path / "out")
    return saved, ctx


def _weights(folder, kinds=("weight",)):
    return {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if k.endswith(kinds)}


def test_magnitude_global_50_is_exact_and_permanent(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, ctx = _prune(artifact, digits, tmp_path, method="magnitude", amount=0.5)
    record = saved.metadata["pruning"]
    assert record["target_sparsity"] == pytest.approx(0.50, abs=0.01)
    state = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not [k for k in state if k.endswith(("_orig", "_mask"))]
    conv_linear = [k for k in state if k.endswith("weight") and state[k].dim() >= 2]
    zeros = sum(int((state[k] == 0).sum()) for k in conv_linear)
    assert zeros / sum(state[k].numel() for k in conv_linear) == pytest.approx(0.50, abs=0.01)
    reloaded = load_model(str(tmp_path / "out"))
    assert all(not m._forward_pre_hooks for m in reloaded.module.modules())
    assert all(not m._forward_pre_hooks for m in saved.module.modules())
    x = torch.from_numpy(digits[1].inputs["input"][:16])
    assert torch.equal(reloaded.module(x), saved.module(x))
    assert record["mac_ratio"] == 1.0 and record["param_ratio"] == 1.0  # dense kernels do the same work
    assert any("magnitude pruning" in n for n in ctx.notes)
    assert not (tmp_path / "stage" / "checkpoints").exists()


def test_magnitude_per_layer_prunes_each_layer_equally(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    _prune(artifact, digits, tmp_path, method="magnitude", amount=0.3, scope="layer")
    for key, w in _weights(tmp_path / "out").items():
        if w.dim() >= 2:
            assert float((w == 0).float().mean()) == pytest.approx(0.30, abs=0.01), key


def test_two_four_every_group_of_four_has_two_zeros(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, _ = _prune(artifact, digits, tmp_path, method="2:4")
    weights = _weights(tmp_path / "out")
    linear = [k for k, w in weights.items() if w.dim() == 2]
    assert len(linear) == 2
    for key in linear:
        w = weights[key]
        groups = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
        assert int(groups.min()) >= 2, key
    for key, w in weights.items():
        if w.dim() == 4:
            assert int((w == 0).sum()) == 0, f"{key}: 2:4 touches Linear layers only"
    assert saved.metadata["pruning"]["target_sparsity"] == pytest.approx(0.5)


def test_structured_50_removes_channels_and_still_exports(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, _ = _prune(artifact, digits, tmp_path, method="structured", amount=0.5)
    before, after = footprint(artifact), footprint(load_model(str(tmp_path / "out")))
    assert after["params"] <= 0.6 * before["params"]
    assert after["macs"] <= 0.6 * before["macs"]
    record = saved.metadata["pruning"]
    assert record["param_ratio"] <= 0.6 and record["mac_ratio"] <= 0.6
    assert record["channels"]["1"] == [16, 8] and record["channels"]["5"] == [32, 16]
    assert saved.builder["resized"] is True and saved.builder["shapes"]["1.weight"] == [8, 1, 3, 3]
    reloaded = load_model(str(tmp_path / "out"))
    convs = [m for m in reloaded.module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    _, test = digits
    export_ctx = StageContext(work_dir=tmp_path / "export", eval=test)
    onnx_artifact = run_stage(reloaded, config_for("export", {}), export_ctx)
    assert onnx_artifact.metadata["verification"]["passed"]
    assert onnx_artifact.metadata["verification"]["max_abs_diff"] < 1e-4


def test_structured_on_mlp_reloads_from_manifest(digits, tmp_path):
    _, test = digits
    mlp = load_model("zoo:mlp", data=test, kwargs={"hidden": [32, 16]})
    saved, _ = _prune(mlp, digits, tmp_path, method="structured", amount=0.5, importance="l2")
    reloaded = load_model(str(tmp_path / "out"))
    widths = [m.out_features for m in reloaded.module.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 8, 10]
    x = torch.from_numpy(test.inputs["input"][:8])
    assert torch.allclose(reloaded.module(x), saved.module(x))


def test_structured_target_macs_reaches_the_ratio(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, ctx = _prune(artifact, digits, tmp_path, method="structured", target_macs=0.5)
    ratio = saved.metadata["pruning"]["mac_ratio"]
    assert 0.35 <= ratio <= 0.5
    assert any("target MAC ratio 0.5" in n for n in ctx.notes)


def test_finetune_after_70_percent_recovers_within_two_points(dense_cnn, digits, tmp_path):
    """Iterative schedule: prune to 35%, fine-tune 2 epochs, prune to 70%, fine-tune 2 epochs."""
    artifact, _, dense_acc = dense_cnn
    _, test = digits
    pruned, _ = _prune(artifact, digits, tmp_path / "a", method="magnitude", amount=0.7)
    tuned, _ = _prune(artifact, digits, tmp_path / "b", method="magnitude", amount=0.7, steps=2, finetune_epochs=2,
                      lr=3e-3)
    pruned_acc, tuned_acc = _accuracy(pruned, test), _accuracy(tuned, test)
    assert dense_acc > 0.93
    assert pruned_acc < dense_acc - 0.10, "70% pruning should hurt before fine-tuning (else the test proves nothing)"
    assert tuned_acc >= dense_acc - 0.02
    record = tuned.metadata["pruning"]
    assert record["target_sparsity"] == pytest.approx(0.70, abs=0.01)
    assert [len(log["loss_per_epoch"]) for log in record["finetune"]] == [2, 2]


def test_masks_stay_fixed_while_fine_tuning(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    _prune(artifact, digits, tmp_path / "a", method="magnitude", amount=0.5)
    _prune(artifact, digits, tmp_path / "b", method="magnitude", amount=0.5, finetune_epochs=1, lr=3e-3)
    w_pruned, w_tuned = _weights(tmp_path / "a" / "out"), _weights(tmp_path / "b" / "out")
    changed = False
    for key, w in w_pruned.items():
        if w.dim() >= 2:
            assert torch.equal(w == 0, w_tuned[key] == 0), key
            changed |= not torch.equal(w, w_tuned[key])
    assert changed, "fine-tuning should have moved the surviving weights"


def test_iterative_structured_with_taylor_importance(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, _ = _prune(artifact, digits, tmp_path, method="structured", amount=0.5, steps=2, importance="taylor",
                      finetune_epochs=1)
    record = saved.metadata["pruning"]
    assert len(record["finetune"]) == 2
    assert record["channels"]["1"] == [16, 8]


@pytest.mark.parametrize("params, message", [
    ({"method": "magnitude", "amount": 1.5}, r"prune.amount must be in \(0, 1\), got 1.5"),
    ({"method": "magnitude", "amount": 0}, r"prune.amount must be in \(0, 1\), got 0"),
    ({"method": "structured"}, r"prune method structured needs an amount"),
    ({"method": "magnitude", "target_macs": 0.5}, r"prune.target_macs only applies to method structured"),
    ({"method": "2:4", "amount": 0.7}, r"prune.amount is fixed at 0.5 for method 2:4, got 0.7"),
    ({"method": "random", "amount": 0.5}, r"prune.method must be one of magnitude, structured, 2:4"),
])
def test_prune_config_rejects_bad_values(params, message):
    with pytest.raises(InputError, match=message):
        PruneConfig(**params)


def test_ignore_names_an_unknown_layer(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    with pytest.raises(InputError, match=r"prune.ignore: the model has no layer '99'"):
        _prune(artifact, digits, tmp_path, method="structured", amount=0.5, ignore=["99"])


def test_cli_amount_outside_range_exits_2(run_cli, dense_cnn, tmp_path):
    _, folder, _ = dense_cnn
    result = run_cli("prune", folder, "--method", "magnitude", "--amount", "1.5", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: prune.amount must be in (0, 1), got 1.5"
    assert not (tmp_path / "out").exists()


def test_cli_structured_on_untraceable_model_names_the_layer(run_cli, tmp_path):
    result = run_cli("prune", "zoo:transformer", "--data", "sklearn:digits", "--method", "structured",
                     "--amount", "0.5", "-o", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "structured pruning cannot handle layer 'blocks.0' (EncoderBlock)" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_structured_on_recurrent_model_says_what_was_kept(run_cli, tmp_path):
    result = run_cli("prune", "zoo:lstm", "--data", "sklearn:digits", "--method", "structured", "--amount", "0.5",
                     "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "found no channel group it can remove" in result.stderr and "'lstm' (LSTM layers are kept whole)" in (
        result.stderr)


def test_cli_finetune_without_data_exits_2(run_cli, dense_cnn, tmp_path):
    _, folder, _ = dense_cnn
    result = run_cli("prune", folder, "--method", "magnitude", "--amount", "0.5", "--finetune-epochs", "1",
                     "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: stage 'prune' needs train data")


def test_cli_prune_with_finetune_writes_a_reloadable_artifact(run_cli, dense_cnn, digits, tmp_path):
    _, folder, _ = dense_cnn
    out = tmp_path / "s50"
    result = run_cli("prune", folder, "--method", "structured", "--amount", "0.5", "--finetune-epochs", "2",
                     "--lr", "3e-3", "--data", "sklearn:digits", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "MAC ratio 0.2" in result.stdout and f"wrote {out}" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    reloaded = load_model(str(out))
    record = reloaded.metadata["pruning"]
    assert record["after"]["params"] < 0.6 * record["before"]["params"]
    assert _accuracy(reloaded, digits[1]) > 0.5


def test_structured_round_to_keeps_multiples(dense_cnn, digits, tmp_path):
    artifact, _, _ = dense_cnn
    saved, _ = _prune(artifact, digits, tmp_path, method="structured", amount=0.3, round_to=8)
    assert saved.metadata["pruning"]["channels"] == {"1": [16, 8], "5": [32, 16], "10": [64, 40]}
