"""Time windows: what an exported version was fitted on, compared with later rows."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankflow.core.window import TimeWindow, WindowError

pytestmark = pytest.mark.fast


def _parts(tmp_path, name, values):
    directory = tmp_path / name
    directory.mkdir()
    pq.write_table(pa.table({"ts": values}), directory / "part-0.parquet")
    return directory


def test_window_of_timestamps_and_rows_after_it(tmp_path):
    stamps = [dt.datetime(2026, 1, d) for d in (3, 1, 9)]
    window = TimeWindow.of(
        [_parts(tmp_path, "a", stamps), _parts(tmp_path, "b", [dt.datetime(2026, 1, 12)])], "ts"
    )
    assert window == TimeWindow("ts", "time", "2026-01-01T00:00:00", "2026-01-12T00:00:00")
    assert TimeWindow.from_dict(window.to_dict()) == window
    later = pd.Series(pd.to_datetime(["2026-01-11", "2026-01-12", "2026-01-13"]))
    assert window.after(later).tolist() == [False, False, True]
    with pytest.raises(WindowError, match="different kinds"):
        window.after(pd.Series([1, 2, 3]))
    with pytest.raises(WindowError, match="time zone"):
        window.after(later.dt.tz_localize("UTC"))


def test_window_of_numbers_and_malformed_windows(tmp_path):
    window = TimeWindow.of([_parts(tmp_path, "a", [30, 10, 20])], "ts")
    assert (window.kind, window.first, window.last) == ("number", 10.0, 30.0)
    assert window.after(pd.Series([29, 30, 31])).tolist() == [False, False, True]
    with pytest.raises(WindowError, match="malformed"):
        TimeWindow.from_dict({"column": "ts"})
    with pytest.raises(WindowError, match="kind"):
        TimeWindow("ts", "days", 1, 2)
