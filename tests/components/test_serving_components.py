"""The export, champion, infra-validation and deploy components through ``python_func`` with
real artifacts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.deploy.component import deploy_model
from components.evaluation.component import compare_with_champion
from components.export.component import export_serving_model
from components.infra_validation.component import validate_on_triton
from rankflow.core.errors import DeployError
from rankflow.core.window import TimeWindow


def test_export_then_validate_on_triton(artifact, prepared, features, trained, tmp_path):
    from components.content.embed import ContentConfig, embed_or_empty
    from rankflow.core.spec import DatasetSpec

    # This spec names no text: embed-content hands every step an empty table.
    embed_or_empty(
        DatasetSpec.load(prepared["spec"]),
        prepared["train"],
        tmp_path / "content",
        config=ContentConfig(),
    )
    content = artifact(dsl.Model, "content_table", tmp_path / "content")
    workflow = artifact(dsl.Model, "nvt_workflow", features["workflow"])
    ranker = artifact(dsl.Model, "ranker", trained)
    spec = artifact(dsl.Artifact, "dataset_spec", prepared["spec"])
    serving_model = artifact(dsl.Model, "serving_model")
    export_serving_model.python_func(
        nvt_workflow=workflow,
        ranker=ranker,
        dataset_spec=spec,
        train_data=artifact(dsl.Dataset, "train_data", prepared["train"]),
        valid_data=artifact(dsl.Dataset, "valid_data", prepared["valid"]),
        content_table=content,
        serving_model=serving_model,
        model_name="rankflow",
        max_batch_size=256,
        flavour="cpu",
    )
    config = (Path(serving_model.path) / "rankflow" / "config.pbtxt").read_text()
    assert "max_batch_size: 256" in config
    digest = serving_model.metadata.pop("sha256")
    window = serving_model.metadata.pop("training_window")
    assert serving_model.metadata == {"model_name": "rankflow", "flavour": "cpu"}
    # The version records what it was fitted on: train + valid, up to the test split.
    manifest = json.loads(
        (Path(serving_model.path) / "rankflow" / "1" / "rankflow.json").read_text()
    )
    assert manifest["training_window"] == window and window["column"] == "event_ts"
    test_start = pq.read_table(prepared["test"], columns=["event_ts"]).column(0).to_pylist()
    assert TimeWindow.from_dict(window).after(pd.Series(test_start)).all()
    # The recorded digest is the repository's sealed manifest.
    from rankflow.core import integrity

    assert digest == integrity.verify(serving_model.path)
    serving_model.metadata["sha256"] = digest

    metrics = artifact(dsl.Metrics, "infra_metrics")
    report = artifact(dsl.Artifact, "infra_report")
    result = validate_on_triton.python_func(
        serving_model=serving_model,
        nvt_workflow=workflow,
        ranker=ranker,
        test_data=artifact(dsl.Dataset, "test_data", prepared["test"]),
        dataset_spec=spec,
        content_table=content,
        infra_metrics=metrics,
        infra_report=report,
        model_name="rankflow",
        rows=128,
        batch_size=64,
        tolerance=1e-5,
    )
    assert result.blessed is True
    assert metrics.metadata["click_skew_max_abs"] <= 1e-5
    assert metrics.metadata["latency_ms_p99_batch64"] > 0
    assert json.loads(Path(report.path).read_text())["rows"] == 128

    deployment = artifact(dsl.Artifact, "deployment")
    store = Path(report.path).parent / "store"
    for expected in (1, 2):
        # As the pipeline runs them: the comparison with what serves, then the deploy.
        comparison = artifact(dsl.Artifact, f"comparison-{expected}")
        champion = compare_with_champion.python_func(
            nvt_workflow=workflow,
            ranker=ranker,
            test_data=artifact(dsl.Dataset, "test_data", prepared["test"]),
            dataset_spec=spec,
            content_table=content,
            comparison=comparison,
            comparison_report=artifact(dsl.Markdown, f"comparison-report-{expected}"),
            gates="{}",
            model_name="rankflow",
            model_store=str(store),
        )
        assert champion.blessed is True
        assert comparison.metadata["champion"] == (None if expected == 1 else 1)
        result = deploy_model.python_func(
            serving_model=serving_model,
            champion_comparison=comparison,
            deployment=deployment,
            model_name="rankflow",
            model_store=str(store),
            triton_url="",
            allow_contract_change=False,
        )
        assert result.version == expected
    # The same model against itself: no difference on any task.
    judged = json.loads(Path(comparison.path).read_text())
    assert {t["candidate"] - t["champion"] for t in judged["tasks"].values()} == {0.0}
    assert len(judged["tasks"]) == 4
    # A comparison that no longer holds (version 2 serves now) publishes nothing.
    with pytest.raises(DeployError, match="judged against version 1"):
        deploy_model.python_func(
            serving_model=serving_model,
            champion_comparison=comparison,
            deployment=artifact(dsl.Artifact, "deployment-stale"),
            model_name="rankflow",
            model_store=str(store),
            triton_url="",
            allow_contract_change=False,
        )
    assert json.loads(Path(deployment.path).read_text())["previous"] == 1
    assert deployment.metadata.pop("sha256")
    assert deployment.metadata == {"model_name": "rankflow", "version": 2, "servers": []}
    assert (store / "rankflow" / "2" / "model.py").is_file()


def test_deployment_gate_needs_every_blessing():
    from components.deploy.component import deployment_gate

    gate = deployment_gate.python_func
    for blessings in itertools.product((True, False), repeat=3):
        model, champion, infra = blessings
        opened = gate(model_blessed=model, champion_blessed=champion, infra_blessed=infra)
        assert opened is all(blessings)
