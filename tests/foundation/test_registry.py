"""The one registry type: explicit registration, did-you-mean lookups, entry-point plugins."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelpress.errors import InputError
from modelpress.registry import Registry


def test_register_get_and_list_in_order():
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)

    @reg.register("two")
    def two() -> int:
        return 2

    assert reg.get("one") == 1 and reg.get("two") is two
    assert reg.names() == ("one", "two") and "one" in reg and "three" not in reg and len(reg) == 2


def test_unknown_names_suggest_the_closest():
    reg: Registry[int] = Registry("backend")
    reg.add("onnxruntime", 1)
    reg.add("torch", 2)
    with pytest.raises(InputError, match=r"unknown backend 'onnxrt'.*did you mean 'onnxruntime'"):
        reg.get("onnxrt")
    with pytest.raises(InputError, match=r"unknown backend 'zzz'.*known: onnxruntime, torch"):
        reg.get("zzz")
    assert reg.find("zzz") is None


def test_a_name_cannot_be_taken_twice_by_accident():
    reg: Registry[int] = Registry("stage")
    reg.add("prune", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("prune", 2)
    reg.add("prune", 3, replace=True)
    assert reg.get("prune") == 3


def test_plugins_come_from_entry_points_once(monkeypatch):
    calls = []

    def hook(registry):
        calls.append(1)
        registry.add("plugged", 42)

    point = SimpleNamespace(name="demo", value="demo_pkg:register", load=lambda: hook)
    from importlib import metadata

    monkeypatch.setattr(metadata, "entry_points", lambda group: [point] if group == "modelpress.widgets" else [])
    reg: Registry[int] = Registry("widget", entry_points="modelpress.widgets")
    assert reg.get("plugged") == 42
    assert reg.names() == ("plugged",) and calls == [1]


def test_a_broken_plugin_is_named(monkeypatch):
    def hook(registry):
        raise RuntimeError("boom")

    point = SimpleNamespace(name="bad", value="bad_pkg:register", load=lambda: hook)
    from importlib import metadata

    monkeypatch.setattr(metadata, "entry_points", lambda group: [point])
    reg: Registry[int] = Registry("widget", entry_points="modelpress.widgets")
    with pytest.raises(InputError, match=r"widget plugin 'bad' \(bad_pkg:register\) failed to load: RuntimeError"):
        reg.names()


def test_indexing_is_get_and_pop_undoes_a_registration():
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)
    assert reg["one"] == 1
    with pytest.raises(InputError, match="unknown widget 'onee'; did you mean 'one'"):
        reg["onee"]
    assert reg.pop("one") == 1 and reg.pop("one") is None and reg.names() == ()
