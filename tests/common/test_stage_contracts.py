"""Every registered stage through the same contract (scikit-learn's ``test_common.py`` is the model).

Parametrized over :data:`~modelpress.compress.registry.STAGES` at collection time, so a new stage gets these tests
without editing this file: its config round-trips through ``params()``; YAML and its CLI command build the same
config; a value outside each declared constraint is an InputError (exit 2) naming ``section.key`` through the config,
YAML and the CLI; run as a one-stage pipeline on a tiny model, its artifact reloads from its folder without pickle
and gives the logits the pipeline recorded, and its record reaches report.json whole.

A stage whose defaults are not a valid config (``prune`` needs an amount) lists the fewest params that make one in
:data:`MINIMAL`; a new stage whose defaults are valid needs no entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelpress.cli import cli
from modelpress.cli.options import ConfigOption
from modelpress.compress.registry import STAGES, StageConfig
from modelpress.config import Interval, Options, field_specs
from modelpress.errors import InputError
from modelpress.pipeline import execute_pipeline, parse_spec

from .conftest import DATA, MODEL, MODEL_KWARGS

KINDS = sorted(STAGES.names())

#: The fewest params that make a valid config, where the defaults do not (or would make the run slow).
MINIMAL: dict[str, dict[str, Any]] = {
    "prune": {"method": "magnitude", "amount": 0.5},
    "train": {"epochs": 1},
    "distill": {"epochs": 1},
}
#: Params that differ from the defaults, for the CLI-vs-YAML check (more than the minimal ones: a flag that reached
#: the wrong field would show). The CLI's distill command fixes ``teacher`` to the model it loads (``input``).
CLI_PARAMS: dict[str, dict[str, Any]] = {
    "prune": {"method": "structured", "amount": 0.25, "round_to": 4, "importance": "l2", "steps": 2},
    "export": {"opset": 17, "dynamic_batch": False, "atol": 1e-3, "verify": False},
    "quantize": {"mode": "static", "calibrate": "entropy", "per_channel": True, "calibration_samples": 32,
                 "op_types": ("MatMul", "Gemm")},
    "distill": {"teacher": "input", "student": "zoo:mlp", "temperature": 2.0, "alpha": 0.5, "epochs": 3},
}
#: Stages too slow to run on the tiny model within this file's budget (< 60 s on 2 cores), and why. Keep it short:
#: a stage listed here loses the reload and report.json checks.
EXPENSIVE: dict[str, str] = {}


def _config_type(kind: str) -> type[StageConfig]:
    return STAGES.get(kind).config


def _minimal(kind: str) -> dict[str, Any]:
    return dict(MINIMAL.get(kind, {}))


# ---- config round trip -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trips_through_params(kind):
    cls = _config_type(kind)
    config = cls.from_params(_minimal(kind))
    params = config.params()
    json.dumps(params)  # plain data: what report.json and the cache key store
    assert cls.from_params(params) == config
    assert set(params) == {spec.name for spec in field_specs(cls)}, "params() keys are the YAML keys"


def _yaml_value(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _stage_yaml(kind: str, params: dict[str, Any]) -> str:
    body = "".join(f"\n    {key}: {_yaml_value(value)}" for key, value in params.items())
    return (f"name: c\nmodel: {MODEL}\ndata: {DATA}\nstages:\n  - type: {kind}{body}\n")


def _command(kind: str):
    command = cli.commands.get(kind)
    if command is None or not any(isinstance(p, ConfigOption) for p in command.params):
        return None
    return command


def _cli_args(kind: str, params: dict[str, Any]) -> list[str]:
    """The command line that sets ``params`` through the options generated from the config's fields."""
    options = {p.config_field.name: p for p in _command(kind).params if isinstance(p, ConfigOption)}
    args = ["--teacher", MODEL] if kind == "distill" else [MODEL]
    required = {name: option.config_field.default for name, option in options.items()
                if option.required and name not in params}  # prune --method, quantize --mode: their defaults
    for key, value in {**required, **params}.items():
        if key not in options:
            continue  # fixed by the command itself (distill's teacher)
        option = options[key]
        if option.is_flag:
            args.append(option.opts[0] if value else option.secondary_opts[0])
        elif option.multiple:
            for item in value:
                args += [option.opts[0], str(item)]
        else:
            args += [option.opts[0], str(value)]
    return args


