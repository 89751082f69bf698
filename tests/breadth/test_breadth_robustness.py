"""Robustness to noise: monotone curves on a linear model, paired noise, token perturbations that keep masks valid."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from modelpress.data import Dataset
from modelpress.errors import InputError
from modelpress.evaluate.robustness import NoisePlan, check_levels, robustness


@pytest.fixture(scope="module")
def linear_case():
    """Two Gaussian classes in 8-D, kept where the true separating direction classifies them with a margin, and a
    linear model set to that direction: every sample is right on clean data, so with one noise draw scaled by σ
    a sample that turns wrong at σ stays wrong at any larger σ, and the accuracy curve must be non-increasing."""
    import torch

    from modelpress.sources import load_model

    rng = np.random.default_rng(1)
    n, d = 600, 8
    y = np.arange(n) % 2
    x = (rng.normal(size=(n, d)) + np.outer(2 * y - 1, np.full(d, 0.6))).astype(np.float32)
    margin = (2 * y - 1) * x.sum(axis=1)
    keep = margin > 0.5
    data = Dataset({"input": x[keep]}, y[keep].astype(np.int64), ("neg", "pos"), "synthetic")
    artifact = load_model("zoo:mlp", data=data, kwargs={"hidden": []})
    with torch.no_grad():
        linear = artifact.module[1]
        linear.weight.copy_(torch.tensor([[-0.6] * d, [0.6] * d]))
        linear.bias.zero_()
    return artifact, data


def test_accuracy_falls_monotonically_with_sigma_on_a_linear_model(linear_case):
    artifact, data = linear_case
    result = robustness(artifact, data, levels=[2.0, 0.25, 0.5, 1.0, 4.0], seed=0)
    levels = [row["level"] for row in result["levels"]]
    assert levels == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]  # clean first, then sorted
    accuracy = [row["accuracy"] for row in result["levels"]]
    agreement = [row["agreement"] for row in result["levels"]]
    assert all(a >= b for a, b in pairwise(accuracy)), accuracy
    assert all(a >= b for a, b in pairwise(agreement)), agreement
    assert accuracy[0] == 1.0 and accuracy[-1] < 0.8 and agreement[0] == 1.0
    assert len(set(accuracy)) >= 4  # the curve really moves
    assert result["inputs"] == [{"name": "input", "perturbation": "gaussian",
                                 "std": pytest.approx(float(np.std(data.inputs["input"])))}]


def test_same_seed_same_noise_for_every_model_and_level_scaling(linear_case):
    _, data = linear_case
    a, b = NoisePlan.draw(data.inputs, seed=7), NoisePlan.draw(data.inputs, seed=7)
    np.testing.assert_array_equal(a.apply(0.5)["input"], b.apply(0.5)["input"])
    clean = data.inputs["input"]
    step1, step2 = a.apply(1.0)["input"] - clean, a.apply(2.0)["input"] - clean
    np.testing.assert_allclose(step2, 2 * step1, rtol=1e-5, atol=1e-5)  # one draw, scaled by σ
    np.testing.assert_array_equal(a.apply(0.0)["input"], clean)
    assert not np.array_equal(NoisePlan.draw(data.inputs, seed=8).apply(0.5)["input"], a.apply(0.5)["input"])


def _tokens(n=200, t=12, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, t + 1, size=n)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(200, 600, size=(n, t)).astype(np.int64)  # regular tokens, never 0, 101 or 102
    ids[:, 0] = 101  # [CLS]
    ids[np.arange(n), lengths - 1] = 102  # [SEP]
    ids[mask == 0] = 0  # [PAD]
    return {"input_ids": ids, "attention_mask": mask}


def test_token_replacement_keeps_special_tokens_padding_and_mask():
    inputs = _tokens()
    plan = NoisePlan.draw(inputs, seed=0, mode="replace")
    low, high = plan.apply(0.2), plan.apply(0.6)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    np.testing.assert_array_equal(high["attention_mask"], mask)
    changed_low, changed_high = low["input_ids"] != ids, high["input_ids"] != ids
    assert not (changed_low & ~changed_high).any()  # nested: what p=0.2 perturbs, p=0.6 perturbs too
    eligible = mask.astype(bool) & ~np.isin(ids, [101, 102])
    assert not changed_high[~eligible].any()  # [CLS], [SEP] and padding untouched
    share = changed_high[eligible].mean()
    assert 0.5 < share < 0.62  # p = 0.6, less the draws that picked the same id
    assert set(np.unique(high["input_ids"][eligible])) <= set(np.unique(ids[eligible]))


def test_token_dropout_shifts_tokens_and_keeps_the_mask_consistent():
    inputs = _tokens(seed=1)
    out = NoisePlan.draw(inputs, seed=0, mode="dropout").apply(0.5)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    new_ids, new_mask = out["input_ids"], out["attention_mask"]
    assert new_ids.shape == ids.shape and (new_mask.sum(1) <= mask.sum(1)).all()
    assert (new_mask.sum(1) < mask.sum(1)).any()
    for row in range(len(ids)):
        real = new_ids[row][new_mask[row] == 1]
        assert real[0] == 101 and real[-1] == 102  # still [CLS] … [SEP]
        assert (new_ids[row][new_mask[row] == 0] == 0).all()  # padded with the pad id where the mask is 0
        assert (np.diff(new_mask[row]) <= 0).all()  # mask stays a prefix of ones
        original = list(ids[row][mask[row] == 1])
        it = iter(original)
        assert all(token in it for token in real)  # kept tokens are a subsequence, in order


def test_bad_levels_and_modes():
    with pytest.raises(InputError, match="must be a finite number ≥ 0, got -1"):
        check_levels([0.5, -1])
    with pytest.raises(InputError, match="token perturbation probability for integer input 'input_ids'"):
        check_levels([0.5, 1.5], _tokens(n=4))
    with pytest.raises(InputError, match="token noise mode must be one of replace, dropout"):
        NoisePlan.draw(_tokens(n=4), seed=0, mode="shuffle")
    assert check_levels([1.5], {"input": np.zeros((2, 2), np.float32)}) == (1.5,)
