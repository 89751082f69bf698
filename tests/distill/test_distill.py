"""Distillation: the Hinton loss, a frozen teacher, a measurable gain over training from scratch, prune → distill."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelpress.compress import StageContext, config_for, run_stage
from modelpress.compress.distill import DistillConfig, kd_loss
from modelpress.compress.train import fit
from modelpress.errors import InputError
from modelpress.evaluate.evaluator import predict
from modelpress.sources import load_model

STUDENT = {"hidden": [32]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """zoo:mlp with 256 hidden units trained on all of digits' train split (~96%). Returns (artifact, folder)."""
    train, test = digits
    artifact = load_model("zoo:mlp", data=test, kwargs={"hidden": [256]})
    fit(artifact.module, train, epochs=15, lr=3e-3, batch_size=64, seed=0)
    folder = tmp_path_factory.mktemp("teacher")
    return artifact.save(folder), folder


@pytest.fixture(scope="module")
def few_labels(digits):
    """135 labelled samples: the regime where the teacher's soft targets carry information the labels lack."""
    train, _ = digits
    return train.subset(np.arange(0, len(train), 10))


def _accuracy(artifact, data) -> float:
    return float((predict(artifact, data).argmax(1) == data.y).mean())


def _distill(teacher_artifact, train, tmp_path, *, original=None, **params):
    ctx = StageContext(work_dir=tmp_path, train=train, original=original)
    return run_stage(teacher_artifact, config_for("distill", params), ctx)


