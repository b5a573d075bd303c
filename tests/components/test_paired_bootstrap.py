"""The paired bootstrap the champion comparison judges with: exact metrics, honest intervals."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation import metrics as m
from rankflow.core.errors import EvaluationError

pytestmark = pytest.mark.fast


def _scores(rows: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(signal - 2)))).astype(float)
    return labels, signal, signal + noise * rng.normal(size=rows)


def test_weighted_aucs_match_the_exact_auc_with_and_without_ties():
    labels, good, _ = _scores(5_000, 0, 0.0)
    weights = np.random.default_rng(1).integers(0, 4, size=(3, labels.size)).astype(float)
    for scores in (good, np.round(good, 1)):  # distinct scores, then many ties
        got = m._weighted_aucs(labels, scores, weights)
        want = [m.auc(labels, scores, w) for w in weights]
        assert np.allclose(got, want, atol=1e-12)
        # Integer weights are repeated rows.
        repeated = weights[0].astype(int)
        assert got[0] == pytest.approx(
            m.auc(np.repeat(labels, repeated), np.repeat(scores, repeated)), abs=1e-12
        )


def test_a_worse_scorer_is_outside_the_interval_and_an_equal_one_inside():
    labels, good, worse = _scores(20_000, 2, 1.0)
    paired = m.paired_bootstrap("auc", labels, worse, good, replicates=300, seed=0)
    assert paired.candidate == pytest.approx(m.auc(labels, worse))
    assert paired.reference == pytest.approx(m.auc(labels, good))
    assert paired.low <= paired.difference <= paired.high < 0
    # The paired interval is much narrower than either AUC's own (~0.01 here).
    assert paired.high - paired.low < 0.02
    same = m.paired_bootstrap("auc", labels, good, good, replicates=300)
    assert (same.low, same.high, same.difference) == (0.0, 0.0, 0.0)
    # Two scorers of equal quality (independent noise): the interval covers zero.
    labels, signal, one = _scores(20_000, 3, 0.5)
    other = signal + 0.5 * np.random.default_rng(9).normal(size=signal.size)
    even = m.paired_bootstrap("auc", labels, one, other, replicates=300)
    assert even.low < 0 < even.high


def test_rmse_difference_and_bad_requests():
    rng = np.random.default_rng(4)
    target = rng.normal(size=10_000)
    close, far = target + 0.5 * rng.normal(size=target.size), target + rng.normal(size=target.size)
    paired = m.paired_bootstrap("rmse", target, far, close, replicates=200)
    assert paired.low > 0  # the far predictions' RMSE is larger, beyond doubt
    assert paired.candidate == pytest.approx(m.regression_metrics(target, far)["rmse"])
    with pytest.raises(EvaluationError, match="no paired bootstrap"):
        m.paired_bootstrap("ece", target, far, close)
    with pytest.raises(EvaluationError, match="both positive and negative"):
        m.paired_bootstrap("auc", np.ones(10), np.arange(10.0), np.arange(10.0))
    with pytest.raises(EvaluationError, match="differ in length"):
        m.paired_bootstrap("rmse", target, far[:5], close)
