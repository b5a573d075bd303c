"""Serving fixtures: one exported repository and one real Triton serving it, per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankflow.core.spec import DatasetSpec
from serving.export import ExportConfig, export_cpu_repository
from serving.scorer import RankerScorer
from serving.triton import TritonConfig, TritonServer
from tests.conftest import TARGETS


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
    return RankerScorer(features["workflow"], trained, targets=TARGETS)


@pytest.fixture(scope="session")
def triton(repository):
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        yield server


#: Figures the reliability tests measured (load latency, failures during rollouts), kept for
#: RELIABILITY.md; build/ is not committed.
FIGURES = Path(__file__).resolve().parents[2] / "build" / "reliability"


@pytest.fixture
def record_figures():
    def record(name: str, figures: dict) -> Path:
        FIGURES.mkdir(parents=True, exist_ok=True)
        path = FIGURES / f"{name}.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        return path

    return record