@pytest.mark.parametrize("kind", [k for k in KINDS if _command(k) is not None])
def test_yaml_and_the_cli_command_build_the_same_config(kind, run_cli, monkeypatch, tmp_path):
    import modelpress.cli.stages as stages

    seen: list[StageConfig] = []

    def capture(config, *args, **kwargs):
        seen.append(config)
        raise InputError("captured")

    monkeypatch.setattr(stages, "run_single_stage", capture)
    params = CLI_PARAMS.get(kind, _minimal(kind))
    result = run_cli(kind, *_cli_args(kind, params), "-o", tmp_path / "out")
    assert (result.exit_code, result.stderr.strip()) == (2, "error: captured"), result.stderr
    from_yaml = parse_spec(_stage_yaml(kind, params)).stages[0]
    assert seen == [from_yaml]
    assert {key: from_yaml.params()[key] for key in params} == params  # each value reached its own field


# ---- a bad value for each declared constraint ------------------------------------------------------------------
def _bad_value(constraint: Interval | Options) -> Any:
    """A value of the right type just outside the constraint."""
    if isinstance(constraint, Options):
        return "not-a-choice"
    low_in = constraint.closed in ("both", "left")
    if constraint.low is not None:
        return constraint.type(constraint.low - 1 if low_in else constraint.low)
    if constraint.high is not None:
        high_in = constraint.closed in ("both", "right")
        return constraint.type(constraint.high + 1 if high_in else constraint.high)
    return math.inf


def _field(cls: type, name: str) -> tuple[type, dataclasses.Field]:
    """The dataclass (``cls`` or a nested config it flattens) that declares field ``name``, and the field."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return cls, f
        if f.metadata.get("flatten"):
            found = _field(type(f.default), name)
            if found:
                return found
    return None  # type: ignore[return-value]


def _key(kind: str, name: str) -> str:
    """``section.key`` as messages name it: the declaring config's section (a stage's kind) and the field's label."""
    owner, f = _field(_config_type(kind), name)
    section = getattr(owner, "section", "") or getattr(owner, "kind", "") or kind
    return f"{section}.{f.metadata.get('label') or f.name}"


#: Fields whose message keeps a wording users know instead of ``section.key`` (the YAML path still names the key
#: through ``stages[i].key``): the reason each is kept.
OWN_WORDING = {("quantize", "target"): "QuantizeConfig.field_message keeps 'unknown target ...; use one of ...', which "
                                       "names the value and the choices but not quantize.target"}


def _constrained() -> list[tuple[str, str]]:
    return [(kind, spec.name) for kind in KINDS for spec in field_specs(_config_type(kind))
            if spec.constraint is not None]


@pytest.mark.parametrize("kind, name", _constrained(), ids=[f"{k}.{n}" for k, n in _constrained()])
def test_a_value_outside_a_declared_constraint_names_the_key(kind, name, tmp_path):
    spec = next(s for s in field_specs(_config_type(kind)) if s.name == name)
    bad = _bad_value(spec.constraint)
    if spec.sequence:
        bad = (bad,)
    params = {**_minimal(kind), name: bad}
    with pytest.raises(InputError) as direct:
        _config_type(kind).from_params(params)
    message = str(direct.value)
    assert "\n" not in message
    if (kind, name) in OWN_WORDING:
        assert repr(bad) in message or str(bad) in message, message
    else:
        assert message.startswith(f"{_key(kind, name)} "), message
        assert (str(list(bad)) if spec.sequence else repr(bad)) in message, message  # the bad value, as given
    if isinstance(bad, float) and math.isinf(bad):
        return  # YAML has no plain spelling of infinity that json.dumps writes
    with pytest.raises(InputError) as from_yaml:
        parse_spec(_stage_yaml(kind, params), source=str(tmp_path / "p.yaml"))
    # YAML names file:line and stages[0].key, then the config's rule without its own section.key prefix
    yaml_message = str(from_yaml.value)
    assert f"p.yaml:" in yaml_message and f"stages[0].{name}: stage '{kind}': " in yaml_message, yaml_message
    assert repr(bad if not spec.sequence else list(bad)) in yaml_message or str(bad) in yaml_message, yaml_message
    standard = f"{_key(kind, name)} must be "
    if message.startswith(standard):  # the standard wording: YAML shows the same rule (a config's own wording for
        assert yaml_message.endswith(message[len(_key(kind, name)) + 1:]), (message, yaml_message)  # ← may differ)


