"""The CLI is generated from the configs: every field of every stage (and of ``evaluate``) is reachable from its
command with the field's default and constraint, or excluded with a reason; a bad value gives the same message
through the CLI and through YAML."""

from __future__ import annotations

import click
import pytest

from modelpress.cli import cli
from modelpress.cli.options import ConfigOption
from modelpress.compress.registry import STAGES
from modelpress.config import Interval, Options, field_specs

#: Stages without a command of their own, and why.
NO_COMMAND = {"train": "training runs in a pipeline (modelpress run / demo); the stage commands compress a model"}


def _sources(command: click.Command) -> list[tuple[type, dict[str, str]]]:
    return list(getattr(command.callback, "config_sources", []))


def _generated(command: click.Command) -> dict[str, ConfigOption]:
    return {p.config_field.name: p for p in command.params if isinstance(p, ConfigOption)}


def _commands_by_config() -> dict[type, click.Command]:
    found = {}
    for name in cli.commands:
        for cls, _ in _sources(cli.commands[name]):
            found[cls] = cli.commands[name]
    return found


def test_every_registered_stage_has_a_command_generated_from_its_config():
    by_config = _commands_by_config()
    for kind in STAGES.names():
        config = STAGES.get(kind).config
        if kind in NO_COMMAND:
            assert kind not in cli.commands
            continue
        assert config in by_config, f"stage {kind}: no command builds its options from {config.__name__}"
        assert by_config[config].name == kind


def _cases() -> list[tuple[str, type, dict[str, str]]]:
    return [(name, cls, exclude) for name in sorted(cli.commands) for cls, exclude in _sources(cli.commands[name])]


@pytest.mark.parametrize("command_name, config, excluded", _cases(), ids=lambda v: getattr(v, "__name__", v))
def test_every_config_field_is_reachable_with_its_default_and_constraint(command_name, config, excluded):
    command = cli.commands[command_name]
    generated = _generated(command)
    for spec in field_specs(config):
        if spec.flag is None:
            assert spec.help, f"{config.__name__}.{spec.name} is off the CLI (cli=False) and says nothing about it"
            assert spec.name not in generated
            continue
        if spec.name in excluded:
            assert excluded[spec.name].strip(), f"{spec.name} excluded without a reason"
            assert spec.name not in generated
            # the flag it is reached by instead still exists (fields the command fixes itself name none)
            continue
        assert spec.name in generated, f"{command_name}: {config.__name__}.{spec.name} has no option"
        option = generated[spec.name]
        assert spec.flag.split("/")[0] in option.opts, (spec.flag, option.opts)
        if option.required:
            # no default, so click reports a missing option (click ≥ 8.2 spells "no default" UNSET)
            assert option.default is None or option.default is getattr(click.core, "UNSET", None)
        elif spec.sequence:
            assert tuple(option.default) == tuple(spec.default)
        else:
            assert option.default == spec.default, (spec.name, option.default, spec.default)
        if isinstance(spec.constraint, Options):
            assert isinstance(option.type, click.Choice)
            assert list(option.type.choices) == [str(v) for v in spec.constraint.values]
        elif isinstance(spec.constraint, Interval):
            # the range is the config's to check (one message for CLI and YAML): click parses the number only
            assert option.type == (click.INT if spec.constraint.type is int else click.FLOAT)
        if spec.annotation is bool or spec.annotation == (bool | None):
            assert option.is_flag and option.secondary_opts, f"{spec.name}: a bool field is a --x/--no-x pair"
        assert (option.help or "") == spec.help


def test_every_exclusion_names_a_field_that_exists():
    for name, config, excluded in _cases():
        names = {s.name for s in field_specs(config)}
        assert set(excluded) <= names, (name, set(excluded) - names)


def test_the_tensorrt_flags_are_the_tensorrt_config_fields():
    from modelpress.compress.tensorrt import TensorRTConfig

    flags = {o for p in cli.commands["export"].params for o in p.opts}
    for spec in field_specs(TensorRTConfig):
        assert (spec.flag in flags) is (spec.flag is not None and spec.cli is not False), spec.name
    assert {"--precision", "--trt-int8", "--min-batch", "--opt-batch", "--max-batch", "--min-seq-len",
            "--opt-seq-len", "--max-seq-len", "--workspace-mb", "--timing-cache", "--trt-atol", "--trt-rtol",
            "--trt-min-top1"} <= flags


@pytest.mark.parametrize("args, stage, key, rule", [
    (["prune", "zoo:mlp", "--method", "magnitude", "--amount", "1.5"],
     "type: prune\n    method: magnitude\n    amount: 1.5", "prune.amount", "must be in (0, 1), got 1.5"),
    (["prune", "zoo:mlp", "--method", "structured", "--amount", "0.5", "--round-to", "300"],
     "type: prune\n    method: structured\n    amount: 0.5\n    round_to: 300", "prune.round_to",
     "must be an integer in [1, 256], got 300"),
    (["export", "zoo:mlp", "--opset", "7"], "type: export\n    opset: 7", "export.opset", "must be in [13, 23], got 7"),
])
def test_a_bad_value_gives_the_same_message_through_the_cli_and_yaml(run_cli, tmp_path, args, stage, key, rule):
    """Both read the field's declared constraint: the CLI names ``stage.key``, YAML the file, line and key."""
    result = run_cli(*args, "-o", tmp_path / "out")
    assert (result.exit_code, result.stderr.strip()) == (2, f"error: {key} {rule}")
    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: p\nmodel: zoo:mlp\ndata: sklearn:iris\nstages:\n  - {stage}\n", encoding="utf-8")
    from_yaml = run_cli("run", spec, "--dry-run")
    line = 5 + stage.count("\n")
    field = key.split(".")[1]
    assert (from_yaml.exit_code, from_yaml.stderr.strip()) == (
        2, f"error: {spec}:{line}: stages[0].{field}: stage '{key.split('.')[0]}': {rule}")
    assert not (tmp_path / "out").exists()
