"""The shared training loop: determinism, per-epoch checkpoints, resume, early stopping, validation of settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelpress.compress import StageContext, config_for, run_stage
from modelpress.compress.train import TrainConfig, fit, split_validation
from modelpress.errors import InputError
from modelpress.sources import load_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_train(digits):
    train, _ = digits
    return train.subset(np.arange(0, len(train), 3))


def _cnn(test):
    return load_model("zoo:cnn", data=test, kwargs={"channels": [4, 8], "hidden": 16})


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Interrupt(Exception):
    pass


def test_fit_is_deterministic_for_a_seed(digits, small_train):
    _, test = digits
    a, b, c = _cnn(test), _cnn(test), _cnn(test)
    fit(a.module, small_train, epochs=2, lr=1e-2, batch_size=32, seed=3)
    fit(b.module, small_train, epochs=2, lr=1e-2, batch_size=32, seed=3)
    fit(c.module, small_train, epochs=2, lr=1e-2, batch_size=32, seed=4)
    assert _same(a.module, b.module)
    assert not _same(a.module, c.module)
    assert not a.module.training


def test_interrupted_run_resumes_to_identical_weights(digits, small_train, tmp_path):
    _, test = digits
    reference = _cnn(test)
    ref_log = fit(reference.module, small_train, epochs=3, lr=1e-2, batch_size=32, seed=0,
                  checkpoint_dir=tmp_path / "uninterrupted")
    steps_per_epoch = -(-len(small_train) // 32)
    calls = {"n": 0}

    def crash_in_epoch_two(module, inputs, targets):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:
            raise _Interrupt
        return F.cross_entropy(module(*inputs), targets)

    folder = tmp_path / "ckpt"
    interrupted = _cnn(test)
    with pytest.raises(_Interrupt):
        fit(interrupted.module, small_train, epochs=3, lr=1e-2, batch_size=32, seed=0, loss_fn=crash_in_epoch_two,
            desc="cross_entropy", checkpoint_dir=folder)
    state = json.loads((folder / "state.json").read_text())
    assert state["log"]["epochs_run"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0001.safetensors", "state.json"]

    resumed = _cnn(test)
    log = fit(resumed.module, small_train, epochs=3, lr=1e-2, batch_size=32, seed=0,
              loss_fn=lambda m, x, y: F.cross_entropy(m(*x), y), desc="cross_entropy", checkpoint_dir=folder)
    assert log["resumed_from_epoch"] == 1
    assert log["epochs_run"] == 3
    assert _same(resumed.module, reference.module)
    assert log["loss_per_epoch"] == pytest.approx(ref_log["loss_per_epoch"], abs=0)
    assert not list(folder.glob(".*.tmp"))


def test_checkpoint_of_other_settings_is_not_resumed(digits, small_train, tmp_path):
    _, test = digits
    folder = tmp_path / "ckpt"
    fit(_cnn(test).module, small_train, epochs=1, lr=1e-2, batch_size=32, seed=0, checkpoint_dir=folder)
    other = _cnn(test)
    log = fit(other.module, small_train, epochs=1, lr=5e-3, batch_size=32, seed=0, checkpoint_dir=folder)
    assert log["resumed_from_epoch"] == 0
    fresh = _cnn(test)
    fit(fresh.module, small_train, epochs=1, lr=5e-3, batch_size=32, seed=0)
    assert _same(other.module, fresh.module)


def test_finished_run_reloads_its_final_weights(digits, small_train, tmp_path):
    _, test = digits
    first, again = _cnn(test), _cnn(test)
    fit(first.module, small_train, epochs=2, lr=1e-2, batch_size=32, seed=0, checkpoint_dir=tmp_path)
    log = fit(again.module, small_train, epochs=2, lr=1e-2, batch_size=32, seed=0, checkpoint_dir=tmp_path)
    assert log["resumed_from_epoch"] == 2
    assert _same(first.module, again.module)


def test_early_stopping_keeps_the_best_epoch(digits, small_train):
    """Validation labels are shuffled, so learning the real task raises validation loss: training must stop."""
    from modelpress.compress.train import _validate

    _, test = digits
    rng = np.random.default_rng(0)
    noisy_val = test.subset(np.arange(len(test)))
    noisy_val = type(noisy_val)(noisy_val.inputs, rng.permutation(noisy_val.y), noisy_val.class_names,
                                noisy_val.source, "validation")
    model = _cnn(test)
    log = fit(model.module, small_train, epochs=12, lr=1e-2, batch_size=32, seed=0, val_data=noisy_val,
              patience=2)
    assert log["stopped_early"]
    assert log["epochs_run"] < 12
    assert log["epochs_run"] - log["best_epoch"] == 2
    best = min(log["val_loss_per_epoch"])
    assert log["val_loss_per_epoch"][log["best_epoch"] - 1] == best
    assert _validate(model.module, noisy_val, batch_size=256)[0] == pytest.approx(best, rel=1e-6)


def test_validation_split_is_stratified_and_disjoint():
    from modelpress.data import Dataset

    y = np.repeat(np.arange(4), [40, 40, 10, 10])
    data = Dataset({"x": np.arange(len(y), dtype=np.float32)[:, None]}, y, ("a", "b", "c", "d"), "ids")
    fit_part, val_part = split_validation(data, 0.2, seed=0)
    fit_ids, val_ids = set(fit_part.inputs["x"][:, 0]), set(val_part.inputs["x"][:, 0])
    assert len(val_ids) == 20 and len(fit_ids) == 80 and not fit_ids & val_ids
    assert np.bincount(val_part.y).tolist() == [8, 8, 2, 2]


@pytest.mark.parametrize("params, message", [
    ({"epochs": 0}, r"train.epochs must be in \[1, 10000\], got 0"),
    ({"val_fraction": 1.0}, r"train.val_fraction must be in \[0, 1\), got 1.0"),
    ({"patience": 2}, r"train.patience = 2 needs a validation split"),
    ({"optimizer": "adam"}, r"train.optimizer must be one of adamw, sgd, got 'adam'"),
])
def test_train_config_rejects_bad_settings(params, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**params)


def test_train_stage_leaves_no_checkpoints(digits, small_train, tmp_path):
    _, test = digits
    model = _cnn(test)
    ctx = StageContext(work_dir=tmp_path / "stage", train=small_train, eval=test)
    result = run_stage(model, config_for("train", {"epochs": 1, "optimizer": "sgd", "schedule": "constant"}), ctx)
    assert result.metadata["training"]["epochs_run"] == 1
    assert not (tmp_path / "stage" / "checkpoints").exists()
    assert not _same(result.module, model.module)  # trained a copy; the input artifact is untouched
