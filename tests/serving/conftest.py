"""Serving fixtures: one exported repository and one real Triton serving it, per session."""

from __future__ import annotations

import pytest

from rankflow.spec import DatasetSpec
from serving.export import ExportConfig, export_cpu_repository
from serving.scorer import RankerScorer
from serving.triton import TritonConfig, TritonServer


@pytest.fixture(scope="session")
def repository(prepared, features, trained, tmp_path_factory):
    return export_cpu_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=trained,
        repository=tmp_path_factory.mktemp("export") / "repo",
        config=ExportConfig(),
    )


@pytest.fixture(scope="session")
def scorer(features, trained):
    return RankerScorer(features["workflow"], trained, targets=("click", "conversion"))


@pytest.fixture(scope="session")
def triton(repository):
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        yield server
