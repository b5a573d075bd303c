"""Ranking and calibration metrics, in plain numpy so they are exact and cheap to test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from rankflow.core.errors import EvaluationError

EPS = 1e-7


def _check(
    labels: np.ndarray, scores: np.ndarray, *, binary: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise EvaluationError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if labels.size == 0:
        raise EvaluationError("cannot score an empty set of predictions")
    if binary and not np.isin(labels, (0.0, 1.0)).all():
        raise EvaluationError("labels must be 0/1")
    if not np.isfinite(scores).all():
        raise EvaluationError("scores contain NaN or infinite values")
    return labels, scores


def _weights(weights: np.ndarray | None, size: int) -> np.ndarray:
    if weights is None:
        return np.ones(size)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.size != size:
        raise EvaluationError(f"{weights.size} weights for {size} rows")
    if (weights < 0).any() or not weights.sum() > 0:
        raise EvaluationError("weights must be >= 0 and not all 0")
    return weights


def auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC: the (weighted) probability that a positive outscores a negative, ties as half."""
    labels, scores = _check(labels, scores)
    if weights is None:
        positives = labels.sum()
        negatives = labels.size - positives
        if positives == 0 or negatives == 0:
            raise EvaluationError("AUC needs both positive and negative labels")
        ranks = rankdata(scores)
        return float(
            (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
        )
    w = _weights(weights, labels.size)
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], w[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    pos = np.add.reduceat(w * y, starts)
    neg = np.add.reduceat(w * (1 - y), starts)
    if pos.sum() == 0 or neg.sum() == 0:
        raise EvaluationError("AUC needs both positive and negative labels")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def auc_lower_bound(
    value: float, labels: np.ndarray, weights: np.ndarray | None = None, *, z: float = 2.326
) -> float:
    """A one-sided 99% lower confidence bound of an AUC (Hanley and McNeil's standard error,
    with Kish's effective counts under weights)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    w = _weights(weights, labels.size)

    def effective(mask: np.ndarray) -> float:
        part = w[mask]
        return float(part.sum() ** 2 / (part**2).sum()) if part.sum() > 0 else 0.0

    n_pos, n_neg = effective(labels == 1), effective(labels == 0)
    if n_pos < 1 or n_neg < 1:
        return 0.0
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (
        value * (1 - value) + (n_pos - 1) * (q1 - value**2) + (n_neg - 1) * (q2 - value**2)
    ) / (n_pos * n_neg)
    return float(value - z * np.sqrt(max(variance, 0.0)))


def logloss(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    labels, scores = _check(labels, scores)
    w = _weights(weights, labels.size)
    p = np.clip(scores, EPS, 1 - EPS)
    return float(-np.average(labels * np.log(p) + (1 - labels) * np.log(1 - p), weights=w))


def average_precision(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """PR-AUC as average precision: precision at each positive, weighted by its recall step."""
    labels, scores = _check(labels, scores)
    w = _weights(weights, labels.size)
    order = np.argsort(-scores, kind="stable")
    s, y, w = scores[order], labels[order], w[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(w * y)[ends]
    fp = np.cumsum(w * (1 - y))[ends]
    if tp[-1] == 0:
        raise EvaluationError("average precision needs positive labels")
    precision = tp / np.maximum(tp + fp, EPS)
    recall_step = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float((precision * recall_step).sum())


def calibration_ratio(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Σp / Σy: 1 when the predictions add up to what happened."""
    labels, scores = _check(labels, scores, binary=False)
    w = _weights(weights, labels.size)
    observed = float((w * labels).sum())
    return float((w * scores).sum() / observed) if observed else float("inf")


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float | None:
    """GAUC: the mean per-group (per-user) AUC weighted by the group's rows, over groups with
    both labels; None when no group has both."""
    import pandas as pd

    labels, scores = _check(labels, scores)
    frame = pd.DataFrame({"g": np.asarray(groups).reshape(-1), "y": labels, "s": scores})
    frame["r"] = frame.groupby("g")["s"].rank(method="average")
    per = frame.groupby("g").agg(n=("y", "size"), pos=("y", "sum"))
    per["ranks"] = frame[frame["y"] == 1].groupby("g")["r"].sum()
    per = per[(per["pos"] > 0) & (per["pos"] < per["n"])]
    if per.empty:
        return None
    neg = per["n"] - per["pos"]
    aucs = (per["ranks"] - per["pos"] * (per["pos"] + 1) / 2) / (per["pos"] * neg)
    return float(np.average(aucs, weights=per["n"]))


def regression_metrics(
    labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """RMSE, MAE, R^2 and the RMSE of predicting the (weighted) mean, in the target's unit."""
    labels, predictions = _check(labels, predictions, binary=False)
    w = _weights(weights, labels.size)
    mean = float(np.average(labels, weights=w))
    mse = float(np.average((labels - predictions) ** 2, weights=w))
    variance = float(np.average((labels - mean) ** 2, weights=w))
    return {
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.average(np.abs(labels - predictions), weights=w)),
        "r2": 1.0 - mse / variance if variance > 0 else 0.0,
        "mean_rmse": float(np.sqrt(variance)),
    }


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float
    observed_rate: float


def _equal_mass_bins(scores: np.ndarray, w: np.ndarray, bins: int) -> list[np.ndarray]:
    """Row indices of up to ``bins`` equal-count bins of ``scores``, those with weight."""
    order = np.argsort(scores, kind="stable")
    chunks = np.array_split(order, min(bins, scores.size))
    return [c for c in chunks if c.size and w[c].sum() > 0]


def calibration_table(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    bins: int = 10,
    binary: bool = True,
) -> list[CalibrationBin]:
    """Equal-mass bins of the predicted score (rare-event scores crowd into the lowest of
    equal-width bins, which would hide all the information); means are weighted. With
    ``binary=False`` the "observed rate" is the mean target of a regression task."""
    labels, scores = _check(labels, scores, binary=binary)
    w = _weights(weights, labels.size)
    table = []
    for chunk in _equal_mass_bins(scores, w, bins):
        s, y, cw = scores[chunk], labels[chunk], w[chunk]
        table.append(
            CalibrationBin(
                float(s.min()),
                float(s.max()),
                int(chunk.size),
                float(np.average(s, weights=cw)),
                float(np.average(y, weights=cw)),
            )
        )
    return table


def expected_calibration_error(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None, *, bins: int = 10
) -> float:
    """Count-weighted mean |mean predicted - observed rate| over equal-mass bins."""
    table = calibration_table(labels, scores, weights, bins=bins)
    total = sum(b.count for b in table)
    return float(sum(b.count * abs(b.mean_predicted - b.observed_rate) for b in table) / total)


def ece_noise_floor(
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    bins: int = 10,
    draws: int = 100,
    seed: int = 0,
) -> float:
    """The ECE that perfectly calibrated ``scores`` would show on these rows by chance alone:
    labels drawn from the scores themselves, binned as `expected_calibration_error` bins them,
    averaged over ``draws``. On small splits it is not small (2,000 rows at a 12% rate: about
    0.017), so a measured ECE is read against it, not against 0."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or np.isnan(scores).any():
        raise ValueError("ece_noise_floor needs non-empty scores without NaN")
    w = _weights(weights, scores.size)
    rng = np.random.default_rng(seed)
    errors = np.zeros(draws)
    counted = 0
    for chunk in _equal_mass_bins(scores, w, bins):
        s, cw = scores[chunk], w[chunk]
        drawn = rng.random((draws, chunk.size)) < np.clip(s, 0.0, 1.0)
        observed = drawn @ cw / cw.sum()
        errors += chunk.size * np.abs(np.average(s, weights=cw) - observed)
        counted += chunk.size
    return float(errors.mean() / counted)


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


def _weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under each row of ``weights`` (replicates x rows): one sort for all replicates.

    In score order, a positive counts the negatives below its tie group plus half of those in
    it: half the cumulative negative weight before and at the group's end (no reduceat, which
    is slow along the second axis).
    """
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order].astype(weights.dtype)
    neg = np.take(weights, order, axis=1)
    pos = neg * y
    neg -= pos
    cumulative = np.cumsum(neg, axis=1)
    if np.all(np.diff(s) != 0):
        cumulative -= 0.5 * neg
        ranked = cumulative
    else:
        starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
        ends = np.r_[starts[1:], s.size] - 1
        group = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, s.size]))
        padded = np.concatenate([np.zeros((neg.shape[0], 1), neg.dtype), cumulative], axis=1)
        ranked = 0.5 * (padded[:, starts[group]] + padded[:, ends[group] + 1])
    total = pos.sum(axis=1, dtype=np.float64) * neg.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ij,ij->i", pos, ranked, dtype=np.float64) / total


