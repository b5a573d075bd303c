"""Shared fixtures: one small real dataset, its features and a trained ranker per session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

# Quiet TF's C++ banner in test logs; set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")

SMALL_ROWS = 30_000


def pytest_collection_modifyitems(config, items):
    from components.features.workflow import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with cudf")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """A real synthetic log, validated and split: {'train','valid','test','spec'} -> path."""
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig

    root = tmp_path_factory.mktemp("prepared")
    outputs = {name: root / name for name in ("train", "valid", "test")}
    prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=SMALL_ROWS, seed=11, chunk_rows=10_000),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=root / "spec.yaml",
    )
    return {**outputs, "spec": root / "spec.yaml"}


@pytest.fixture(scope="session")
def features(prepared, tmp_path_factory) -> dict[str, Path]:
    """NVTabular features of ``prepared``: {'train','valid','test','workflow'} -> path."""
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from rankflow.spec import DatasetSpec

    root = tmp_path_factory.mktemp("features")
    outputs = {name: root / name for name in ("train", "valid", "test")}
    run_feature_engineering(
        DatasetSpec.load(prepared["spec"]),
        {name: prepared[name] for name in outputs},
        workflow_dir=root / "workflow",
        outputs=outputs,
        config=FeatureConfig(),
    )
    return {**outputs, "workflow": root / "workflow"}


@pytest.fixture(scope="session")
def trained(features, tmp_path_factory) -> Path:
    """A ranker trained one epoch on ``features``; the SavedModel directory."""
    from components.training.ranker import RankerConfig, train_ranker

    model_dir = tmp_path_factory.mktemp("ranker") / "model"
    train_ranker(
        features["train"],
        features["valid"],
        model_dir=model_dir,
        config=RankerConfig(epochs=1, batch_size=512),
    )
    return model_dir


@pytest.fixture
def artifact(tmp_path):
    """``artifact(dsl.Dataset, "name")`` -> a KFP artifact at a fresh path under ``tmp_path``, or
    at ``path`` for an input that already exists."""

    def make(cls, name: str, path: Path | None = None):
        return cls(name=name, uri=str(path or tmp_path / name))

    return make


def pipeline_defaults(component) -> dict:
    """The pipeline's default for every parameter of ``component`` (the pipeline passes its
    parameters through under the same names), so tests call a component as a default run would."""
    from pipelines.ranking import ranking_pipeline

    params = ranking_pipeline.component_spec.inputs
    return {
        name: params[name].default for name in component.component_spec.inputs if name in params
    }
