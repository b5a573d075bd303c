from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.evaluation import metrics as m
from components.evaluation.component import evaluate_ranker as evaluate_component
from components.evaluation.evaluate import Gates, bless, evaluate, markdown_report
from rankflow.core.spec import DatasetSpec


def _pairwise_auc(labels, scores):
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20  # many ties
    assert m.auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    assert m.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert m.auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0


def test_logloss_and_ece():
    assert m.logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.2, 200_000)
    calibrated = (rng.random(p.size) < p).astype(int)
    assert m.expected_calibration_error(calibrated, p) < 0.003
    assert m.expected_calibration_error(calibrated, np.clip(p * 2, 0, 1)) > 0.05


def test_ece_noise_floor_is_what_calibrated_scores_show_by_chance():
    rng = np.random.default_rng(3)
    p = rng.beta(1.2, 8.0, 2_000)  # a 12% rate on a small test split
    w = np.where(rng.random(p.size) < 0.3, 2.0, 1.0)
    floor = m.ece_noise_floor(p, w)
    chance = [
        m.expected_calibration_error((rng.random(p.size) < p).astype(int), p, w) for _ in range(200)
    ]
    assert 0.01 < floor < 0.03
    assert floor == pytest.approx(np.mean(chance), rel=0.1)
    assert m.ece_noise_floor(p, w) == floor  # seeded
    big = rng.beta(1.2, 8.0, 200_000)
    assert m.ece_noise_floor(big) < floor / 5  # shrinks as 1 / sqrt(rows per bin)
    with pytest.raises(ValueError, match="without NaN"):
        m.ece_noise_floor(np.array([0.1, np.nan]))


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        m.auc([0, 1], [0.5])
    with pytest.raises(ValueError, match="both positive and negative"):
        m.auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        m.logloss([0, 1], [np.nan, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        m.auc([0, 2], [0.1, 0.2])


def test_roc_curve_is_monotone_and_thinned():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 5000)
    scores = rng.random(5000) + labels * 0.3
    fpr, tpr, thresholds = m.roc_curve(labels, scores, max_points=100)
    assert len(fpr) <= 101
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(np.diff(thresholds) <= 0)
    assert np.trapz(tpr, fpr) == pytest.approx(m.auc(labels, scores), abs=0.01)


def test_weighted_metrics_equal_repeated_rows():
    """A row of weight 3 counts as three rows in every weighted metric."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400), 2)  # ties too
    weights = rng.integers(1, 4, 400)
    repeated = (np.repeat(labels, weights), np.repeat(scores, weights))
    assert m.auc(labels, scores, weights) == pytest.approx(m.auc(*repeated), abs=1e-12)
    assert m.logloss(labels, scores, weights) == pytest.approx(m.logloss(*repeated))
    assert m.average_precision(labels, scores, weights) == pytest.approx(
        m.average_precision(*repeated)
    )
    assert m.calibration_ratio(labels, scores, weights) == pytest.approx(
        repeated[1].sum() / repeated[0].sum()
    )


def test_average_precision_group_auc_and_auc_bound():
    assert m.average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    # GAUC: per-user AUC (1.0 and 0.0 here), weighted by the users' rows.
    groups = np.array([1, 1, 1, 2, 2, 2, 2, 3])
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.1, 0.5, 0.6, 0.7, 0.3])
    assert m.group_auc(labels, scores, groups) == pytest.approx(3 / 7)
    # The bound tightens with the sample and stays below the AUC.
    small = m.auc_lower_bound(0.6, np.r_[np.ones(20), np.zeros(80)])
    large = m.auc_lower_bound(0.6, np.r_[np.ones(2000), np.zeros(8000)])
    assert small < 0.5 < large < 0.6


def _truths(spec, raw) -> dict[str, np.ndarray]:
    """What a Bayes-optimal model would answer for every synthetic task."""
    return {t.name: raw[t.truth].to_numpy() for t in spec.tasks}


def test_oracle_predictions_score_the_oracle_metrics(prepared):
    """A model that outputs the truths scores exactly the oracle AUC (binary, on the given
    task's positives for conversion), the Bayes RMSE (regression) and the oracle product AUC."""
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    gates = Gates().for_spec(spec)
    result = evaluate(spec, _truths(spec, raw), prepared["test"], gates=gates)
    # Even the truth can't prove itself on a few dozen conversions: the default gate wants the
    # AUC above 0.5 by a 99% bound, and only that gate may refuse the oracle here.
    assert all(r.startswith("conversion: auc_lower") for r in result.reasons), result.reasons
    for task in ("click", "conversion", "long_view"):
        metrics = result.tasks[task].metrics
        assert metrics["auc"] == metrics["oracle_auc"] > 0.6
    for task in ("click", "long_view"):  # conversion: too few rows here for a stable ECE
        metrics = result.tasks[task].metrics
        assert metrics["ece"] < 0.05 and abs(metrics["calibration_ratio"] - 1) < 0.15
    conversion = result.tasks["conversion"]
    assert conversion.rows == int(raw["click"].sum()) and conversion.given == "click"
    assert conversion.metrics["product_auc"] == conversion.metrics["oracle_product_auc"]
    dwell = result.tasks["dwell_seconds"].metrics
    assert dwell["rmse"] == pytest.approx(dwell["bayes_rmse"]) and dwell["r2"] > 0.4
    assert dwell["oracle_calibration_ratio"] == pytest.approx(dwell["calibration_ratio"])
    assert set(result.tasks["click"].slices["surface"]) == set(raw["surface"])
    # Noise instead of the truth: chance-level AUC, worse than the mean predictor, not blessed.
    rng = np.random.default_rng(0)
    noise = {k: rng.random(v.size) * (40 if k == "dwell_seconds" else 1) for k, v in
             _truths(spec, raw).items()}  # fmt: skip
    worse = evaluate(spec, noise, prepared["test"], gates=gates)
    assert abs(worse.tasks["click"].metrics["auc"] - 0.5) < 0.05
    assert not worse.blessed
    assert any(r.startswith("click: auc_lower") for r in worse.reasons)
    assert any(r.startswith("dwell_seconds: rmse_ratio") for r in worse.reasons)


def test_prediction_count_must_match_the_split(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    with pytest.raises(ValueError, match="predictions for"):
        evaluate(
            spec,
            dict.fromkeys(spec.task_names, np.zeros(3)),
            prepared["test"],
            gates=Gates().for_spec(spec),
        )


def test_gates_from_json(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    tasks = evaluate(spec, _truths(spec, raw), prepared["test"], gates={}).tasks
    gates = Gates.from_json(
        '{"click": {"min_auc": 0.6}, "conversion": {"min_auc": 0.5}, "dwell_seconds": '
        '{"min_r2": 0.99}}'
    )
    resolved = gates.for_spec(spec)
    assert resolved["long_view"] == {"min_auc_lower": 0.5}  # a default for an unnamed task
    ok, reasons = bless(tasks, resolved)
    r2 = tasks["dwell_seconds"].metrics["r2"]
    assert not ok and reasons == [f"dwell_seconds: r2 {r2:.4f} < min_r2 0.9900"]
    # Champion gates sit beside the absolute ones: naming one replaces only its default.
    champion = Gates.from_json('{"click": {"min_auc": 0.6, "max_auc_drop": 0.01}}')
    assert champion.for_spec(spec)["click"] == {"min_auc": 0.6}
    assert champion.champion_for_spec(spec)["click"] == {"max_auc_drop": 0.01}
    assert champion.champion_for_spec(spec)["dwell_seconds"] == {"max_rmse_increase": 0.005}
    assert Gates.from_json('{"click": {"max_auc_drop": 0.01}}').for_spec(spec)["click"] == {
        "min_auc_lower": 0.5
    }
    assert Gates.from_json('{"click": {}}').champion_for_spec(spec)["click"] == {}
    for text, message in (
        ('{"click": {"max_rmse_increase": 0.1}}', "do not apply to a binary task"),
        ("[1]", "JSON object of task"),
        ("{bad", "must be a JSON object"),
        ('{"click": {"min_auc": "high"}}', "must be a number"),
        ('{"click": {"min_gauc": 0.6}}', "unknown gate"),
        ('{"like": {"min_auc": 0.6}}', "does not declare"),
        ('{"click": {"min_r2": 0.6}}', "do not apply to a binary task"),
    ):
        with pytest.raises(ValueError, match=message):
            Gates.from_json(text).for_spec(spec)


def test_component_writes_metrics_roc_report_and_blessing(trained, features, prepared, artifact):
    outs = {
        "metrics": artifact(dsl.Metrics, "metrics"),
        "roc": artifact(dsl.ClassificationMetrics, "roc"),
        "roc_curves": artifact(dsl.HTML, "roc_curves"),
        "report": artifact(dsl.Markdown, "report"),
        "evaluation": artifact(dsl.Artifact, "evaluation"),
    }
    inputs = {
        "ranker": artifact(dsl.Model, "ranker", trained),
        "test_features": artifact(dsl.Dataset, "test_features", features["test"]),
        "test_data": artifact(dsl.Dataset, "test_data", prepared["test"]),
        "train_data": artifact(dsl.Dataset, "train_data", prepared["train"]),
        "dataset_spec": artifact(dsl.Artifact, "spec", prepared["spec"]),
    }
    # A few dozen test conversions can't beat 0.5 by the default bound: a plain floor for it.
    gates = '{"click": {"min_auc": 0.55}, "conversion": {"min_auc": 0.0}}'
    result = evaluate_component.python_func(gates=gates, **inputs, **outs)
    metrics = outs["metrics"].metadata
    assert 0.55 < metrics["click_auc"] <= metrics["click_oracle_auc"] + 0.02
    assert {"conversion_product_auc", "dwell_seconds_rmse", "dwell_seconds_r2"} <= set(metrics)
    assert result.blessed is True
    curve = outs["roc"].metadata["confidenceMetrics"]
    assert curve[0]["falsePositiveRate"] == 0.0 and len(curve) > 10
    assert outs["roc"].metadata["task"] == "click"
    page = Path(outs["roc_curves"].path).read_text()
    assert page.count("<polyline") == 3 and "long_view: AUC" in page
    report = Path(outs["report"].path).read_text()
    assert "## Regression tasks" in report and "| dwell_seconds |" in report
    saved = json.loads(Path(outs["evaluation"].path).read_text())
    assert saved["blessed"] is True and set(saved["tasks"]) == set(DatasetSpec.load(
        prepared["spec"]).task_names)  # fmt: skip

    refused = evaluate_component.python_func(
        gates='{"click": {"min_auc": 0.999}}',
        **inputs,
        **{k: artifact(type(v), k + "2") for k, v in outs.items()},
    )
    assert refused.blessed is False


def test_cold_start_metrics_cover_the_rows_whose_item_train_never_showed(prepared, tmp_path):
    """Rows of unseen items get their own AUC / RMSE with a bootstrap interval around it."""
    from components.evaluation import metrics as m
    from components.evaluation.evaluate import MIN_COLD_ROWS, cold_rows

    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    train = pq.read_table(prepared["train"]).to_pandas()
    # Train without its most frequent test ad: that ad's test rows are cold.
    top = raw["ad_id"].value_counts().index[0]
    pq.write_table(pa.Table.from_pandas(train[train["ad_id"] != top]), tmp_path / "train.parquet")
    cold = cold_rows(spec, tmp_path / "train.parquet", prepared["test"])
    unseen = ~raw["ad_id"].isin(train["ad_id"][train["ad_id"] != top])
    assert cold.sum() >= (raw["ad_id"] == top).sum() > MIN_COLD_ROWS
    assert np.array_equal(cold, unseen.to_numpy())
    truths = _truths(spec, raw)
    result = evaluate(spec, truths, prepared["test"], gates=Gates().for_spec(spec), cold=cold)
    click = result.tasks["click"].cold_start
    assert click["rows"] == cold.sum() and 0 < click["share"] < 1
    expected = m.auc(raw["click"].to_numpy()[cold], truths["click"][cold])
    assert click["auc"] == pytest.approx(expected)
    assert click["low"] < click["auc"] < click["high"]
    dwell = result.tasks["dwell_seconds"].cold_start  # regression, on clicked cold rows only
    assert dwell["rows"] == (cold & (raw["click"] == 1)).sum()
    assert "rmse" in dwell and "auc" not in dwell
    assert result.flat_metrics()["click_cold_start_auc"] == click["auc"]
    report = markdown_report(result)
    assert "## Cold start" in report and f"[{click['low']:.4f}, {click['high']:.4f}]" in report
    # Without a train split (or an item id) there is nothing to call cold.
    plain = evaluate(spec, truths, prepared["test"], gates=Gates().for_spec(spec))
    assert plain.tasks["click"].cold_start is None and "## Cold start" not in markdown_report(plain)


def test_markdown_report_shows_every_task_slices_and_calibration(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    # A gate this log's conversions can't pass: the report must name it.
    gates = Gates.from_json('{"conversion": {"min_auc_lower": 0.99}}').for_spec(spec)
    result = evaluate(spec, _truths(spec, raw), prepared["test"], gates=gates)
    report = markdown_report(result)
    assert "**not blessed**" in report and "- conversion: auc_lower" in report
    assert report.count("## Calibration") == 3
    assert "| click |" in report and "| conversion | " in report
    assert "## dwell_seconds by surface" in report


def test_misaligned_splits_are_refused(trained, features, prepared, tmp_path):
    import pandas as pd

    from components.evaluation.evaluate import evaluate_ranker

    shuffled = tmp_path / "test_features"
    shuffled.mkdir()
    frame = pd.read_parquet(features["test"] / "part_0.parquet")
    frame.sample(frac=1.0, random_state=0).to_parquet(shuffled / "part_0.parquet", index=False)
    (shuffled / "schema.pbtxt").write_text((features["test"] / "schema.pbtxt").read_text())
    with pytest.raises(ValueError, match="not row-aligned"):
        evaluate_ranker(
            DatasetSpec.load(prepared["spec"]),
            model_dir=trained,
            test_features=shuffled,
            raw_test=prepared["test"],
            gates={},
        )
