"""Pipeline spec validation: every error names file:line and the key path, suggests the closest key, runs nothing."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from modelpress.compress.prune import PruneConfig
from modelpress.compress.train import TrainConfig
from modelpress.errors import InputError
from modelpress.pipeline import MAX_SPEC_BYTES, load_spec

REPO = Path(__file__).resolve().parents[2]

VALID = """\
name: tiny
model: zoo:mlp
model_kwargs:
  hidden: [8]
data:
  eval: sklearn:iris
stages:
  - type: train
    epochs: 2
  - type: prune
    method: magnitude
    amount: 0.5
evaluate:
  batch_sizes: [1, 4]
  latency: false
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_spec(path)
    return info.value.format_message()


def test_valid_spec_becomes_typed_config(tmp_path):
    spec = load_spec(write(tmp_path, VALID))
    assert spec.name == "tiny" and spec.model == "zoo:mlp" and spec.model_kwargs == {"hidden": [8]}
    assert spec.stages == (TrainConfig(epochs=2), PruneConfig(method="magnitude", amount=0.5))
    assert spec.evaluate.batch_sizes == (1, 4) and spec.evaluate.measure_latency is False
    assert spec.data.eval == "sklearn:iris" and spec.optional == frozenset()


def test_unknown_top_level_key_names_line_and_suggests(tmp_path):
    message = error_of(tmp_path, VALID.replace("stages:", "stagse:"))
    assert "p.yaml:7: stagse: unknown key" in message
    assert "did you mean 'stages'?" in message


def test_unknown_stage_param_names_key_path_and_suggestion(tmp_path):
    message = error_of(tmp_path, VALID.replace("amount: 0.5", "amout: 0.5"))
    assert "p.yaml:12: stages[1].amout: unknown key for stage 'prune'" in message
    assert "did you mean 'amount'?" in message


def test_wrong_type_names_line_and_expected_type(tmp_path):
    message = error_of(tmp_path, VALID.replace("epochs: 2", "epochs: ten"))
    assert message.startswith(f"{tmp_path / 'p.yaml'}:9: stages[0].epochs: expected an integer, got 'ten'")


def test_out_of_range_value_points_at_its_line(tmp_path):
    message = error_of(tmp_path, VALID.replace("amount: 0.5", "amount: 1.5"))
    assert "p.yaml:12: stages[1].amount: stage 'prune':" in message and "1.5" in message


def test_unknown_stage_type_suggests_a_registered_one(tmp_path):
    message = error_of(tmp_path, VALID.replace("type: prune", "type: prnue"))
    assert "p.yaml:10: stages[1].type: unknown stage type 'prnue'" in message
    assert "did you mean 'prune'?" in message


def test_nested_params_form_gets_a_pointer_to_the_documented_form(tmp_path):
    message = error_of(tmp_path, VALID.replace("    epochs: 2", "    params: {epochs: 2}"))
    assert "stages[0].params: unknown key for stage 'train'" in message
    assert "next to 'type:'" in message


def test_python_tags_are_refused_before_anything_is_constructed(tmp_path):
    marker = tmp_path / "pwned"
    text = VALID.replace("model: zoo:mlp", f"model: !!python/object/apply:os.system ['touch {marker}']")
    message = error_of(tmp_path, text)
    assert "p.yaml:2: model: YAML tag !!python/object/apply:os.system is not allowed" in message
    assert not marker.exists()
    assert "is not allowed" in error_of(tmp_path, VALID + "extra: !custom 3\n")


