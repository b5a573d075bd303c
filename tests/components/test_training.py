from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from components.training.component import train_ranker as train_component
from components.training.ranker import (
    ARCHITECTURES,
    MIN_STEPS,
    RankerConfig,
    _task_outputs,
    build_ranker,
    fit_calibration,
    parse_sizes,
    plan_budget,
)
from rankflow.core.artifacts import load_ranker, predict, save_ranker
from rankflow.core.spec import DatasetSpec
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

    # Calibration weights set after training travel inside the SavedModel: the reloaded model
    # serves sigmoid(scale * logit(p) + shift) for a binary task, scale * y + shift for dwell.
    raw = predict(model, features["test"])
    layers = _task_outputs(model)
    layers["click"].scale.assign(2.0)
    layers["click"].shift.assign(-0.5)
    layers["dwell_seconds"].scale.assign(3.0)
    layers["dwell_seconds"].shift.assign(1.0)
    save_ranker(model, tmp_path / "model")
    reloaded = load_ranker(tmp_path / "model")
    before, after = predict(model, features["test"]), predict(reloaded, features["test"])
    assert set(before) == {"click", "conversion", "long_view", "dwell_seconds"}
    for task in before:
        np.testing.assert_allclose(before[task], after[task], rtol=1e-6, atol=1e-7)
    for task in ("click", "conversion", "long_view"):
        assert ((before[task] > 0) & (before[task] < 1)).all()
    p = np.clip(raw["click"], 1e-6, 1 - 1e-6)
    expected = 1 / (1 + np.exp(-(2.0 * np.log(p / (1 - p)) - 0.5)))
    np.testing.assert_allclose(after["click"], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after["dwell_seconds"], 3.0 * raw["dwell_seconds"] + 1.0, rtol=1e-5)
    np.testing.assert_allclose(after["long_view"], raw["long_view"], rtol=1e-6)


def test_heads_follow_the_schema_targets(features):
    import merlin.models.tf as mm
    from merlin.io import Dataset
    from merlin.schema import Tags

    dataset = Dataset(str(features["train"]), engine="parquet", cpu=True)
    dataset.schema = dataset.schema.excluding_by_name(["conversion", "long_view", "dwell_seconds"])
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


def test_training_is_seeded(prepared, features, trained_on_valid, tmp_path):
    from components.training.ranker import train_ranker
    from tests.conftest import VALID_TRAINED

    spec = DatasetSpec.load(prepared["spec"])
    # The small valid split as train: seeding is what is under test, not the fit.
    train_ranker(
        spec,
        features["valid"],
        features["valid"],
        model_dir=tmp_path / "again",
        config=RankerConfig(**VALID_TRAINED),
    )
    a = predict(load_ranker(trained_on_valid), features["test"])
    b = predict(load_ranker(tmp_path / "again"), features["test"])
    np.testing.assert_allclose(a["click"], b["click"], rtol=1e-5, atol=1e-6)


def test_component_trains_and_saves(prepared, features, artifact):
    ranker = artifact(dsl.Model, "ranker")
    metrics = artifact(dsl.Metrics, "training_metrics")
    train_component.python_func(
        train_features=artifact(dsl.Dataset, "train", features["train"]),
        valid_features=artifact(dsl.Dataset, "valid", features["valid"]),
        dataset_spec=artifact(dsl.Artifact, "spec", prepared["spec"]),
        ranker=ranker,
        training_metrics=metrics,
        **{
            **pipeline_defaults(train_component),
            "architecture": "ple",
            "epochs": 1,
            "learning_rate": 0.02,
        },
    )
    assert (Path(ranker.path) / "saved_model.pb").is_file()
    assert ranker.metadata["architecture"] == "ple"
    assert np.isfinite(metrics.metadata["val_criterion"])
    assert metrics.metadata["epochs_run"] == metrics.metadata["epochs_planned"] == 1
    record = json.loads((Path(ranker.path) / "training.json").read_text())
    # Set values win (0, the pipeline's default, derives the batch size from the split's rows).
    assert record["budget"]["source"] == {
        "batch_size": "derived",
        "epochs": "set",
        "learning_rate": "set",
    }
    assert record["budget"]["learning_rate"] == 0.02


def test_budget_follows_the_log_size_and_set_values_win():
    small, large = plan_budget(16_000, RankerConfig()), plan_budget(1_600_000, RankerConfig())
    # 20,000 rows once got 8 optimizer steps; now at least MIN_STEPS (or MAX_EPOCHS).
    assert small.batch_size == 256 and small.epochs * small.steps_per_epoch >= MIN_STEPS
    assert large.batch_size == 2048 and large.epochs == 1
    assert small.learning_rate < large.learning_rate
    chosen = plan_budget(16_000, RankerConfig(batch_size=64, epochs=2, learning_rate=0.1))
    assert (chosen.batch_size, chosen.epochs, chosen.learning_rate) == (64, 2, 0.1)
    assert set(chosen.source.values()) == {"set"}


