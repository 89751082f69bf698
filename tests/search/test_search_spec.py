"""Search spec validation: every bad input is one located error (exit 2) before anything runs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from modelpress.errors import InputError
from modelpress.search import load_search
from modelpress.search.samplers import make_sampler

from .conftest import search_yaml


def error_of(write_search, text: str) -> str:
    with pytest.raises(InputError) as info:
        load_search(write_search(text))
    assert info.value.exit_code == 2
    return info.value.format_message()


def test_the_example_validates_into_twelve_grid_points():
    spec = load_search(Path(__file__).parents[2] / "examples" / "digits-search.yaml")
    grid = spec.grid()
    assert len(grid) == 12  # 3 amounts x (dynamic + static x 3 calibrators)
    dynamic = [g for g in grid if g["stages.quantize.mode"] == "dynamic"]
    assert len(dynamic) == 3 and all("stages.quantize.calibrate" not in g for g in dynamic)


def test_unknown_parameter_path_names_the_closest_key(write_search):
    message = error_of(write_search, search_yaml("  stages.prune.amout: [0.5]\n"))
    assert "search.yaml:" in message and "space.stages.prune.amout: unknown parameter path" in message
    assert "did you mean 'stages.prune.amount'?" in message


def test_an_empty_space_is_refused(write_search):
    message = error_of(write_search, search_yaml("  {}\n").replace("space:\n  {}", "space: {}"))
    assert "the space is empty" in message


def test_a_constraint_on_a_metric_that_does_not_exist(write_search):
    message = error_of(write_search, search_yaml(extra="constraints:\n  metrics.acuracy: {min: 0.9}\n"))
    assert "constraints.metrics.acuracy: unknown metric" in message and "metrics.accuracy" in message


def test_an_unknown_constraint_key_suggests_the_gate(write_search):
    message = error_of(write_search, search_yaml(extra="constraints:\n  max_acuracy_drop: 1\n"))
    assert "did you mean 'max_accuracy_drop'?" in message


def test_a_budget_of_zero_trials(write_search):
    message = error_of(write_search, search_yaml(extra="budget: {trials: 0}\n"))
    assert "budget.trials: must be an integer ≥ 1, got 0" in message


def test_a_choice_outside_the_stage_constraint_is_reported_on_its_line(write_search):
    text = search_yaml("  stages.prune.amount: [0.5, 1.5]\n")
    message = error_of(write_search, text)
    line = text.splitlines().index("  stages.prune.amount: [0.5, 1.5]") + 1
    assert f"search.yaml:{line}: space.stages.prune.amount: value 1.5:" in message and "got 1.5" in message


def test_objective_direction_must_match_the_declaration(write_search):
    message = error_of(write_search, search_yaml(objectives="  - minimize: metrics.accuracy\n"))
    assert "metrics.accuracy is better higher; maximize it" in message


def test_a_condition_on_a_value_its_parameter_never_takes(write_search):
    space = ("  stages.prune.method: [magnitude, structured]\n"
             "  stages.prune.amount: {choices: [0.25], when: {stages.prune.method: structurd}}\n")
    message = error_of(write_search, search_yaml(space))
    assert "'structurd' is not one of stages.prune.method's choices" in message


def test_a_float_range_needs_low_below_high(write_search):
    message = error_of(write_search, search_yaml("  stages.prune.lr: {low: 0.1, high: 0.01}\n"))
    assert "low must be below high" in message


def test_random_sampler_needs_a_budget_and_is_deterministic_by_seed(write_search):
    space = "  stages.prune.lr: {low: 0.001, high: 0.1, log: true}\n  stages.prune.amount: [0.25, 0.5, 0.75]\n"
    message = error_of(write_search, search_yaml(space, extra="sampler: random\n"))
    assert "sampler random needs a budget" in message
    spec = load_search(write_search(search_yaml(space, extra="sampler: random\nseed: 7\nbudget: {trials: 4}\n")))
    first = [make_sampler(spec, []).ask() for _ in range(1)]
    a, b = make_sampler(spec, []), make_sampler(spec, [])
    draws_a, draws_b = [a.ask() for _ in range(4)], [b.ask() for _ in range(4)]
    assert draws_a == draws_b and draws_a[0] == first[0]
    # independent expectation: the same generator, drawn in the space's order
    rng = random.Random(7)
    import math

    lr = math.exp(rng.uniform(math.log(0.001), math.log(0.1)))
    amount = rng.choice([0.25, 0.5, 0.75])
    assert draws_a[0] == {"stages.prune.lr": lr, "stages.prune.amount": amount}
    assert all(0.001 <= d["stages.prune.lr"] <= 0.1 for d in draws_a)
    other = load_search(write_search(search_yaml(space, extra="sampler: random\nseed: 8\nbudget: {trials: 4}\n"),
                                     name="other.yaml"))
    assert [make_sampler(other, []).ask() for _ in range(1)] != first


def test_grid_order_and_resume_skip(write_search):
    spec = load_search(write_search(search_yaml("  stages.prune.amount: [0.25, 0.5]\n"
                                                "  stages.prune.finetune_epochs: {low: 1, high: 3, step: 2}\n")))
    assert spec.grid() == [{"stages.prune.amount": a, "stages.prune.finetune_epochs": e}
                           for a in (0.25, 0.5) for e in (1, 3)]
    sampler = make_sampler(spec, [{"params": {"stages.prune.amount": 0.25, "stages.prune.finetune_epochs": 3}}])
    asked = []
    while (values := sampler.ask()) is not None:
        asked.append(values)
    assert asked == [{"stages.prune.amount": 0.25, "stages.prune.finetune_epochs": 1},
                     {"stages.prune.amount": 0.5, "stages.prune.finetune_epochs": 1},
                     {"stages.prune.amount": 0.5, "stages.prune.finetune_epochs": 3}]


def test_tpe_without_optuna_is_exit_3(write_search, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    from modelpress.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable) as info:
        load_search(write_search(search_yaml(extra="sampler: tpe\nbudget: {trials: 3}\n")))
    assert info.value.exit_code == 3 and "needs optuna" in info.value.format_message()


def test_trial_pipeline_sets_the_values_and_the_constraint_gates(write_search):
    spec = load_search(write_search(search_yaml(extra="constraints:\n  max_accuracy_drop: 5\n")))
    trial = spec.trial_spec({"stages.prune.amount": 0.75}, name="tiny-t000")
    assert trial.stages[0].amount == 0.75 and trial.gates["max_accuracy_drop"] == 5 and trial.name == "tiny-t000"


def test_tpe_proposes_within_the_space_deterministically_and_resumes(write_search):
    pytest.importorskip("optuna", reason="optuna is not installed (pip install 'modelpress[search]')")
    space = ("  stages.prune.amount: {low: 0.1, high: 0.9}\n  stages.prune.method: [magnitude, structured]\n"
             "  stages.prune.round_to: {choices: [1, 8], when: {stages.prune.method: structured}}\n")
    spec = load_search(write_search(search_yaml(space, extra="sampler: tpe\nseed: 3\nbudget: {trials: 6}\n")))
    first, second = make_sampler(spec, []), make_sampler(spec, [])
    asked = []
    for i in range(4):
        a, b = first.ask(), second.ask()
        assert a == b  # same seed, same proposals
        assert 0.1 <= a["stages.prune.amount"] <= 0.9
        assert ("stages.prune.round_to" in a) == (a["stages.prune.method"] == "structured")
        first.tell(a, [0.5 + i / 10, 100.0 - i], 0.0)
        second.tell(b, [0.5 + i / 10, 100.0 - i], 0.0)
        asked.append(a)
    finished = [{"params": v, "objective_values": [0.5, 100.0], "violation": 0.0} for v in asked]
    resumed = make_sampler(spec, finished)
    assert len(resumed.study.trials) == 4  # the finished trials are in the rebuilt study
