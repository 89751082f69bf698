"""The YAML validator is generated from the configs: declared constraints are checked at the key's own line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from modelpress.compress import registry
from modelpress.config import Checked, Interval, Options, option
from modelpress.errors import InputError
from modelpress.pipeline import parse_spec


@dataclass(frozen=True)
class DeclaredConfig(Checked, registry.StageConfig):
    kind: ClassVar[str] = "mp_test_declared"
    section: ClassVar[str] = "mp_test_declared"
    steps: int = option(1, Interval(int, 1, 100), help="Increments.")
    mode: str = option("a", Options(("a", "b")), help="Which.")
    rate: float | None = option(None, Interval(float, 0, 1, closed="neither"), help="Optional rate.")

    def check(self) -> None:
        if self.mode == "b" and self.rate is None:
            raise InputError("mp_test_declared.rate is required with mode b")


@pytest.fixture
def declared():
    registry.register_stage(DeclaredConfig)(lambda artifact, config, ctx: artifact)
    yield
    registry.STAGES.pop(DeclaredConfig.kind, None)


def message(stage: str) -> str:
    text = f"model: zoo:mlp\ndata: sklearn:iris\nstages:\n  - type: mp_test_declared\n    {stage}\n"
    with pytest.raises(InputError) as info:
        parse_spec(text, source="p.yaml")
    return info.value.message


@pytest.mark.parametrize(("stage", "expected"), [
    ("steps: 0", "p.yaml:5: stages[0].steps: stage 'mp_test_declared': must be an integer in [1, 100], got 0"),
    ("mode: c", "p.yaml:5: stages[0].mode: stage 'mp_test_declared': must be one of a, b, got 'c'"),
    ("rate: 1", "p.yaml:5: stages[0].rate: stage 'mp_test_declared': must be a number in (0, 1), got 1.0"),
    ("steps: two", "p.yaml:5: stages[0].steps: expected an integer, got 'two' (a string)"),
    ("mode: b", "p.yaml:5: stages[0].mode: stage 'mp_test_declared': mp_test_declared.rate is required with mode b"),
    ("stesp: 2", "p.yaml:5: stages[0].stesp: unknown key for stage 'mp_test_declared'"),
], ids=["interval", "options", "open-interval", "type", "cross-field", "typo"])
def test_declared_constraints_are_checked_at_their_line(declared, stage, expected):
    assert message(stage) == expected


def test_valid_values_and_null_for_a_nullable_field(declared):
    text = "model: zoo:mlp\ndata: sklearn:iris\nstages:\n  - {type: mp_test_declared, steps: 3, mode: b, rate: 0.5}\n"
    assert parse_spec(text).stages == (DeclaredConfig(steps=3, mode="b", rate=0.5),)
    text = text.replace("mode: b, rate: 0.5", "rate: null")
    assert parse_spec(text).stages == (DeclaredConfig(steps=3),)