def test_platt_calibration_recovers_a_known_distortion():
    """Scores that are a logit-linear distortion of the truth are mapped back onto it."""
    rng = np.random.default_rng(0)
    truth = 1 / (1 + np.exp(-rng.normal(-2, 1, 50_000)))
    labels = (rng.random(truth.size) < truth).astype(float)
    logit = np.log(truth / (1 - truth))
    distorted = 1 / (1 + np.exp(-(0.5 * logit - 1.0)))
    scale, shift = fit_calibration("binary", distorted, labels, np.ones(truth.size))
    assert scale == pytest.approx(2.0, rel=0.1) and shift == pytest.approx(2.0, rel=0.15)
    # With a pooled mean, the scale stays the validation split's and the calibrated values
    # average that mean instead of the split's own (noisy) rate.
    scale2, shift2 = fit_calibration(
        "binary", distorted, labels, np.ones(truth.size), mean=labels.mean() * 1.1
    )
    calibrated = 1 / (1 + np.exp(-(scale2 * np.log(distorted / (1 - distorted)) + shift2)))
    assert scale2 == scale and calibrated.mean() == pytest.approx(labels.mean() * 1.1, rel=1e-6)
    # Regression: least squares in the target's unit.
    values = rng.normal(10, 3, 5000)
    assert fit_calibration("regression", values, 2 * values + 1, np.ones(5000)) == pytest.approx(
        (2.0, 1.0)
    )


def test_given_task_trains_only_on_the_given_positives(prepared, features):
    """Conversion labels on rows without a click carry no weight: flipping them all leaves the
    conversion head's loss unchanged; flipping one on a clicked row changes it."""
    import merlin.models.tf as mm
    import pandas as pd
    import tensorflow as tf
    from merlin.io import Dataset

    from components.training.ranker import (
        GIVEN_SHARE_POWER,
        label_columns,
        output_name,
        plan_heads,
        read_labels,
    )

    spec = DatasetSpec.load(prepared["spec"])
    labels = read_labels(features["train"], label_columns(spec))
    heads = plan_heads(spec, labels)
    assert heads["conversion"].weight_columns == ("click",)
    # Each loss over its constant predictor's; a given task's also over a power of its row share.
    share = labels["click"].mean()
    rate = labels["conversion"][labels["click"] == 1].mean()
    baseline = -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))
    expected = 1 / (baseline * share**GIVEN_SHARE_POWER)
    assert heads["conversion"].loss_weight == pytest.approx(expected, rel=1e-9)
    tf.keras.utils.set_random_seed(3)
    schema = _schema(features["train"])
    model = build_ranker(schema, config=RankerConfig(architecture="shared_bottom"), heads=heads)
    model.compile(optimizer="adam")
    # A few steps first: an untrained head answers 0.5, whose log-loss is the same for either label.
    train = mm.Loader(Dataset(str(features["train"]), engine="parquet", cpu=True), batch_size=512)
    model.fit(train, epochs=1, steps_per_epoch=20, verbose=0)
    frame = pd.read_parquet(features["train"] / "part_0.parquet").head(4096)
    clicked = frame["click"] == 1
    variants = {
        "same": frame,
        "unclicked": frame.assign(conversion=np.where(clicked, frame["conversion"], 1)),
        "clicked": frame.assign(conversion=np.where(clicked, 1 - frame["conversion"], 0)),
    }
    losses = {}
    for name, variant in variants.items():
        dataset = Dataset(variant, schema=schema, cpu=True)
        result = model.evaluate(mm.Loader(dataset, batch_size=4096), verbose=0, return_dict=True)
        losses[name] = result[f"{output_name(heads['conversion'])}_loss"]
    assert losses["unclicked"] == pytest.approx(losses["same"], rel=1e-6)
    assert abs(losses["clicked"] - losses["same"]) > 1e-3


def test_best_epoch_weights_are_kept(prepared, features, tmp_path):
    from components.training.ranker import TRAINING_RECORD, train_ranker

    spec = DatasetSpec.load(prepared["spec"])
    config = RankerConfig(epochs=4, batch_size=1024, learning_rate=0.05, patience=4)
    result = train_ranker(
        spec, features["train"], features["valid"], model_dir=tmp_path / "m", config=config
    )
    assert len(result.criterion) == 4
    assert result.best_epoch == int(np.argmin(result.criterion)) + 1
    saved = json.loads((tmp_path / "m" / TRAINING_RECORD).read_text())
    assert saved["best_epoch"] == result.best_epoch
    # With its calibration undone, the saved model scores the validation split exactly as the
    # best epoch did: those are the weights kept, not the last epoch's.
    from components.training.ranker import _task_outputs, read_labels, validation_criterion

    model = load_ranker(tmp_path / "m")
    for layer in _task_outputs(model).values():
        layer.scale.assign(1.0)
        layer.shift.assign(0.0)
    labels = read_labels(features["valid"], list(spec.task_names))
    criterion, _ = validation_criterion(spec, predict(model, features["valid"]), labels)
    assert criterion == pytest.approx(result.criterion[result.best_epoch - 1], rel=1e-5)
    if result.best_epoch < 4:
        assert criterion < result.criterion[-1]
