"""The dataset spec: roles declared once, refused in one clear line when malformed."""

from __future__ import annotations

import pytest

from components.data.synthetic import synthetic_spec
from rankflow.core.errors import InputError
from rankflow.core.spec import DatasetSpec, SpecError

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("timestamp"), "missing required key 'timestamp'"),
        (lambda d: d.update(colour="red"), "unknown key"),
        (lambda d: d.pop("tasks"), "exactly one of 'tasks'"),
        (lambda d: d.update(tasks=[]), "non-empty list"),
        (lambda d: d["tasks"][1].update(given="long_view"), "not a task declared before it"),
        (lambda d: d["tasks"][0].update(kind="multiclass"), "one-vs-rest"),
        (lambda d: d["tasks"][0].update(kind="ordinal"), "kind must be one of"),
        (lambda d: d["tasks"][0].update(weight=0), "weight must be > 0"),
        (lambda d: d["tasks"][0].update(loss="mse"), "loss of a binary task"),
        (lambda d: d["tasks"][0].update(transform="log1p"), "only a regression target"),
        (lambda d: d["tasks"][1].update(name="click"), "declared more than once"),
        (lambda d: d["tasks"][1].update(name="bid"), "also a column of the spec"),
        (
            lambda d: d["tasks"].append({"name": "x", "column": "y", "given": "dwell_seconds"}),
            "a regression task",
        ),
        (lambda d: d.update(on_violation="ignore"), "on_violation must be one of"),
        (lambda d: d.update(weight_column="bid"), "more than one role"),
        (lambda d: d["continuous"].append({"column": "spend", "transform": "sqrt"}), "sqrt"),
        (
            lambda d: d["continuous"].append({"column": "spend", "transform": "log", "min": 1}),
            "belong to a clip",
        ),
        (
            lambda d: d["continuous"].append(
                {"column": "spend", "transform": "bucketize", "bins": 1}
            ),
            "bins >= 2",
        ),
        (lambda d: d["item"].update(id="user_id"), "more than one role"),
        (lambda d: d["categorify"]["hash_buckets"].update(bid=10), "not a categorical column"),
    ],
)
def test_malformed_spec_is_refused(mutate, message):
    raw = synthetic_spec().to_dict()
    mutate(raw)
    with pytest.raises(SpecError, match=message):
        DatasetSpec.from_dict(raw)


def test_legacy_targets_load_as_a_funnel():
    """Specs written before tasks were data still load: click, then conversion given click."""
    spec = DatasetSpec.from_yaml(
        "timestamp: ts\nuser: {id: u}\nitem: {id: i}\n"
        "targets: {click: clicked, conversion: bought}\n"
        "true_probabilities: {click: p}\n"
    )
    click, conversion = spec.tasks
    assert (click.name, click.column, click.kind, click.truth) == (
        "clicked",
        "clicked",
        "binary",
        "p",
    )
    assert (conversion.name, conversion.given) == ("bought", "clicked")
    for bad, message in (
        ("targets: {conversion: c}", "'click' target"),
        ("targets: {click: c, like: l}", "unknown stage"),
    ):
        with pytest.raises(SpecError, match=message):
            DatasetSpec.from_yaml(f"timestamp: ts\nuser: {{id: u}}\n{bad}\n")


def test_tasks_of_every_kind_round_trip():
    text = """
timestamp: ts
context: {categorical: [surface]}
continuous: [bid, {column: spend, transform: log}, {column: age, transform: clip, max: 90},
             {column: income, transform: bucketize, bins: 8}]
tasks:
  - {name: click, column: clicked}
  - {name: conversion, column: converted, given: click, weight: 2}
  - {name: dwell, column: dwell_seconds, kind: regression, given: click, loss: huber,
     transform: log1p}
weight_column: sample_weight
slices: [surface, country]
on_violation: drop
"""
    spec = DatasetSpec.from_yaml(text)
    assert spec.task_names == ("click", "conversion", "dwell")
    assert spec.user_id is None and spec.item_id is None  # ids are optional
    assert spec.label_columns == ("clicked", "converted", "dwell_seconds", "sample_weight")
    assert spec.continuous_transforms["income"].bins == 8
    assert "country" in spec.raw_columns and spec.feature_columns == (
        "surface",
        "bid",
        "spend",
        "age",
        "income",
    )
    assert DatasetSpec.from_yaml(spec.to_yaml()) == spec


def test_role_lists_may_be_empty_but_a_feature_is_required():
    minimal = "timestamp: ts\nitem: {id: i, categorical: []}\ntasks: [click]\n"
    assert DatasetSpec.from_yaml(minimal).feature_columns == ("i",)
    with pytest.raises(SpecError, match="declares no feature"):
        DatasetSpec.from_yaml("timestamp: ts\nuser: {categorical: []}\ntasks: [click]\n")


def test_a_repeated_yaml_key_is_an_error():
    """PyYAML keeps the last of two equal keys without a word; a spec refuses them."""
    with pytest.raises(SpecError, match=r"key 'id' appears twice.*line 4"):
        DatasetSpec.from_yaml("timestamp: ts\nuser:\n  id: a\n  id: b\ntasks: [click]\n")


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        DatasetSpec.load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        DatasetSpec.load(bad)


def test_spec_errors_are_input_errors():
    """Bad specs exit 2 through the CLI, and code that caught ValueError still does."""
    with pytest.raises(InputError) as err:
        DatasetSpec.from_yaml("- a list")
    assert isinstance(err.value, ValueError) and err.value.exit_code == 2