def test_anchor_bomb_fails_fast(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    started = time.perf_counter()
    message = error_of(tmp_path, "\n".join(lines) + "\n" + VALID)
    assert "expands to more than" in message
    assert time.perf_counter() - started < 5


def test_recursive_alias_is_refused(tmp_path):
    message = error_of(tmp_path, VALID + "loop: &x [*x]\n")
    assert "loop" in message and ("deeper than" in message or "expands" in message or "alias" in message)


def test_duplicate_key_names_both_lines(tmp_path):
    message = error_of(tmp_path, VALID.replace("  eval: sklearn:iris", "  eval: sklearn:iris\n  eval: sklearn:wine"))
    assert "p.yaml:7: data.eval: duplicate key (first at line 6)" in message


def test_yaml_syntax_error_has_a_line(tmp_path):
    message = error_of(tmp_path, VALID.replace("  batch_sizes: [1, 4]", "  batch_sizes: [1, 4"))
    assert "p.yaml:" in message and "invalid YAML" in message


def test_size_cap(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "#" * (MAX_SPEC_BYTES + 1), encoding="utf-8")
    with pytest.raises(InputError, match=r"over the \d+-byte limit"):
        load_spec(path)


def test_missing_required_key_and_wrong_section_type(tmp_path):
    assert "missing required key 'model'" in error_of(tmp_path, VALID.replace("model: zoo:mlp\n", ""))
    message = error_of(tmp_path, VALID.replace("  batch_sizes: [1, 4]", "  batch_sizes: 4"))
    assert "evaluate.batch_sizes: expected a non-empty list of integers, got 4" in message


def test_unknown_backend_and_bad_name(tmp_path):
    message = error_of(tmp_path, VALID + "  backends: [onnxruntim]\n")
    assert "evaluate.backends[0]: unknown backend 'onnxruntim'" in message and "onnxruntime" in message
    assert "not a usable folder name" in error_of(tmp_path, VALID.replace("name: tiny", "name: ../up"))


def test_gates_are_validated_with_the_compare_vocabulary(tmp_path):
    spec = load_spec(write(tmp_path, VALID + "gates:\n  max_accuracy_drop: 2\n  min_fidelity: '95%'\n"))
    assert spec.gates == {"max_accuracy_drop": 2, "min_fidelity": "95%"}
    message = error_of(tmp_path, VALID + "gates:\n  max_acuracy_drop: 2\n")
    assert "p.yaml:17: gates.max_acuracy_drop: unknown key (gate)" in message
    assert "did you mean 'max_accuracy_drop'?" in message
    message = error_of(tmp_path, VALID + "gates:\n  max_latency_ratio: -1\n")
    assert "p.yaml:17: gates.max_latency_ratio:" in message


def test_anchors_in_x_keys_merge_keys_and_optional_flag(tmp_path):
    text = VALID.replace("stages:\n", "x-common: &common\n  epochs: 3\nstages:\n")
    text = text.replace("  - type: train\n    epochs: 2\n", "  - type: train\n    <<: *common\n    optional: true\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.stages[0] == TrainConfig(epochs=3) and spec.optional == frozenset({0})
    with pytest.raises(InputError, match=r"p.yaml:7: common: unknown key"):
        load_spec(write(tmp_path, text.replace("x-common:", "common:")))


def test_relative_data_paths_resolve_against_the_spec_folder(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    np.savez(folder / "d.npz", x=np.zeros((8, 3), np.float32), y=np.array([0, 1] * 4))
    spec = load_spec(write(folder, VALID.replace("sklearn:iris", "d.npz#test")))
    assert spec.data.eval == f"{folder.resolve() / 'd.npz'}#test"


def test_dry_run_validates_data_before_anything_runs(tmp_path, run_cli):
    empty = tmp_path / "empty.csv"
    empty.write_text("a,label\n", encoding="utf-8")
    path = write(tmp_path, VALID.replace("  eval: sklearn:iris", f"  eval: sklearn:iris\n  calibration: {empty}"))
    result = run_cli("run", path, "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 2
    assert "empty" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    result = run_cli("run", path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()


def test_cli_reports_spec_errors_in_one_line(tmp_path, run_cli):
    path = write(tmp_path, VALID.replace("amount: 0.5", "amout: 0.5"))
    result = run_cli("run", path, "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "stages[1].amout" in result.stderr


def test_dry_run_prints_the_plan(tmp_path, run_cli):
    result = run_cli("run", write(tmp_path, VALID), "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "00-original" not in result.stdout  # starts with a train stage: the untrained model is not judged
    assert "01-train         will run  epochs=2" in result.stdout
    assert "02-prune         will run  method=magnitude" in result.stdout
    assert "data eval: sklearn:iris (test), 38 samples, 3 classes" in result.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["digits.yaml", "breast_cancer.yaml"])
def test_examples_validate(name, run_cli, tmp_path):
    result = run_cli("run", REPO / "examples" / name, "--out", tmp_path, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "will run" in result.stdout


def test_bundled_demo_is_the_repo_example():
    bundled = REPO / "modelpress" / "examples" / "digits.yaml"
    assert bundled.read_bytes() == (REPO / "examples" / "digits.yaml").read_bytes()


def test_stage_written_as_a_single_key_mapping_gets_the_documented_form(tmp_path):
    message = error_of(tmp_path, VALID.replace("  - type: prune\n    method: magnitude\n    amount: 0.5\n",
                                               "  - prune: {method: magnitude, amount: 0.5}\n"))
    assert "p.yaml:10: stages[1]: a stage is written '- type: prune' with its parameters beside it" in message


def test_deep_nesting_is_refused_at_its_line_before_composing(tmp_path):
    """PyYAML's composer recurses per level: 500 levels in 1 KB used to be a RecursionError (exit 1)."""
    message = error_of(tmp_path, VALID + "x-deep:\n" + "".join("  " * i + "k:\n" for i in range(1, 200)))
    # VALID has 15 lines; the mapping at depth d begins on line 15 + d, so depth 65 (the first too deep) on line 80
    assert "p.yaml:80: the YAML nests deeper than 64 levels" in message


def test_model_code_names_factories_the_spec_trusts(tmp_path):
    spec = load_spec(write(tmp_path, VALID + "model_code: [pkg.mod:make]\n"))
    assert spec.model_code == ("pkg.mod:make",)
    assert spec.named_code()[:2] == ("zoo:mlp", "pkg.mod:make")
    message = error_of(tmp_path, VALID + "model_code: [os.system]\n")
    assert "p.yaml:16: model_code[0]: 'os.system' is not a pkg.module:factory reference" in message