def _cli_constrained() -> list[tuple[str, str]]:
    out = []
    for kind, name in _constrained():
        command = _command(kind)
        if command and any(isinstance(p, ConfigOption) and p.config_field.name == name for p in command.params):
            out.append((kind, name))
    return out


@pytest.mark.parametrize("kind, name", _cli_constrained(), ids=[f"{k}.{n}" for k, n in _cli_constrained()])
def test_a_bad_value_on_the_command_line_exits_2_with_one_line(kind, name, run_cli, tmp_path):
    option = next(p for p in _command(kind).params if isinstance(p, ConfigOption) and p.config_field.name == name)
    bad = _bad_value(option.config_field.constraint)
    args = _cli_args(kind, _minimal(kind))
    result = run_cli(kind, *args, option.opts[0], str(bad), "-o", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, lines
    if isinstance(option.config_field.constraint, Interval) and (kind, name) not in OWN_WORDING:
        assert f"error: {_key(kind, name)} " in result.stderr, result.stderr
    else:  # click's Choice names the flag
        assert option.opts[0] in result.stderr or _key(kind, name) in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


# ---- run, reload without pickle, record in report.json --------------------------------------------------------
def _one_stage_spec(kind: str) -> str:
    params = ", ".join(f"{k}: {_yaml_value(v)}" for k, v in _minimal(kind).items())
    return textwrap.dedent(f"""\
        name: contract-{kind}
        model: {MODEL}
        model_kwargs: {json.dumps(MODEL_KWARGS)}
        data: {{eval: {DATA}}}
        stages:
          - {{type: {kind}{', ' + params if params else ''}}}
        evaluate:
          batch_sizes: [1]
          latency: false
        """)


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, one_thread):
    """``kind -> run folder`` of a one-stage pipeline, each run once for the module (lazily)."""
    runs: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            out = tmp_path_factory.mktemp(f"stage-{kind}") / "run"
            execute_pipeline(parse_spec(_one_stage_spec(kind)), out_dir=out)
            runs[kind] = out
        return runs[kind]

    return get


def _no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every unpickling path fail loudly: a reload that needs pickle is a failed contract."""
    import torch

    real_load = torch.load

    def refuse(*args, **kwargs):
        if kwargs.get("weights_only") is not True:
            raise AssertionError("torch.load without weights_only=True")
        return real_load(*args, **kwargs)

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used while reloading an artifact")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)


RUN_KINDS = [pytest.param(k, marks=pytest.mark.skip(reason=EXPENSIVE[k])) if k in EXPENSIVE else k for k in KINDS]


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_the_artifact_reloads_from_its_folder_without_pickle(kind, stage_runs, monkeypatch, iris_test):
    from modelpress.runtime.sessions import make_runner, native_backend
    from modelpress.sources import load_model

    out = stage_runs(kind)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["stages"][-1]
    folder = out / "stages" / entry["name"]
    _no_pickle(monkeypatch)
    artifact = load_model(str(folder))
    assert artifact.format == entry["artifact"]["format"]
    runner = make_runner(artifact, native_backend(artifact), threads=1)
    logits = np.concatenate([runner(batch) for batch, _ in iris_test.batches(64)])
    predictions = np.load(out / "predictions.npz")
    np.testing.assert_array_equal(predictions["y_true"], iris_test.y)
    np.testing.assert_allclose(logits, predictions[f"logits::{entry['name']}"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", RUN_KINDS)
def test_the_stage_record_reaches_report_json_whole(kind, stage_runs):
    from modelpress.pipeline import stage_record

    out = stage_runs(kind)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    entry = report["stages"][-1]
    assert entry["kind"] == kind
    assert entry["params"] == json.loads(json.dumps(_config_type(kind).from_params(_minimal(kind)).params()))
    manifest = json.loads((out / "stages" / entry["name"] / "manifest.json").read_text(encoding="utf-8"))
    before = {}
    if len(report["stages"]) > 1:
        first = out / "stages" / report["stages"][0]["name"] / "manifest.json"
        before = json.loads(first.read_text(encoding="utf-8")).get("metadata", {})
    record = stage_record(manifest.get("metadata", {}), before=before)
    assert record, f"stage {kind} recorded nothing about itself in artifact.metadata"
    for key, value in record.items():
        assert entry.get(key) == value, key
