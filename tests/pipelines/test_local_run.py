"""A small end-to-end run of the whole DAG through kfp.local, as `make run` does it."""

from __future__ import annotations

import json

import pytest

from pipelines.local import format_summary, run_local
from pipelines.ranking import STEPS


@pytest.mark.slow
def test_local_pipeline_run_writes_summary(tmp_path):
    run_dir = tmp_path / "latest"
    summary = run_local(
        run_dir=run_dir,
        arguments={
            "synthetic_rows": 20_000,
            "epochs": 1,
            "architecture": "shared_bottom",
            "min_auc_click": 0.5,
            "min_auc_conversion": 0.5,
            "infra_rows": 128,
            "model_store": str(tmp_path / "store"),
        },
    )
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    d = summary["dataset"]
    assert d["train_rows"] + d["valid_rows"] + d["test_rows"] == 20_000
    assert d["train_rows"] > d["valid_rows"] > 0
    assert summary["model"] == {"architecture": "shared_bottom"}
    for task in ("click", "conversion"):
        m = summary["metrics"][task]
        assert set(m) == {"auc", "logloss", "ece", "oracle_auc"}
        assert 0.5 < m["auc"] <= m["oracle_auc"] + 0.02
    assert summary["blessed"] is True
    serving = summary["serving"]
    assert serving["model_name"] == "rankflow"
    assert serving["infra_blessed"] is True
    assert serving["skew_max_abs"] <= 1e-5
    assert 0 < serving["latency_ms"]["p50"] <= serving["latency_ms"]["p99"]
    # Blessed twice over, so deployed: published as version 1; no local Triton was serving.
    assert (serving["version"], serving["grpc_port"]) == (1, None)
    assert serving["model_store"] == str(tmp_path / "store")
    assert (tmp_path / "store" / "rankflow" / "1" / "ranker" / "saved_model.pb").is_file()
    assert set(STEPS) <= set(summary["timings_s"])
    assert all(v > 0 for v in summary["timings_s"].values())
    assert (run_dir / "pipeline.yaml").is_file() and summary["pipeline_yaml"].endswith(
        "pipeline.yaml"
    )
    assert "Ranker evaluation" in (run_dir / "report.md").read_text()
    assert (run_dir / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    assert "shared_bottom" in format_summary(summary)


@pytest.mark.slow
def test_failed_run_resumes_and_a_model_failing_infra_validation_is_not_deployed(tmp_path):
    """A run that dies at training keeps its data and features; `--resume` starts at training.
    The resumed model passes evaluation but not infra-validation (no skew is small enough for
    a negative tolerance), so it never reaches the model store."""
    arguments = {
        "synthetic_rows": 5_000,
        "min_auc_click": 0.5,
        "min_auc_conversion": 0.5,
        "skew_tolerance": -1.0,
        "infra_rows": 64,
        "model_store": str(tmp_path / "store"),
    }
    with pytest.raises(RuntimeError, match=r"failed at \['train-ranker'\]"):
        run_local(run_dir=tmp_path / "run", arguments={**arguments, "expert_mlp": "64,x"})
    assert not (tmp_path / "run" / "summary.json").exists()

    summary = run_local(run_dir=tmp_path / "run", arguments=arguments, resume=True)
    timings = summary["timings_s"]
    assert timings["prepare-data"] == timings["engineer-features"] == 0.0  # reused
    assert timings["train-ranker"] > 0
    assert summary["blessed"] is True
    assert summary["serving"]["infra_blessed"] is False
    assert "> -1e+00" in summary["serving"]["infra_reasons"][0]
    assert summary["serving"]["version"] is None
    assert "deploy-model" not in summary["timings_s"]
    assert not (tmp_path / "store").exists()
    assert "not deployed: not blessed by infra-validation" in format_summary(summary)


def test_failed_step_is_reported_with_its_log(tmp_path):
    run_dir = tmp_path / "bad"
    with pytest.raises(RuntimeError, match=r"failed at \['prepare-data'\]") as err:
        run_local(run_dir=run_dir, arguments={"data_source": str(tmp_path / "absent.parquet")})
    assert "pipeline.log" in str(err.value)
    assert "needs spec_path" in (run_dir / "pipeline.log").read_text()
    assert not (run_dir / "summary.json").exists()
