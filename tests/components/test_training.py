from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp import dsl

from components.evaluation.metrics import expected_calibration_error
from components.training.component import train_ranker as train_component
from components.training.ranker import (
    ARCHITECTURES,
    MIN_STEPS,
    Calibration,
    RankerConfig,
    build_ranker,
    fit_calibration,
    fit_platt,
    parse_sizes,
    plan_budget,
    task_outputs,
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
    # serves beta calibration for a binary task (Calibration.apply is its numpy mirror),
    # scale * y + shift for dwell.
    raw = predict(model, features["test"])
    # Every third 64-row batch scored, in place; the rows between are NaN.
    strided = predict(model, features["test"], batch_size=64, stride=3)["click"]
    scored = (np.arange(strided.size) // 64) % 3 == 0
    assert strided.size == raw["click"].size and (~scored).any()
    assert np.isnan(strided[~scored]).all()
    np.testing.assert_allclose(strided[scored], raw["click"][scored], rtol=1e-6)
    layers = task_outputs(model)
    layers["click"].scale.assign(2.0)
    layers["click"].shift.assign(-0.5)
    layers["click"].curvature.assign(0.7)
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
    p = np.clip(raw["click"].astype(np.float64), 1e-6, 1 - 1e-6)
    # a log p - b log(1 - p) + c with a = scale - curvature, b = scale + curvature.
    expected = 1 / (1 + np.exp(-(1.3 * np.log(p) - 2.7 * np.log1p(-p) - 0.5)))
    np.testing.assert_allclose(after["click"], expected, rtol=1e-4, atol=1e-6)
    mirror = Calibration(2.0, -0.5, 0.7).apply("binary", raw["click"].astype(np.float64))
    np.testing.assert_allclose(after["click"], mirror, rtol=1e-4, atol=1e-6)
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
    fitted = fit_calibration("binary", distorted, labels, np.ones(truth.size))
    assert fitted.scale == pytest.approx(2.0, rel=0.1)
    assert fitted.shift == pytest.approx(2.0, rel=0.15)
    assert abs(fitted.curvature) < 0.1 * fitted.scale  # a Platt-shaped distortion: ~Platt
    # With a pooled mean, the shape stays the validation split's and the calibrated values
    # average that mean instead of the split's own (noisy) rate.
    pooled = fit_calibration(
        "binary", distorted, labels, np.ones(truth.size), mean=labels.mean() * 1.1
    )
    assert (pooled.scale, pooled.curvature) == (fitted.scale, fitted.curvature)
    calibrated = pooled.apply("binary", distorted)
    assert calibrated.mean() == pytest.approx(labels.mean() * 1.1, rel=1e-6)
    # Regression: least squares in the target's unit.
    values = rng.normal(10, 3, 5000)
    line = fit_calibration("regression", values, 2 * values + 1, np.ones(5000))
    assert (line.scale, line.shift, line.curvature) == pytest.approx((2.0, 1.0, 0.0))


def test_beta_calibration_bends_where_platt_cannot():
    """Scores overconfident at the low end and underconfident at the top (one slope in log p,
    another in log(1 - p)): Platt's single slope leaves an ECE it can't remove, beta recovers
    the truth. A fit that would not be monotone falls back to Platt."""
    rng = np.random.default_rng(1)
    truth = 1 / (1 + np.exp(-rng.normal(-1.0, 1.2, 60_000)))
    labels = (rng.random(truth.size) < truth).astype(float)
    # truth = sigmoid(0.5 log s - 2 log(1 - s) + 0.3) for these scores s.
    grid = np.linspace(1e-4, 1 - 1e-4, 20_001)
    curve = 1 / (1 + np.exp(-(0.5 * np.log(grid) - 2.0 * np.log1p(-grid) + 0.3)))
    scores = np.interp(truth, curve, grid)
    ones = np.ones(truth.size)
    beta = fit_calibration("binary", scores, labels, ones)
    a, b = beta.scale - beta.curvature, beta.scale + beta.curvature
    assert (a, b, beta.shift) == pytest.approx((0.5, 2.0, 0.3), abs=0.1)
    scale, shift = fit_platt(np.log(scores) - np.log1p(-scores), labels, ones)
    platt = 1 / (1 + np.exp(-(scale * np.log(scores / (1 - scores)) + shift)))
    ece = expected_calibration_error
    assert ece(labels, beta.apply("binary", scores)) < 0.5 * ece(labels, platt)
    # Scores that fall as the rate rises at the top: beta's b would be negative.
    bent = np.where(truth > 0.5, 1.2 - truth, truth)
    fallback = fit_calibration("binary", bent, labels, ones)
    assert fallback.curvature == 0.0


def test_a_head_configured_before_beta_calibration_serves_platt():
    """A ranker saved before beta calibration has no curvature weight in its checkpoint: its
    head's config (no "beta") builds none, so it still loads (checked by hand on such a store
    version), and serves Platt scaling; a curvature can't be set on it."""
    import tensorflow as tf

    from components.training.ranker import set_calibration
    from rankflow.core.errors import ConfigError
    from rankflow.core.layers import TaskOutput

    config = TaskOutput("binary", beta=True, name="click_post").get_config()
    del config["beta"]
    layer = TaskOutput.from_config(config)
    assert layer.curvature is None
    set_calibration(layer, Calibration(2.0, -0.5))
    p = np.array([[0.1], [0.6]])
    served = layer.serve(tf.constant(p, dtype=tf.float32)).numpy()
    np.testing.assert_allclose(served, Calibration(2.0, -0.5).apply("binary", p), rtol=1e-5)
    with pytest.raises(ConfigError, match="no curvature weight"):
        set_calibration(layer, Calibration(curvature=0.3))


def test_regression_calibration_keeps_a_slope_only_where_the_rows_show_one():
    """~150 rows of a heavy-tailed target: a least-squares slope well away from 1 is noise
    there (its robust standard error is large), so the scale stays 1; 20,000 rows with a true
    slope of 1.3 show theirs. Given the predictions' mean over more rows, the shift maps that
    mean onto ``mean``."""
    rng = np.random.default_rng(4)

    def rows(n: int, slope: float) -> tuple[np.ndarray, np.ndarray]:
        predicted = rng.lognormal(3.0, 0.6, n)
        return predicted, rng.gamma(1.0, slope * predicted)  # exponential noise: heavy-tailed

    small_p, small_y = rows(150, 1.0)
    assert abs(np.polyfit(small_p, small_y, 1)[0] - 1.0) > 0.15  # what plain least squares says
    fitted = fit_calibration("regression", small_p, small_y, np.ones(150))
    assert fitted.scale == 1.0
    assert fitted.shift == pytest.approx(small_y.mean() - small_p.mean())
    large_p, large_y = rows(20_000, 1.3)
    assert fit_calibration("regression", large_p, large_y, np.ones(20_000)).scale == pytest.approx(
        1.3, abs=0.05
    )
    fitted = fit_calibration(
        "regression", small_p, small_y, np.ones(150), mean=30.0, mean_prediction=25.0
    )
    assert (fitted.scale, fitted.shift) == (1.0, pytest.approx(5.0))


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
    from components.training.ranker import read_labels, reset_calibration, validation_criterion

    model = load_ranker(tmp_path / "m")
    reset_calibration(model)
    labels = read_labels(features["valid"], list(spec.task_names))
    criterion, _ = validation_criterion(spec, predict(model, features["valid"]), labels)
    assert criterion == pytest.approx(result.criterion[result.best_epoch - 1], rel=1e-5)
    if result.best_epoch < 4:
        assert criterion < result.criterion[-1]
