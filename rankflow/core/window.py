"""The time window a split covers, recorded so a later run can tell whether windows overlap.

Every exported version records the window of the rows its model was fitted on (train + valid:
validation picks the epoch and fits the calibration). A champion comparison judges a candidate
only on test rows the champion never saw: those after its window.

Bounds are stored as JSON: a timestamp or date as ISO text, any other column as a number. A
window compares with a column of the same kind only; :class:`WindowError` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import InputError
from rankflow.core.io import parquet_parts

#: Kinds of window bound.
KINDS = ("time", "number")


class WindowError(InputError, ValueError):
    """A window that can't be compared with the rows given (another kind of column)."""


@dataclass(frozen=True)
class TimeWindow:
    """First and last value of ``column`` over some rows."""

    column: str
    kind: str  # one of KINDS
    first: str | float
    last: str | float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise WindowError(f"window kind must be one of {KINDS}, got {self.kind!r}")

    @classmethod
    def of(cls, directories: Iterable[str | Path], column: str) -> TimeWindow:
        """The window of ``column`` over every parquet part of ``directories``."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        lows, highs = [], []
        kind = "number"
        for directory in directories:
            for part in parquet_parts(directory):
                values = pq.read_table(part, columns=[column]).column(column)
                if len(values) == 0:
                    continue
                if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
                    kind = "time"
                bounds = pc.min_max(values)
                lows.append(bounds["min"].as_py())
                highs.append(bounds["max"].as_py())
        if not lows:
            raise WindowError(f"no rows to take the window of column '{column}' from")
        return cls(column, kind, _bound(min(lows), kind), _bound(max(highs), kind))

    def after(self, values: Any) -> np.ndarray:  # values: a pandas Series of ``column``
        """Mask of the values later than this window's last one."""
        import pandas as pd

        series = pd.Series(values)
        is_time = pd.api.types.is_datetime64_any_dtype(series) or (
            series.dtype == object and len(series) and hasattr(series.iloc[0], "isoformat")
        )
        if (self.kind == "time") != bool(is_time):
            raise WindowError(
                f"the window of '{self.column}' holds {self.kind} values, these rows "
                f"{series.dtype} ones: windows of different kinds can't be compared"
            )
        if self.kind == "time":
            stamps = pd.to_datetime(series)
            last = pd.Timestamp(self.last)
            if (stamps.dt.tz is None) != (last.tz is None):
                raise WindowError(
                    f"the window of '{self.column}' ends at {self.last}, these rows' timestamps "
                    "differ in having a time zone: they can't be compared"
                )
            return (stamps > last).to_numpy()
        return (pd.to_numeric(series) > float(self.last)).to_numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "first": self.first, "last": self.last}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TimeWindow:
        try:
            return cls(str(raw["column"]), str(raw["kind"]), raw["first"], raw["last"])
        except (KeyError, TypeError) as err:
            raise WindowError(f"malformed time window {dict(raw)!r}: {err}") from err


def _bound(value: Any, kind: str) -> str | float:
    if kind == "time":
        return value.isoformat()
    return float(value)
