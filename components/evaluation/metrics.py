"""Ranking and calibration metrics, in plain numpy so they are exact and cheap to test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from rankflow.core.errors import EvaluationError

EPS = 1e-7


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise EvaluationError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if labels.size == 0:
        raise EvaluationError("cannot score an empty set of predictions")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise EvaluationError("labels must be 0/1")
    if not np.isfinite(scores).all():
        raise EvaluationError("scores contain NaN or infinite values")
    return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney U statistic, ties counted as half."""
    labels, scores = _check(labels, scores)
    positives = labels.sum()
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise EvaluationError("AUC needs both positive and negative labels")
    ranks = rankdata(scores)
    return float(
        (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def logloss(labels: np.ndarray, scores: np.ndarray) -> float:
    labels, scores = _check(labels, scores)
    p = np.clip(scores, EPS, 1 - EPS)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


def calibration_table(
    labels: np.ndarray, scores: np.ndarray, *, bins: int = 10
) -> list[CalibrationBin]:
    """Equal-mass bins of the predicted score (rare-event scores crowd into the lowest of
    equal-width bins, which would hide all the information)."""
    labels, scores = _check(labels, scores)
    order = np.argsort(scores, kind="stable")
    table = []
    for chunk in np.array_split(order, min(bins, labels.size)):
        if chunk.size == 0:
            continue
        s, y = scores[chunk], labels[chunk]
        table.append(
            CalibrationBin(
                float(s.min()), float(s.max()), int(chunk.size), float(s.mean()), float(y.mean())
            )
        )
    return table


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, *, bins: int = 10) -> float:
    """Count-weighted mean |mean predicted - observed rate| over equal-mass bins."""
    table = calibration_table(labels, scores, bins=bins)
    total = sum(b.count for b in table)
    return float(sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in table) / total)


def roc_curve(
    labels: np.ndarray, scores: np.ndarray, *, max_points: int = 200
) -> tuple[list[float], list[float], list[float]]:
    """(fpr, tpr, thresholds), thinned to at most ``max_points`` for the Kubeflow UI."""
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (1 + distinct) - tps
    tpr = tps / max(tps[-1], 1)
    fpr = fps / max(fps[-1], 1)
    thresholds = s[distinct]
    if distinct.size > max_points:
        keep = np.unique(np.linspace(0, distinct.size - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return (
        [0.0, *fpr.tolist()],
        [0.0, *tpr.tolist()],
        [float(thresholds[0]) + 1.0, *thresholds.tolist()],
    )
