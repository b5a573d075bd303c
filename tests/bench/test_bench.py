"""The benchmark suite's own logic: the pandas baseline and the report (no timing here)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.etl import NULL_INDEX, OOV_INDEX, PandasWorkflow, compare, run_pandas
from bench.report import render_markdown, targets, utc_now, write_report
from rankflow.core.spec import CategorifyOptions, DatasetSpec, Task


def _spec() -> DatasetSpec:
    return DatasetSpec(
        name="tiny",
        timestamp="ts",
        user_id="user",
        item_id="item",
        tasks=(Task(name="click", column="click"),),
        continuous=("bid",),
        categorify=CategorifyOptions(freq_threshold=2, hash_buckets={"item": 7}),
    )


def test_pandas_workflow_encodes_like_categorify() -> None:
    train = pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "b", "c", None],
            "item": ["x", "y", "z", "x", "y", "z", "x"],
            "bid": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
            "click": [0, 1, 0, 1, 0, 1, 0],
        }
    )
    workflow = PandasWorkflow(_spec()).fit(train)
    out = workflow.transform(pd.DataFrame({**train, "user": ["a", "b", "c", "d", None, "a", "b"]}))
    # "a" (3x) then "b" (2x); "c" is below freq_threshold -> OOV like the unseen "d".
    assert out["user"].tolist() == [3, 4, OOV_INDEX, OOV_INDEX, NULL_INDEX, 3, 4]
    assert out["user"].dtype == np.int32
    assert out["item"].between(0, 6).all()
    filled = train["bid"].fillna(train["bid"].median())  # as FillMedian
    assert np.allclose(out["bid"], (filled - filled.mean()) / filled.std(ddof=1), atol=1e-6)
    assert out["click"].tolist() == train["click"].tolist()


def test_pandas_baseline_matches_nvtabular(prepared, features, tmp_path) -> None:
    spec = DatasetSpec.load(prepared["spec"])
    run_pandas(spec, prepared["train"], tmp_path / "pandas")
    check = compare(spec, features["train"], tmp_path / "pandas")
    assert check["ok"], check
    # Low-cardinality columns have no count ties: the codes themselves agree.
    assert check["categorical_code_match"]["user_gender"] == 1.0


def test_report_states_the_run_and_the_targets(tmp_path) -> None:
    results = {
        "etl": {
            "results": [
                {
                    "log_rows": 1000,
                    "train_rows": 800,
                    "rows_per_s": {"nvtabular": 100.0, "floor": 1000.0, "pandas": 50.0},
                    "x_floor": 10.0,
                    "speedup_vs_pandas": 2.0,
                    "pandas_check": {"ok": True},
                }
            ]
        },
        "serving": {
            "client": "python",
            "requests_per_cell": 5,
            "in_process": [{"batch": 64, "p50_ms": 2.0}],
            "triton": [
                {
                    "batch": 64,
                    "concurrency": 1,
                    "p50_ms": 3.0,
                    "p99_ms": 4.0,
                    "rows_per_s": 20000.0,
                    "x_in_process_p50": 1.5,
                    "correct": True,
                    "max_abs_diff": 0.0,
                }
            ],
        },
        "content": {
            "embed": {
                "rows": 1000,
                "items": 50,
                "texts": 40,
                "embedded": 40,
                "repeats": 1,
                "step_s": [1.1],
                "bare_forward_s": [1.0],
                "texts_per_s": {"step": 36.4, "bare_forward": 40.0},
                "x_bare": 1.1,
            },
            "endpoint": {
                "rows": 1000,
                "requests": 5,
                "warmup": 1,
                "batch": 64,
                **{
                    name: {
                        "triton": {"p50_ms": p50, "p99_ms": p99},
                        "in_process": {"p50_ms": 10.0, "p99_ms": 12.0},
                        "x_in_process_p50": p50 / 10.0,
                        "max_skew": 0.0,
                        "correct": True,
                    }
                    for name, p50, p99 in (
                        ("batch 64", 14.0, 16.0),
                        ("batch 1, log query", 5.0, 6.0),
                        ("batch 1, unseen query", 9.0, 16.0),
                    )
                },
            },
        },
        "whole_run": {
            "total_s": 150.0,
            "wall_s": 200.0,
            "runs": [
                {
                    "name": "default",
                    "rows": 2000,
                    "wall_s": 200.0,
                    "total_s": 150.0,
                    "steps_s": {"prepare-data": 5.0},
                    "peak_rss_mb": 900.0,
                },
                {
                    "name": "1000",
                    "rows": 1000,
                    "wall_s": 120.0,
                    "total_s": 100.0,
                    "steps_s": {"prepare-data": 3.0},
                    "peak_rss_mb": 800.0,
                    "s_per_million_rows": 1e5,
                    "cost_per_row_vs_smallest": 1.0,
                },
            ],
        },
    }
    goals = {g["target"]: g["met"] for g in targets(results)}
    assert goals["make run <= 3 min"] is False
    assert goals["feature step <= 3x parquet I/O floor (1,000-row log)"] is False
    assert goals["Triton p99 <= 5 ms (batch 64, concurrency 1, python client)"] is True
    assert goals["Triton p50 <= 1.3x in-process (batch 512, python client)"] is None
    assert goals["embed-content <= 1.2x the bare model's batched forward pass"] is True
    ratio = "endpoint with list and text inputs p50 <= 1.3x in-process (batch 64, python client)"
    assert goals[ratio] is False
    unseen = (
        "endpoint p99 <= 15 ms at batch 1 with one query text never seen before (python client)"
    )
    assert goals[unseen] is False
    payload = write_report(
        results,
        quick=True,
        started=utc_now(),
        wall_s=1.0,
        out=tmp_path / "results.json",
        markdown=tmp_path / "BENCHMARKS.md",
        plots_dir=tmp_path / "plots",
    )
    assert json.loads((tmp_path / "results.json").read_text())["machine"]["quick"] is True
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "**quick** run" in text and "**not met**" in text
    assert "| batch 1, unseen query | 9.00 | 16.00 | 10.00 | 12.00 | 0.90 | yes |" in text
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "etl.png",
        "serving.png",
        "whole_run.png",
    ]
    assert render_markdown(payload, {}).startswith("# Benchmarks")