def _weighted_rmses(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(weights @ (labels - predictions) ** 2 / weights.sum(axis=1))


#: Metric name -> (its value under each weight row, True when higher is better).
PAIRED_METRICS = {"auc": (_weighted_aucs, True), "rmse": (_weighted_rmses, False)}


@dataclass(frozen=True)
class PairedDifference:
    """``metric`` of two scorers on the same rows, and ``candidate - reference`` with its
    bootstrap interval (``low``, ``high``) at ``confidence``."""

    metric: str
    candidate: float
    reference: float
    low: float
    high: float
    confidence: float
    replicates: int

    @property
    def difference(self) -> float:
        return self.candidate - self.reference


def resample_counts(rows: int, replicates: int, seed: int, *, chunk: int = 32):
    """Bootstrap draws of ``rows`` rows with replacement, as counts per row, ``chunk`` replicates
    at a time (each chunk: chunk x rows)."""
    rng = np.random.default_rng(seed)
    for begin in range(0, replicates, chunk):
        size = min(chunk, replicates - begin)
        draws = rng.integers(0, rows, size=(size, rows))
        yield np.stack([np.bincount(d, minlength=rows) for d in draws]).astype(np.float32)


def paired_bootstrap(
    metric: str,
    labels: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    replicates: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Percentile interval of ``metric(candidate) - metric(reference)`` over bootstrap
    resamples of the rows, both scorers on the same resample each time: what they share (the
    rows' own difficulty) cancels, so the interval is far narrower than either metric's own."""
    if metric not in PAIRED_METRICS:
        raise EvaluationError(
            f"no paired bootstrap for metric {metric!r} ({sorted(PAIRED_METRICS)})"
        )
    if not 0.0 < confidence < 1.0 or replicates < 10:
        raise EvaluationError("a paired bootstrap needs confidence in (0, 1) and >= 10 replicates")
    function, _ = PAIRED_METRICS[metric]
    binary = metric == "auc"
    labels, candidate = _check(labels, candidate, binary=binary)
    _, reference = _check(labels, reference, binary=binary)
    w = _weights(weights, labels.size)
    if binary and (labels.min() == labels.max()):
        raise EvaluationError("AUC needs both positive and negative labels")
    point_c, point_r = (float(function(labels, s, w[None, :])[0]) for s in (candidate, reference))
    differences = []
    for counts in resample_counts(labels.size, replicates, seed):
        rows_w = counts * w.astype(np.float32)
        differences.append(
            function(labels, candidate, rows_w) - function(labels, reference, rows_w)
        )
    delta = np.concatenate(differences)
    # A resample without both outcomes has no AUC: it says nothing, so it is left out.
    delta = delta[np.isfinite(delta)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(delta, [tail, 1.0 - tail])
    return PairedDifference(
        metric, point_c, point_r, float(low), float(high), confidence, int(delta.size)
    )


def bootstrap_interval(
    metric: str,
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    replicates: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``metric`` (auc or rmse) of ``scores`` and its percentile bootstrap interval over
    resamples of the rows: (value, low, high)."""
    if metric not in PAIRED_METRICS:
        raise EvaluationError(f"no bootstrap for metric {metric!r} ({sorted(PAIRED_METRICS)})")
    function, _ = PAIRED_METRICS[metric]
    binary = metric == "auc"
    labels, scores = _check(labels, scores, binary=binary)
    w = _weights(weights, labels.size)
    if binary and labels.min() == labels.max():
        raise EvaluationError("AUC needs both positive and negative labels")
    point = float(function(labels, scores, w[None, :])[0])
    values = np.concatenate(
        [
            function(labels, scores, counts * w.astype(np.float32))
            for counts in resample_counts(labels.size, replicates, seed)
        ]
    )
    values = values[np.isfinite(values)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return point, float(low), float(high)