def test_kd_loss_is_hinton_with_t_squared_scaling():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5) * 3
    y = torch.randint(0, 5, (8,))
    for temp in (1.0, 4.0):
        p_t = F.softmax(t / temp, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / temp, 1))).sum(1).mean()
        want = 0.7 * temp**2 * kl + 0.3 * F.cross_entropy(s, y)
        assert float(kd_loss(s, t, y, temperature=temp, alpha=0.7)) == pytest.approx(float(want), rel=1e-5)
    assert float(kd_loss(t, t, y, temperature=3.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(s, t, y, temperature=2.0, alpha=0.0)) == pytest.approx(float(F.cross_entropy(s, y)))


def test_distilled_student_beats_the_same_student_from_scratch(teacher, few_labels, digits, tmp_path):
    """Same architecture, data, epochs, learning rate and seeds; only the loss differs."""
    teacher_artifact, _ = teacher
    _, test = digits
    gaps = []
    for seed in (0, 1, 2):
        scratch = load_model("zoo:mlp", data=test, kwargs=STUDENT, seed=seed)
        fit(scratch.module, few_labels, epochs=60, lr=1e-2, batch_size=32, seed=seed)
        student = _distill(teacher_artifact, few_labels, tmp_path / str(seed), teacher="input", student="zoo:mlp",
                           student_kwargs=STUDENT, temperature=3.0, alpha=0.9, epochs=60, lr=1e-2, batch_size=32,
                           seed=seed)
        gaps.append(_accuracy(student, test) - _accuracy(scratch, test))
    assert min(gaps) > 0, gaps
    assert float(np.mean(gaps)) >= 0.02, gaps


def test_teacher_is_frozen_and_untouched(teacher, few_labels, tmp_path):
    teacher_artifact, _ = teacher
    before = {k: v.clone() for k, v in teacher_artifact.module.state_dict().items()}
    student = _distill(teacher_artifact, few_labels, tmp_path, teacher="input", student="zoo:mlp",
                       student_kwargs=STUDENT, epochs=1)
    after = teacher_artifact.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher_artifact.module.training
    assert all(p.requires_grad for p in teacher_artifact.module.parameters())  # the input artifact is not mutated
    assert student.source == "zoo:mlp" and student.metadata["distillation"]["teacher"] == teacher_artifact.source
    assert not (tmp_path / "checkpoints").exists()


def test_prune_then_distill_from_the_original_recovers(teacher, digits, tmp_path):
    teacher_artifact, _ = teacher
    train, test = digits
    ctx = StageContext(work_dir=tmp_path / "prune", train=train, eval=test, original=teacher_artifact)
    pruned = run_stage(teacher_artifact, config_for("prune", {"method": "structured", "amount": 0.8}), ctx)
    recovered = _distill(pruned, train, tmp_path / "distill", original=teacher_artifact, teacher="original",
                         epochs=8, lr=3e-3)
    dense_acc, pruned_acc, recovered_acc = (_accuracy(a, test) for a in (teacher_artifact, pruned, recovered))
    assert pruned_acc < dense_acc - 0.10
    assert recovered_acc >= dense_acc - 0.03
    assert recovered.builder["resized"] is True  # the student keeps its pruned shapes
    assert recovered.module.state_dict()["1.weight"].shape == (51, 64)


def test_feature_matching_pulls_student_features_to_the_teacher(teacher, digits, tmp_path):
    teacher_artifact, _ = teacher
    train, test = digits
    wide = {"hidden": [256]}
    # seed 1: a student initialised like the teacher (seed 0) would have aligned hidden units from the start
    common = {"teacher": "input", "student": "zoo:mlp", "student_kwargs": wide, "epochs": 3, "lr": 3e-3, "seed": 1}
    plain = _distill(teacher_artifact, train, tmp_path / "plain", **common)
    matched = _distill(teacher_artifact, train, tmp_path / "feat", features=[["2", "2"]], feature_weight=50.0,
                       **common)
    x = torch.from_numpy(test.inputs["input"][:64])

    def hidden(module):
        return module[:3](x)

    with torch.no_grad():
        target = hidden(teacher_artifact.module)
        gap_plain = float(F.mse_loss(hidden(plain.module), target))
        gap_matched = float(F.mse_loss(hidden(matched.module), target))
    assert gap_matched < 0.5 * gap_plain


def test_onnx_teacher_teaches_like_its_torch_original(teacher, few_labels, digits, tmp_path):
    teacher_artifact, _ = teacher
    onnx_teacher = run_stage(teacher_artifact, config_for("export", {"exporter": "torchscript"}),
                             StageContext(work_dir=tmp_path / "onnx", eval=digits[1]))
    common = {"student": "zoo:mlp", "student_kwargs": STUDENT, "epochs": 2, "seed": 0}
    from_torch = _distill(teacher_artifact, few_labels, tmp_path / "t", teacher="input", **common)
    from_onnx = _distill(teacher_artifact, few_labels, tmp_path / "o", teacher=str(onnx_teacher.path), **common)
    a, b = from_torch.module.state_dict(), from_onnx.module.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3
    assert from_onnx.metadata["distillation"]["teacher"] == str(onnx_teacher.path)


def test_feature_matching_needs_equal_shapes(teacher, few_labels, tmp_path):
    teacher_artifact, _ = teacher
    with pytest.raises(InputError, match=r"teacher layer '2' outputs \(2, 256\) but student layer '2' outputs "
                                         r"\(2, 32\)"):
        _distill(teacher_artifact, few_labels, tmp_path, teacher="input", student="zoo:mlp", student_kwargs=STUDENT,
                 features=[["2", "2"]], epochs=1)


@pytest.mark.parametrize("params, message", [
    ({"temperature": 0}, r"distill.temperature must be in \(0, 100\], got 0"),
    ({"alpha": 1.5}, r"distill.alpha must be in \[0, 1\], got 1.5"),
    ({"student": "pkg.mod:fn", "student_kwargs": {"hidden": [8]}}, r"student_kwargs only apply to zoo: students"),
    ({"teacher": "input"}, r"distill.teacher and distill.student are the same model \('input'\)"),
])
def test_distill_config_rejects_bad_values(params, message):
    with pytest.raises(InputError, match=message):
        DistillConfig(**params)


def test_cli_distill_writes_a_student_artifact(run_cli, teacher, tmp_path):
    _, folder = teacher
    out = tmp_path / "student"
    result = run_cli("distill", "--teacher", folder, "--student", "zoo:mlp", "--student-kwargs", '{"hidden": [16]}',
                     "--data", "sklearn:digits", "--epochs", "2", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    reloaded = load_model(str(out))
    assert reloaded.module[1].out_features == 16
    assert reloaded.metadata["distillation"]["training"]["epochs_run"] == 2


def test_cli_teacher_and_student_class_counts_differ(run_cli, teacher, tmp_path):
    _, folder = teacher
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "three.npz", x=rng.normal(size=(30, 64)).astype(np.float32), y=np.arange(30) % 3)
    from modelpress.data import load_data

    three = load_model("zoo:mlp", data=load_data(str(tmp_path / "three.npz")), kwargs={"hidden": [8]})
    three.save(tmp_path / "three-class")
    result = run_cli("distill", "--teacher", folder, "--student", tmp_path / "three-class", "--data",
                     "sklearn:digits", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(
        f"error: teacher {folder} outputs 10 classes but student {tmp_path / 'three-class'} outputs 3")
    assert not (tmp_path / "out").exists()


def test_cli_distill_without_training_data_exits_2(run_cli, teacher, tmp_path):
    _, folder = teacher
    result = run_cli("distill", "--teacher", folder, "--student", "zoo:mlp", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: stage 'distill' needs train data")
