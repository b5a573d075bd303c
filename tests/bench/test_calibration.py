"""``python -m bench.calibration``'s calibrators (the runs it reads are the benchmark)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.calibration import Scores, _artifacts, compare, fit_isotonic
from components.training.ranker import fit_platt

pytestmark = pytest.mark.fast


def _overconfident(seed: int, n: int = 20_000) -> Scores:
    """Labels drawn from sigmoid(0.5 z - 1): a model whose logit z is twice too sharp, 1 off."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.5 * z - 1.0)))).astype(float)
    return Scores(z, y, np.ones(n))


def test_platt_and_temperature_recover_the_scale_they_can_represent():
    s = _overconfident(0)
    a, b = fit_platt(s.z, s.y, s.w)
    assert a == pytest.approx(0.5, abs=0.05)
    assert b == pytest.approx(-1.0, abs=0.08)
    t, shift = fit_platt(s.z, s.y, s.w, shift=False)
    assert shift == 0.0 and 0.3 < t < 0.7


def test_isotonic_is_monotone_and_keeps_the_weighted_rate():
    rng = np.random.default_rng(1)
    z = rng.normal(size=5_000)
    y = (rng.random(5_000) < 1 / (1 + np.exp(-z))).astype(float)
    w = rng.uniform(0.5, 2.0, 5_000)
    curve = fit_isotonic(z, y, w)
    grid = np.linspace(-4, 4, 400)
    assert np.all(np.diff(curve(grid)) >= 0)
    # PAV levels average the labels they pool: the fitted values keep the weighted rate.
    assert np.average(curve(z), weights=w) == pytest.approx(np.average(y, weights=w), abs=0.01)


def test_compare_judges_every_calibrator_on_the_test_rows():
    valid, test = _overconfident(2), _overconfident(3)
    served = 1.0 / (1.0 + np.exp(-test.z))
    result = compare(valid, test, served=served)
    assert list(result) == ["served", "none", "temperature", "platt", "beta", "isotonic"]
    assert result["served"] == result["none"]  # the same probabilities, judged the same way
    assert result["platt"]["ece"] < 0.2 * result["none"]["ece"]
    assert result["platt"]["logloss"] < result["none"]["logloss"]
    assert result["platt"]["calibration_ratio"] == pytest.approx(1.0, abs=0.05)
    # Logit-linear overconfidence is within beta's family too.
    assert result["beta"]["ece"] < 0.2 * result["none"]["ece"]


def test_a_directory_without_a_trained_ranker_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"no trained ranker under .*: pass a run dir"):
        _artifacts(tmp_path)
