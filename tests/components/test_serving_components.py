"""The export and infra-validation components through ``python_func`` with real artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from kfp import dsl

from components.deploy.component import deploy_model
from components.export.component import export_serving_model
from components.infra_validation.component import validate_on_triton


def test_export_then_validate_on_triton(artifact, prepared, features, trained):
    workflow = artifact(dsl.Model, "nvt_workflow", features["workflow"])
    ranker = artifact(dsl.Model, "ranker", trained)
    spec = artifact(dsl.Artifact, "dataset_spec", prepared["spec"])
    serving_model = artifact(dsl.Model, "serving_model")
    export_serving_model.python_func(
        nvt_workflow=workflow,
        ranker=ranker,
        dataset_spec=spec,
        serving_model=serving_model,
        model_name="rankflow",
        max_batch_size=256,
        flavour="cpu",
    )
    config = (Path(serving_model.path) / "rankflow" / "config.pbtxt").read_text()
    assert "max_batch_size: 256" in config
    digest = serving_model.metadata.pop("sha256")
    assert serving_model.metadata == {"model_name": "rankflow", "flavour": "cpu"}
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
        result = deploy_model.python_func(
            serving_model=serving_model,
            deployment=deployment,
            model_name="rankflow",
            model_store=str(store),
            triton_url="",
        )
        assert result.version == expected
    assert json.loads(Path(deployment.path).read_text())["previous"] == 1
    assert deployment.metadata.pop("sha256")
    assert deployment.metadata == {"model_name": "rankflow", "version": 2, "servers": []}
    assert (store / "rankflow" / "2" / "model.py").is_file()


def test_deployment_gate_needs_both_blessings():
    from components.deploy.component import deployment_gate

    gate = deployment_gate.python_func
    assert gate(model_blessed=True, infra_blessed=True) is True
    assert gate(model_blessed=True, infra_blessed=False) is False
    assert gate(model_blessed=False, infra_blessed=True) is False
