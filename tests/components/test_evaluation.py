from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.evaluation import metrics as m
from components.evaluation.component import evaluate_ranker as evaluate_component
from components.evaluation.evaluate import bless, evaluate, markdown_report
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


def test_oracle_predictions_score_the_oracle_auc(prepared):
    """A model that outputs the true probabilities scores exactly the oracle AUC."""
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    oracle = {"click": raw["p_click"].to_numpy(), "conversion": raw["p_conversion"].to_numpy()}
    result = evaluate(spec, oracle, prepared["test"], min_auc={})
    for task in ("click", "conversion"):
        assert result.tasks[task].auc == result.tasks[task].oracle_auc
        assert result.tasks[task].oracle_auc > 0.65
        assert result.tasks[task].ece < 0.05
    # Noise instead of the truth: chance-level AUC, far below the oracle.
    noise = {k: np.random.default_rng(0).random(v.size) for k, v in oracle.items()}
    worse = evaluate(spec, noise, prepared["test"], min_auc={"click": 0.6})
    assert abs(worse.tasks["click"].auc - 0.5) < 0.05
    assert not worse.blessed and "click: AUC" in worse.reasons[0]


def test_prediction_count_must_match_the_split(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    with pytest.raises(ValueError, match="predictions for"):
        evaluate(
            spec, {"click": np.zeros(3), "conversion": np.zeros(3)}, prepared["test"], min_auc={}
        )


def test_bless_thresholds(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    oracle = {"click": raw["p_click"].to_numpy(), "conversion": raw["p_conversion"].to_numpy()}
    tasks = evaluate(spec, oracle, prepared["test"], min_auc={}).tasks
    assert bless(tasks, {"click": 0.6}) == (True, [])
    ok, reasons = bless(tasks, {"click": 0.6, "conversion": 0.99})
    assert not ok and reasons == [
        f"conversion: AUC {tasks['conversion'].auc:.4f} < required 0.9900"
    ]
    with pytest.raises(ValueError, match="does not predict"):
        bless(tasks, {"like": 0.5})


def test_component_writes_metrics_roc_report_and_blessing(trained, features, prepared, artifact):
    outs = {
        "metrics": artifact(dsl.Metrics, "metrics"),
        "click_roc": artifact(dsl.ClassificationMetrics, "click_roc"),
        "conversion_roc": artifact(dsl.ClassificationMetrics, "conversion_roc"),
        "report": artifact(dsl.Markdown, "report"),
        "evaluation": artifact(dsl.Artifact, "evaluation"),
    }
    result = evaluate_component.python_func(
        ranker=artifact(dsl.Model, "ranker", trained),
        test_features=artifact(dsl.Dataset, "test_features", features["test"]),
        test_data=artifact(dsl.Dataset, "test_data", prepared["test"]),
        dataset_spec=artifact(dsl.Artifact, "spec", prepared["spec"]),
        min_auc_click=0.55,
        min_auc_conversion=0.5,
        **outs,
    )
    metrics = outs["metrics"].metadata
    assert 0.55 < metrics["click_auc"] <= metrics["click_oracle_auc"] + 0.02
    assert result.blessed is True
    curve = outs["click_roc"].metadata["confidenceMetrics"]
    assert curve[0]["falsePositiveRate"] == 0.0 and len(curve) > 10
    assert "conversion" in Path(outs["report"].path).read_text()
    saved = json.loads(Path(outs["evaluation"].path).read_text())
    assert saved["blessed"] is True and set(saved["tasks"]) == {"click", "conversion"}

    refused = evaluate_component.python_func(
        ranker=artifact(dsl.Model, "ranker", trained),
        test_features=artifact(dsl.Dataset, "test_features", features["test"]),
        test_data=artifact(dsl.Dataset, "test_data", prepared["test"]),
        dataset_spec=artifact(dsl.Artifact, "spec", prepared["spec"]),
        min_auc_click=0.999,
        min_auc_conversion=0.5,
        **{k: artifact(type(v), k + "2") for k, v in outs.items()},
    )
    assert refused.blessed is False


def test_markdown_report_shows_gap_and_calibration(prepared):
    spec = DatasetSpec.load(prepared["spec"])
    raw = pq.read_table(prepared["test"]).to_pandas()
    result = evaluate(
        spec,
        {"click": raw["p_click"].to_numpy(), "conversion": raw["p_conversion"].to_numpy()},
        prepared["test"],
        min_auc={},
    )
    report = markdown_report(result)
    assert "**blessed**" in report
    assert report.count("## Calibration") == 2
    assert "| click |" in report


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
            min_auc={},
        )
