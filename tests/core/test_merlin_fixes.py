"""The run-time fix of Merlin's list flattening returns what the original returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

CASES = {
    "int32 arrays, one empty": [np.array([1, 2], np.int32), np.array([], np.int32), np.array([3])],
    "int64 arrays": [np.array([5, 6]), np.array([7])],
    "object strings": [np.array(["a", "b"], dtype=object), np.array(["c"], dtype=object)],
    "unicode arrays": [np.array(["a", "bb"]), np.array(["c"])],
    "python lists": [[1, 2], [3]],
    "mixed dtypes": [np.array([1], np.int32), np.array([2.5])],
    "floats": [np.array([1.5, 2.5], np.float32)],
}


@pytest.fixture(scope="module")
def original():
    from merlin.core import dispatch

    from rankflow.core import merlin_fixes

    before = dispatch.flatten_list_column_values
    merlin_fixes.apply()
    assert dispatch.flatten_list_column_values is not before or merlin_fixes._applied
    import itertools

    return lambda s: pd.Series(itertools.chain(*s))  # the pinned 23.8 implementation


@pytest.mark.parametrize("case", sorted(CASES))
def test_flattening_equals_the_original(case, original):
    from merlin.core import dispatch

    series = pd.Series(CASES[case], name="x")
    got = dispatch.flatten_list_column_values(series)
    want = original(series)
    assert got.dtype == want.dtype
    assert got.index.equals(want.index)
    assert got.tolist() == want.tolist()
    # flatten_list_column (Categorify's caller) names the frame's column after the series
    assert dispatch.flatten_list_column(series)["x"].tolist() == want.tolist()


def test_empty_column_goes_to_the_original(original):
    from merlin.core import dispatch

    series = pd.Series([], dtype=object)
    assert dispatch.flatten_list_column_values(series).dtype == original(series).dtype
