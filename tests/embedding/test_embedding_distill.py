"""Depth pruning of an hf: encoder (prune --method layers) and distillation of embedding models on unlabelled text,
on a tiny 4-layer BERT sentence-transformers folder built from a transformers config (no real weights needed for
these mechanics; the MiniLM numbers are benchmarks/embedding.py --workload distill's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelpress.compress.distill import DistillConfig, embedding_loss
from modelpress.compress.prune import PruneConfig
from modelpress.compress.registry import StageContext, run_stage
from modelpress.data import load_data
from modelpress.errors import InputError
from modelpress.hf import evenly_spaced_layers
from modelpress.sources import check_builder, load_model

from ..conftest import save_tiny_bert

WORDS = ["the", "soup", "was", "cold", "good", "team", "won", "fast", "chip", "slow", "food", "tech", "hot", "lost"]
N_LAYERS = 4


@pytest.fixture(scope="module")
def st_bert(tmp_path_factory) -> Path:
    """A 4-layer BERT saved as a sentence-transformers folder (mean pooling, normalized)."""
    folder = save_tiny_bert(tmp_path_factory.mktemp("tiny-st-bert"), WORDS, layers=N_LAYERS, seed=0,
                            initializer_range=0.3)  # large weights: each layer changes the embedding
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16,
                                                                  "pooling_mode_mean_tokens": True}))
    return folder


def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=int(rng.integers(3, 7)))) for _ in range(n)]


def _text_file(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    rows = [{"text": t, **({"label": labels[i]} if labels else {})} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _layers(artifact):
    return artifact.module.encoder.encoder.layer


def _embed(artifact, data):
    import torch

    with torch.no_grad():
        return artifact.module(*(torch.from_numpy(data.inputs[k]) for k in ("input_ids", "attention_mask"))).numpy()


# ---- depth pruning --------------------------------------------------------------------------------------------------
def test_layer_pruning_keeps_the_chosen_layers_bit_identical_and_reloads(st_bert, tmp_path):
    model = load_model(f"hf:{st_bert}")
    assert model.task == "embedding" and len(_layers(model)) == N_LAYERS
    pruned = run_stage(model, PruneConfig(method="layers", keep_layers=(0, 2)), StageContext(work_dir=tmp_path))
    assert len(_layers(pruned)) == 2 and len(_layers(model)) == N_LAYERS  # the input model is untouched
    assert pruned.module.encoder.config.num_hidden_layers == 2
    for new, old in [(0, 0), (1, 2)]:
        a, b = _layers(pruned)[new].state_dict(), _layers(model)[old].state_dict()
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)  # bit-identical
    assert pruned.metadata["pruning"]["kept_layers"] == [0, 2]
    assert pruned.metadata["pruning"]["after"]["params"] < pruned.metadata["pruning"]["before"]["params"]
    pruned.save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["builder"]["kwargs"]["keep_layers"] == [0, 2] and manifest["task"] == "embedding"
    again = load_model(str(tmp_path / "art"))
    data = load_data(f"text:{_text_file(tmp_path / 't.jsonl', _sentences(6, 0))}?tokenizer=hf:{st_bert}&max_length=8")
    assert len(_layers(again)) == 2
    np.testing.assert_array_equal(_embed(again, data), _embed(pruned, data))
    # pruning again keeps layers of the pruned model; the builder records them in the folder's numbering
    twice = run_stage(again, PruneConfig(method="layers", keep_layers=(1,)), StageContext(work_dir=tmp_path / "2"))
    assert twice.builder["kwargs"]["keep_layers"] == [2]
    assert all(bool((v == _layers(model)[2].state_dict()[k]).all()) for k, v in _layers(twice)[0].state_dict().items())


def test_amount_keeps_evenly_spaced_layers_first_and_last(st_bert, tmp_path):
    # round(n · (1 − amount)) layers from the first to the last: 6 → [0, 2, 5] at 0.5 (2.5 rounds to 2), 12 → 6
    assert evenly_spaced_layers(6, 0.5) == [0, 2, 5]
    assert evenly_spaced_layers(12, 0.5) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced_layers(4, 0.9) == [0]
    pruned = run_stage(load_model(f"hf:{st_bert}"), PruneConfig(method="layers", amount=0.5),
                       StageContext(work_dir=tmp_path))
    assert pruned.metadata["pruning"]["kept_layers"] == [0, 3]


def test_the_builder_allow_list_accepts_keep_layers_and_refuses_a_tampered_value(st_bert, tmp_path):
    base = {"ref": f"hf:{st_bert}", "kwargs": {"task": "embedding", "pooling": "mean", "normalize": True}}
    ok = {**base, "kwargs": {**base["kwargs"], "keep_layers": [0, 2]}}
    assert check_builder(ok, where="manifest.json") == ok
    for bad, message in [("0,2", "keep_layers='0,2' is not allowed"), ([2, 0], "increasing"), ([], "non-empty"),
                         ([0, 0], "increasing"), ([True], "layer indices"), ([-1], "layer indices"),
                         ([0, 1.0], "layer indices"), ([0, N_LAYERS], f"beyond the {N_LAYERS}")]:
        with pytest.raises(InputError, match=message):
            check_builder({**base, "kwargs": {**base["kwargs"], "keep_layers": bad}}, where="manifest.json")
    # a tampered manifest is refused on reload, before anything is built
    pruned = run_stage(load_model(f"hf:{st_bert}"), PruneConfig(method="layers", keep_layers=(1, 3)),
                       StageContext(work_dir=tmp_path))
    pruned.save(tmp_path / "art")
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    manifest["builder"]["kwargs"]["keep_layers"] = [1, 7]
    (tmp_path / "art" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"keep_layers=\[1, 7\] names layers beyond the 4"):
        load_model(str(tmp_path / "art"))


@pytest.mark.parametrize("config, message", [
    (dict(method="layers", keep_layers=(0, 9)), r"layer\(s\) \[9\] out of range; the model has 4 layers"),
    (dict(method="layers", keep_layers=(0, 1, 2, 3)), "keeps all 4 layers"),
])
def test_bad_layer_choices_name_the_numbers(st_bert, tmp_path, config, message):
    with pytest.raises(InputError, match=message):
        run_stage(load_model(f"hf:{st_bert}"), PruneConfig(**config), StageContext(work_dir=tmp_path))


@pytest.mark.parametrize("config, message", [
    (dict(method="layers"), "needs keep_layers or amount, exactly one"),
    (dict(method="layers", keep_layers=(0,), amount=0.5), "needs keep_layers or amount, exactly one"),
    (dict(method="layers", keep_layers=(2, 1)), "increasing without repeats"),
    (dict(method="magnitude", amount=0.5, keep_layers=(0,)), "only applies to method layers"),
    (dict(method="layers", keep_layers=(-1,)), "keep_layers"),
])
def test_bad_layer_configs_are_input_errors(config, message):
    with pytest.raises(InputError, match=message):
        PruneConfig(**config)


def test_layer_pruning_on_the_command_line_bad_input_is_exit_2(run_cli, st_bert, tmp_path):
    r = run_cli("prune", "zoo:mlp", "--data", "sklearn:iris", "--method", "layers", "--keep-layer", "0",
                "-o", tmp_path / "mlp")
    assert r.exit_code == 2 and "is not one" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("prune", f"hf:{st_bert}", "--method", "layers", "--keep-layer", "1", "--keep-layer", "5",
                "-o", tmp_path / "bert")
    assert r.exit_code == 2 and "[5] out of range; the model has 4 layers" in r.stderr, r.stderr
    r = run_cli("prune", f"hf:{st_bert}", "--method", "layers", "--keep-layer", "1", "--keep-layer", "3",
                "-o", tmp_path / "ok")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["builder"]["kwargs"]["keep_layers"] == [1, 3]


# ---- distillation of embedding models -------------------------------------------------------------------------------
def _distill(st_bert, tmp_path, data_ref: str, *, seed: int = 0):
    original = load_model(f"hf:{st_bert}")
    student = run_stage(original, PruneConfig(method="layers", keep_layers=(0, 3)), StageContext(work_dir=tmp_path))
    train = load_data(data_ref)
    ctx = StageContext(work_dir=tmp_path / "d", train=train, original=original)
    config = DistillConfig(teacher="original", epochs=6, lr=3e-3, batch_size=8, seed=seed)
    return original, student, run_stage(student, config, ctx), train


def test_embedding_distillation_lowers_the_cosine_loss_on_unlabelled_text(st_bert, tmp_path):
    import torch

    ref = f"text:{_text_file(tmp_path / 'u.jsonl', _sentences(48, 1))}?tokenizer=hf:{st_bert}&max_length=8"
    teacher, student, distilled, train = _distill(st_bert, tmp_path, ref)
    assert not train.labelled
    held_out = load_data(f"text:{_text_file(tmp_path / 'h.jsonl', _sentences(24, 2))}"
                         f"?tokenizer=hf:{st_bert}&max_length=8")
    t = torch.from_numpy(_embed(teacher, held_out))
    before = float(embedding_loss(torch.from_numpy(_embed(student, held_out)), t))
    after = float(embedding_loss(torch.from_numpy(_embed(distilled, held_out)), t))
    assert after < 0.5 * before, (before, after)  # on sentences it never saw
    record = distilled.metadata["distillation"]
    assert record["loss"] == "embedding cosine" and record["alpha"] is None
    assert distilled.task == "embedding" and distilled.builder["kwargs"]["keep_layers"] == [0, 3]


def test_embedding_distillation_reads_no_labels(st_bert, tmp_path):
    """The same texts unlabelled, with labels, with shuffled labels, and as pairs: identical weights."""
    texts = _sentences(24, 3)
    rng = np.random.default_rng(0)
    labels = [str(v) for v in rng.choice(["a", "b", "c"], size=len(texts))]
    refs = [_text_file(tmp_path / "none.jsonl", texts), _text_file(tmp_path / "lab.jsonl", texts, labels),
            _text_file(tmp_path / "shuf.jsonl", texts, list(rng.permutation(labels)))]
    weights = []
    for i, path in enumerate(refs):
        _, _, distilled, _ = _distill(st_bert, tmp_path / str(i), f"text:{path}?tokenizer=hf:{st_bert}&max_length=8")
        weights.append({k: v.clone() for k, v in distilled.module.state_dict().items()})
    for other in weights[1:]:
        assert all(bool((weights[0][k] == other[k]).all()) for k in weights[0])
    # pairs: data (queries then documents) distills too, its pair structure unread
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("".join(json.dumps({"query": a, "document": b}) + "\n" for a, b in zip(texts[:12], texts[12:])))
    _, student, distilled, _ = _distill(st_bert, tmp_path / "pairs", f"pairs:{pairs}?tokenizer=hf:{st_bert}"
                                                                     f"&max_length=8")
    assert distilled.metadata["distillation"]["training"]["epochs_run"] == 6


def test_an_embedding_teacher_with_a_classifier_student_is_exit_2(st_bert, tmp_path):
    original = load_model(f"hf:{st_bert}")
    train = load_data(f"text:{_text_file(tmp_path / 'l.jsonl', _sentences(8, 4), ['a', 'b'] * 4)}"
                      f"?tokenizer=hf:{st_bert}&max_length=8")
    classifier = load_model(f"hf:{st_bert}?task=classification", data=train)
    with pytest.raises(InputError, match="is an embedding model but the student is a classifier"):
        run_stage(classifier, DistillConfig(teacher="original", epochs=1),
                  StageContext(work_dir=tmp_path, train=train, original=original))
    with pytest.raises(InputError, match="val_fraction"):
        run_stage(original, DistillConfig(teacher="original", epochs=1, val_fraction=0.2),
                  StageContext(work_dir=tmp_path, train=train, original=load_model(f"hf:{st_bert}")))


def test_unlabelled_and_partly_labelled_text_files(st_bert, tmp_path):
    data = load_data(f"text:{_text_file(tmp_path / 'u.jsonl', ['the soup', 'the team'])}?tokenizer=hf:{st_bert}")
    assert not data.labelled and data.class_names == ("unlabelled",)
    mixed = tmp_path / "m.jsonl"
    mixed.write_text('{"text": "the soup", "label": "a"}\n{"text": "the team"}\n')
    with pytest.raises(InputError, match=r"m.jsonl:2: 1 rows so far have a 'label' and 1 do not"):
        load_data(f"text:{mixed}?tokenizer=hf:{st_bert}")
