"""Declared config constraints: checked once, with the key, the value and the range in the message."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from modelpress.config import Checked, Interval, Options, field_specs, option
from modelpress.errors import InputError


@dataclass(frozen=True)
class Demo(Checked):
    section = "demo"
    steps: int = option(1, Interval(int, 1, 100), help="How many steps.")
    amount: float | None = option(None, Interval(float, 0, 1, closed="neither"), help="Fraction removed.")
    method: str = option("magnitude", Options(("magnitude", "structured")), cli="--how")
    name: str = option("x", cli=False)

    def check(self) -> None:
        if self.method == "structured" and self.amount is None:
            raise InputError("demo.amount is required for method structured")


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, r"demo.steps must be an integer in \[1, 100\], got 0"),
    ({"steps": 2.5}, r"demo.steps must be an integer in \[1, 100\], got 2.5"),
    ({"steps": True}, r"demo.steps must be an integer in \[1, 100\], got True"),
    ({"amount": 1.0}, r"demo.amount must be a number in \(0, 1\), got 1.0"),
    ({"amount": float("nan")}, r"demo.amount must be a number in \(0, 1\), got nan"),
    ({"method": "random"}, r"demo.method must be one of magnitude, structured, got 'random'"),
    ({"method": "structured"}, r"demo.amount is required for method structured"),
])
def test_bad_values_name_key_value_and_range(kwargs, message):
    with pytest.raises(InputError, match=message):
        Demo(**kwargs)


def test_good_values_pass_and_integral_floats_become_ints():
    demo = Demo(steps=3.0, amount=0.5, method="structured")
    assert demo.steps == 3 and isinstance(demo.steps, int)
    assert Demo(amount=None).amount is None
    with pytest.raises(FrozenInstanceError):
        demo.steps = 4  # type: ignore[misc]


def test_field_specs_drive_the_interfaces():
    specs = {s.name: s for s in field_specs(Demo)}
    assert specs["steps"].flag == "--steps" and specs["steps"].help == "How many steps." and specs["steps"].default == 1
    assert specs["method"].flag == "--how" and specs["name"].flag is None
    assert specs["amount"].nullable and not specs["steps"].nullable
    assert specs["steps"].constraint.describe() == "an integer in [1, 100]"


@pytest.mark.parametrize("interval, text", [
    (Interval(int, 1), "an integer ≥ 1"),
    (Interval(float, 0, closed="neither"), "a number > 0"),
    (Interval(float, None, 10), "a number ≤ 10"),
    (Interval(float, 0, 1, closed="left"), "a number in [0, 1)"),
])
def test_interval_descriptions(interval, text):
    assert interval.describe() == text


def test_mutable_defaults_are_refused():
    with pytest.raises(TypeError, match="immutable"):
        option([1, 2])


@pytest.mark.parametrize("constraint, text", [
    (Interval(float, 0, 1, closed="neither", noun=False), "in (0, 1)"),
    (Interval(float, 0, noun=False), "≥ 0"),
    (Interval(int, 0, closed="neither", unit="MiB"), "an integer > 0 (MiB)"),
    (Options(("onnx", "tensorrt"), text="onnx or tensorrt"), "onnx or tensorrt"),
])
def test_wordings_users_already_know(constraint, text):
    assert constraint.describe() == text


@dataclass(frozen=True)
class Inner(Checked):
    section = "outer"
    level: int = option(1, Interval(int, 0, 3), help="A nested knob.")


@dataclass(frozen=True)
class Outer(Checked):
    section = "outer"
    sizes: tuple[int, ...] = option((1, 32), Interval(int, 1), help="Sizes.")
    k: int | None = option(None, Interval(int, 1), label="k (neighbours)", help="k.")
    mode: str = option("a", Options(("a", "b")), help="Mode.")
    inner: Inner = option(Inner(), flatten=True, help="Nested.")

    def field_message(self, key, constraint, value):
        return f"{key} = {value!r} is not allowed" if key == "mode" else None


def test_tuple_items_label_nested_and_custom_messages():
    with pytest.raises(InputError, match=r"^outer.sizes must be integers ≥ 1, got \[1, 0\]$"):
        Outer(sizes=(1, 0))
    with pytest.raises(InputError, match=r"^outer.k \(neighbours\) must be an integer ≥ 1, got 0$"):
        Outer(k=0)
    with pytest.raises(InputError, match=r"^mode = 'c' is not allowed$"):
        Outer(mode="c")
    with pytest.raises(InputError, match=r"^outer.level must be an integer in \[0, 3\], got 4$"):
        Outer(inner=Inner(level=4))
    names = [s.name for s in field_specs(Outer)]
    assert names == ["sizes", "k", "mode", "level"]  # the nested config's keys stand in for it
    assert [s.name for s in field_specs(Outer, flatten=False)][-1] == "inner"
    assert next(s for s in field_specs(Outer) if s.name == "sizes").sequence
