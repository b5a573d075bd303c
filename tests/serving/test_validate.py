"""Infra-validation on a fresh real Triton: a good export passes, broken ones are refused."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from rankflow.core.spec import DatasetSpec
from serving.export import ExportConfig, export_cpu_repository
from serving.validate import InfraValidationConfig, infra_validate
from tests.conftest import TARGETS

QUICK = InfraValidationConfig(rows=128, batch_size=64, latency_requests=20)


def _validate(prepared, features, model_dir, repository):
    return infra_validate(
        DatasetSpec.load(prepared["spec"]),
        repository=repository,
        model_name="rankflow",
        workflow_dir=features["workflow"],
        model_dir=model_dir,
        rows=pq.read_table(prepared["test"]).to_pandas(),
        config=QUICK,
    )


def test_good_export_is_blessed(prepared, features, trained, repository):
    report = _validate(prepared, features, trained, repository)
    assert report.blessed, report.reasons
    assert report.rows == 128
    assert set(report.skew_max_abs) == set(TARGETS)
    assert max(report.skew_max_rel.values()) <= 1e-5
    assert report.skew_max_rel["click"] == report.skew_max_abs["click"]  # a probability: as is
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p99"]


def test_export_of_another_model_is_refused(
    prepared, features, trained, trained_on_valid, tmp_path
):
    """The repository serves different weights than the model that was evaluated: skew."""
    other = trained_on_valid
    repository = export_cpu_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=other,
        repository=tmp_path / "repo",
        config=ExportConfig(),
    )
    report = _validate(prepared, features, trained, repository)
    assert not report.blessed
    assert any("online/offline max |diff|" in reason for reason in report.reasons)


def test_repository_that_cannot_load_is_refused(prepared, features, trained, repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repository, broken)
    (broken / "rankflow" / "1" / "ranker" / "saved_model.pb").write_bytes(b"truncated")
    report = _validate(prepared, features, trained, broken)
    assert not report.blessed
    assert report.reasons[0].startswith("serving failed")
    assert report.latency_ms == {}


def test_no_rows_is_an_error(prepared, features, trained, repository):
    import pandas as pd

    with pytest.raises(ValueError, match="at least one held-out row"):
        infra_validate(
            DatasetSpec.load(prepared["spec"]),
            repository=repository,
            model_name="rankflow",
            workflow_dir=features["workflow"],
            model_dir=trained,
            rows=pd.DataFrame(),
            config=QUICK,
        )
