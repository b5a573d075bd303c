from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from components.training.component import train_ranker as train_component
from components.training.ranker import ARCHITECTURES, RankerConfig, build_ranker, parse_sizes
from rankflow.core.artifacts import load_ranker, predict, save_ranker
from tests.conftest import pipeline_defaults


def _schema(path: Path):
    from merlin.io import Dataset

    return Dataset(str(path), engine="parquet", cpu=True).schema


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_fit_one_step_save_reload_same_predictions(architecture, features, tmp_path):
    import merlin.models.tf as mm
    import tensorflow as tf
    from merlin.io import Dataset

    tf.keras.utils.set_random_seed(1)
    config = RankerConfig(architecture=architecture, batch_size=256, embedding_dim=8)
    schema = _schema(features["train"])
    model = build_ranker(schema, config=config)
    model.compile(optimizer="adam")
    loader = mm.Loader(Dataset(str(features["train"]), engine="parquet", cpu=True), batch_size=256)
    history = model.fit(loader, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    save_ranker(model, tmp_path / "model")
    reloaded = load_ranker(tmp_path / "model")
    before, after = predict(model, features["test"]), predict(reloaded, features["test"])
    assert set(before) == {"click", "conversion"}
    for task in before:
        np.testing.assert_allclose(before[task], after[task], rtol=1e-6, atol=1e-7)
        assert ((before[task] > 0) & (before[task] < 1)).all()


def test_heads_follow_the_schema_targets(features):
    import merlin.models.tf as mm
    from merlin.io import Dataset
    from merlin.schema import Tags

    dataset = Dataset(str(features["train"]), engine="parquet", cpu=True)
    dataset.schema = dataset.schema.excluding_by_name(["conversion"])
    assert dataset.schema.select_by_tag(Tags.TARGET).column_names == ["click"]
    model = build_ranker(dataset.schema, config=RankerConfig(architecture="shared_bottom"))
    inputs, _ = next(iter(mm.Loader(dataset, batch_size=32)))
    scores = model(inputs)
    # One target: one head, a single (batch, 1) tensor rather than a dict of tasks.
    assert not isinstance(scores, dict)
    assert tuple(scores.shape) == (32, 1)


def test_no_targets_is_a_clear_error(features):
    from merlin.schema import Tags

    schema = _schema(features["train"]).remove_by_tag(Tags.TARGET)
    with pytest.raises(ValueError, match="no column tagged TARGET"):
        build_ranker(schema, config=RankerConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "transformer"}, "architecture must be one of"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"expert_mlp": ()}, "expert_mlp must be a non-empty"),
        ({"dropout": 1.0}, "dropout"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RankerConfig(**kwargs)


def test_parse_sizes():
    assert parse_sizes("128, 64", name="x") == (128, 64)
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_sizes("128;64", name="x")
    with pytest.raises(ValueError, match="at least one"):
        parse_sizes("", name="x")


def test_load_missing_model_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved ranker"):
        load_ranker(tmp_path / "nope")


def test_training_is_seeded(features, tmp_path):
    from components.training.ranker import train_ranker

    config = RankerConfig(epochs=1, batch_size=1024, architecture="shared_bottom", cross_depth=1)
    for name in ("a", "b"):
        train_ranker(features["train"], features["valid"], model_dir=tmp_path / name, config=config)
    a = predict(load_ranker(tmp_path / "a"), features["test"])
    b = predict(load_ranker(tmp_path / "b"), features["test"])
    np.testing.assert_allclose(a["click"], b["click"], rtol=1e-5, atol=1e-6)


def test_component_trains_and_saves(features, artifact):
    ranker = artifact(dsl.Model, "ranker")
    metrics = artifact(dsl.Metrics, "training_metrics")
    train_component.python_func(
        train_features=artifact(dsl.Dataset, "train", features["train"]),
        valid_features=artifact(dsl.Dataset, "valid", features["valid"]),
        ranker=ranker,
        training_metrics=metrics,
        **{**pipeline_defaults(train_component), "architecture": "ple", "epochs": 1},
    )
    assert (Path(ranker.path) / "saved_model.pb").is_file()
    assert ranker.metadata["architecture"] == "ple"
    assert np.isfinite(metrics.metadata["val_loss"])
    assert 0.5 < metrics.metadata["val_click_binary_output_auc"] <= 1.0


@pytest.mark.gpu
def test_training_data_path_is_on_the_gpu(features):
    import tensorflow as tf

    from rankflow.core.artifacts import split_loader

    assert tf.config.list_physical_devices("GPU")
    assert split_loader(features["train"], batch_size=64, shuffle=False).device != "cpu"
