"""Drift profiles, bucketing and PSI on known distributions (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from rankflow.core.drift import (
    METRIC,
    OTHER,
    UNSEEN,
    DriftReference,
    compare,
    parse_counts,
    psi,
)
from rankflow.core.errors import InputError

pytestmark = pytest.mark.fast


def _columns(rng, n, *, shift=0.0, new_ads=0.0):
    ads = rng.zipf(1.6, n) % 500
    ads = np.where(rng.random(n) < new_ads, 10_000 + rng.integers(0, 1000, n), ads)
    return {
        "ad": ads,
        "country": rng.choice(["de", "fr", "us"], n, p=[0.5, 0.3, 0.2]),
        "price": rng.lognormal(shift, 1.0, n),
    }


def _reference(rng):
    return DriftReference.build(
        _columns(rng, 50_000), categorical=["ad", "country"], continuous=["price"]
    )


def _served(reference, columns):
    return {name: reference.bucket_counts(name, columns[name]) for name in columns}


def test_profiles_hold_the_training_shares():
    reference = _reference(np.random.default_rng(0))
    country = reference.profile("country")
    assert country.buckets == ("de", "fr", "us", OTHER, UNSEEN)
    assert country.shares[0] == pytest.approx(0.5, abs=0.01)
    price = reference.profile("price")
    assert len(price.edges) == 9 and all(
        s == pytest.approx(0.1, abs=1e-3) for s in price.shares[:10]
    )
    assert reference.profile("ad").buckets[-2:] == (OTHER, UNSEEN)


def test_same_distribution_is_stable_and_a_shift_is_flagged_on_its_inputs_only():
    rng = np.random.default_rng(1)
    reference = _reference(rng)
    same = compare(reference, _served(reference, _columns(rng, 5_000)), model="m", version="1")
    assert same.drifted == () and max(i.psi for i in same.inputs) < 0.02
    shifted = compare(
        reference,
        _served(reference, _columns(rng, 5_000, shift=1.0, new_ads=0.4)),
        model="m",
        version="1",
    )
    assert set(shifted.drifted) == {"ad", "price"}
    ad = next(i for i in shifted.inputs if i.name == "ad")
    assert ad.unseen_share == pytest.approx(0.4, abs=0.03)


def test_missing_and_unseen_values_have_their_own_buckets(tmp_path):
    reference = _reference(np.random.default_rng(2))
    reference.save(tmp_path)
    loaded = DriftReference.load(tmp_path)
    assert loaded.bucket_counts("price", np.array([np.nan, 1.1])) == {"missing": 1, "b5": 1}
    assert loaded.bucket_counts("country", np.array(["de", "xx", "de"])) == {"de": 2, UNSEEN: 1}
    rare = next(a for a in range(1, 500) if str(a) not in loaded.profile("ad").buckets)
    assert loaded.bucket_counts("ad", np.array([rare, 99_999])) == {OTHER: 1, UNSEEN: 1}
    with pytest.raises(InputError, match=r"has no drift\.json"):
        DriftReference.load(tmp_path / "absent")


def test_psi_known_values_and_too_little_traffic():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5))
    reference = _reference(np.random.default_rng(3))
    few = _served(reference, _columns(np.random.default_rng(4), 100))
    with pytest.raises(InputError, match="has served 100 rows of input 'ad'"):
        compare(reference, few, model="m", version="1")


def test_prometheus_text_is_read_per_model_version():
    text = "\n".join(
        [
            f"# TYPE {METRIC} counter",
            f'{METRIC}{{model="rankflow",version="2",input="country",bucket="de"}} 7',
            f'{METRIC}{{model="rankflow",version="1",input="country",bucket="de"}} 3',
            f'{METRIC}{{bucket="a \\"q\\"",input="ad",model="rankflow",version="2"}} 1',
            f'{METRIC}{{model="rankflow",version="2",input="geo",bucket="café}}"}} 4',
            'nv_inference_count{model="rankflow",version="2"} 10',
        ]
    )
    assert parse_counts(text, model="rankflow", version="2") == {
        "country": {"de": 7.0},
        "ad": {'a "q"': 1.0},
        "geo": {"café}": 4.0},
    }


def test_training_and_served_values_name_the_same_buckets():
    """pyarrow reads an integer column with nulls as float64; serving casts it to int64."""
    training = np.array([7.0, 7.0, 3.0, np.nan] * 100)
    served = np.array([7, 3, 3, 7], dtype=np.int64)
    reference = DriftReference.build(
        {"geo": training}, categorical=["geo"], continuous=[], holdout={"geo": training}
    )
    assert reference.profile("geo").buckets == ("7", "3", "<null>", OTHER, UNSEEN)
    assert reference.profile("geo").shares[-1] == 0.0  # the holdout's values were all seen
    assert reference.bucket_counts("geo", served) == {"7": 2, "3": 2}
    strings = DriftReference.build(
        {"c": np.array(["a", None, "a"], dtype=object)}, categorical=["c"], continuous=[]
    )
    assert strings.bucket_counts("c", np.array(["a", "b"], dtype=object)) == {"a": 1, UNSEEN: 1}
    # None beside strings has no order: still bucketed, value by value.
    mixed = np.array(["a", None, "b", "a", None], dtype=object)
    assert strings.bucket_counts("c", mixed) == {"a": 2, "<null>": 2, UNSEEN: 1}
    # Repeated values are bucketed once and counted per row, in any order.
    assert reference.bucket_counts("geo", np.array([3, 7, 3, 3, 99])) == {
        "7": 1,
        "3": 3,
        UNSEEN: 1,
    }


def test_a_continuous_input_with_no_value_in_training_is_profiled():
    reference = DriftReference.build(
        {"bid": np.full(10, np.nan)}, categorical=[], continuous=["bid"]
    )
    assert reference.profile("bid").buckets == ("b0", "missing")
    assert reference.profile("bid").shares == (0.0, 1.0)
    assert reference.bucket_counts("bid", np.array([np.nan, 2.0])) == {"b0": 1, "missing": 1}
