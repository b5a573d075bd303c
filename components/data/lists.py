"""List columns of a raw log: read, checked and normalised once, in the data step.

A list arrives as an Arrow ``list<integer|string>`` column (parquet) or as one string of values
joined by the spec's ``list_separator`` (CSV, or a parquet string column). Every split the data
step writes holds each list column as ``list<int64>`` or ``list<string>`` with no null list and
no null value: a null or empty field is the empty list (a user with no history yet), which
NVTabular's Categorify can't fit on as a null. Lists are kept whole here; the feature step's
workflow keeps the newest ``lists_max_length`` values (a list is ordered oldest to newest), so
training and serving truncate in one place.

Errors name the column and the row (counted from 0 over the whole log, in file order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankflow.core.errors import DataValidationError
from rankflow.core.spec import DatasetSpec, ListColumn

#: A history ends with the row's own item on at least this share of a task's positive rows...
LEAK_POSITIVE_SHARE = 0.5
#: ...and this many times as often as on its negative rows: it was built including the row's event.
LEAK_RATIO = 5.0
#: Positive rows a task needs before the leak check judges it.
LEAK_MIN_POSITIVES = 50


def element_kind(spec: DatasetSpec, entry: ListColumn, schema: Any) -> str:
    """ "int" or "string": what a list's values are once normalised.

    A list ``of:`` a scalar column takes that column's kind (one vocabulary needs one type);
    otherwise an Arrow list keeps its value type and a delimited string gives strings.
    """
    import pyarrow.types as pat

    if entry.of is not None:
        return "int" if pat.is_integer(schema.field(entry.of).type) else "string"
    dtype = schema.field(entry.column).type
    if _is_list(dtype) and pat.is_integer(dtype.value_type):
        return "int"
    return "string"


def _is_list(dtype: Any) -> bool:
    import pyarrow.types as pat

    return pat.is_list(dtype) or pat.is_large_list(dtype)


def _is_string(dtype: Any) -> bool:
    import pyarrow.types as pat

    return pat.is_string(dtype) or pat.is_large_string(dtype)


def check_list_type(spec: DatasetSpec, entry: ListColumn, schema: Any, role: str) -> None:
    """Refuse a list column whose Arrow type can't hold what the spec declares."""
    import pyarrow.types as pat

    dtype = schema.field(entry.column).type
    if _is_string(dtype):
        return  # delimited values; their type is checked value by value
    if not _is_list(dtype):
        raise DataValidationError(
            f"column '{entry.column}' ({role}) has type {dtype}, expected a list of integers or "
            f"strings (or one string of values joined by {spec.list_separator!r}): a scalar "
            "column is declared under categorical, not lists"
        )
    value = dtype.value_type
    if not (pat.is_integer(value) or _is_string(value)):
        raise DataValidationError(
            f"column '{entry.column}' ({role}) is a list of {value}, expected a list of "
            "integers or strings"
        )
    if entry.of is not None:
        want = element_kind(spec, entry, schema)
        have = "int" if pat.is_integer(value) else "string"
        if want != have:
            raise DataValidationError(
                f"column '{entry.column}' ({role}) holds {have} values but '{entry.of}', whose "
                f"vocabulary it shares, holds {want}s: store both with one type"
            )


def normalize(
    values: Any, spec: DatasetSpec, entry: ListColumn, kind: str, *, first_row: int
) -> Any:  # pyarrow.ListArray
    """One batch of a list column as ``list<int64|string>`` without nulls (see the module)."""
    import pyarrow as pa

    column = entry.column
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if _is_string(values.type):
        values = _split(values, spec.list_separator, column, first_row)
    # A null list is an empty one (no history yet, no keywords); offsets then start at 0.
    values = _nulls_to_empty(values)
    flat = values.flatten()
    if flat.null_count:
        index = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataValidationError(
            f"column '{column}' row {first_row + _row_of(values, index)} holds a null value "
            "inside its list; drop it from the list (an empty list is allowed)"
        )
    offsets = np.asarray(values.offsets.to_numpy(), dtype=np.int64)
    flat = _as_int(flat, column, values, first_row) if kind == "int" else flat.cast(pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)


def _nulls_to_empty(values: Any) -> Any:
    import pyarrow as pa

    lengths = np.asarray(
        values.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    # ``flatten`` skips the values under a null list; the offsets are rebuilt to match.
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values.flatten())


def _split(values: Any, separator: str, column: str, first_row: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.cast(pa.string())
    # An empty field is an empty list; splitting "" would give one empty value.
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    lists = pc.split_pattern(values, separator)
    flat = lists.flatten()
    empty = pc.equal(flat, "").to_numpy(zero_copy_only=False)
    if empty.any():
        row = _row_of(lists, int(np.flatnonzero(empty)[0]))
        raise DataValidationError(
            f"column '{column}' row {first_row + row}: {values[row].as_py()!r} has an empty "
            f"value between separators {separator!r}; a value may not contain the separator "
            "(choose another list_separator) and a list may not start or end with one"
        )
    return lists


def _row_of(lists: Any, value_index: int) -> int:
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    return int(np.searchsorted(offsets, value_index, side="right") - 1)


def _as_int(flat: Any, column: str, lists: Any, first_row: int) -> Any:
    import pyarrow as pa
    import pyarrow.types as pat

    if pat.is_integer(flat.type):
        return flat.cast(pa.int64())
    text = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=object)
    try:
        return pa.array(text.astype(np.int64), pa.int64())
    except (ValueError, OverflowError):
        pass
    for index, value in enumerate(text):
        try:
            int(value)
        except (ValueError, OverflowError):
            row = _row_of(lists, index)
            raise DataValidationError(
                f"column '{column}' row {first_row + row} holds {value!r}, not an integer: its "
                "values share an integer column's vocabulary (of:), so each must be an integer"
            ) from None
    raise DataValidationError(f"column '{column}' holds integers beyond int64")


def normalized_lists(
    spec: DatasetSpec, table: Any, *, first_row: int, kinds: Mapping[str, str]
) -> Any:  # pyarrow.Table -> pyarrow.Table
    """``table`` with every list column (and ``times`` column) normalised."""
    for entry in spec.list_columns:
        index = table.schema.get_field_index(entry.column)
        lists = normalize(
            table.column(entry.column), spec, entry, kinds[entry.column], first_row=first_row
        )
        table = table.set_column(index, entry.column, lists)
        if entry.times is not None:
            index = table.schema.get_field_index(entry.times)
            times = _times(table, spec, entry, first_row)
            table = table.set_column(index, entry.times, times)
    return table


def _times(table: Any, spec: DatasetSpec, entry: ListColumn, first_row: int) -> Any:
    """The ``times`` list of ``entry`` as int64 ticks of the row timestamp's unit, checked: as
    long as its list, every time before its row's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from components.data.split import _as_int64

    times_column = str(entry.times)
    stamp_type = table.schema.field(spec.timestamp).type
    raw = table.column(times_column).combine_chunks()
    if _is_string(raw.type):
        raw = _split(raw, spec.list_separator, times_column, first_row)
        value_type = pa.int64() if pa.types.is_integer(stamp_type) else stamp_type
        try:
            raw = pa.ListArray.from_arrays(raw.offsets, raw.values.cast(value_type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataValidationError(
                f"column '{entry.times}' (times of '{entry.column}') holds a value that is not "
                f"a {stamp_type} time: {err}"
            ) from err
    if not _is_list(raw.type):
        raise DataValidationError(
            f"column '{entry.times}' (times of '{entry.column}') has type {raw.type}, expected "
            "a list of event times"
        )
    times = _nulls_to_empty(raw)
    lists = table.column(entry.column).combine_chunks()
    lengths = np.diff(np.asarray(lists.offsets.to_numpy(), dtype=np.int64))
    have = np.diff(np.asarray(times.offsets.to_numpy(), dtype=np.int64))
    if (lengths != have).any():
        row = int(np.flatnonzero(lengths != have)[0])
        raise DataValidationError(
            f"column '{entry.times}' row {first_row + row} has {have[row]} time(s) for the "
            f"{lengths[row]} value(s) of '{entry.column}': one time per value"
        )
    flat = times.flatten()
    try:
        ticks = _as_int64(flat.cast(stamp_type) if flat.type != stamp_type else flat)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataValidationError(
            f"column '{entry.times}' (times of '{entry.column}') can't be read as the row "
            f"timestamp's type {stamp_type}: {err}"
        ) from err
    if pc.sum(flat.is_null()).as_py():
        raise DataValidationError(f"column '{entry.times}' holds a null time")
    own = _as_int64(table.column(spec.timestamp).combine_chunks())
    rows = np.repeat(np.arange(len(lengths)), lengths)
    late = ticks >= own[rows]
    if late.any():
        row = int(rows[np.flatnonzero(late)[0]])
        raise DataValidationError(
            f"column '{entry.column}' row {first_row + row} holds a value from "
            f"{flat[int(np.flatnonzero(late)[0])].as_py()}, not before its row's "
            f"'{spec.timestamp}' {table.column(spec.timestamp)[row].as_py()}: a history may "
            "hold only earlier events (one including the row's own event leaks its label)"
        )
    return pa.ListArray.from_arrays(times.offsets, pa.array(ticks, pa.int64()))


@dataclass
class LeakCheck:
    """Counts, over the whole log, how often a history ``of:`` the item id (without ``times``)
    ends with the row's own item on each task's positive and negative rows."""

    spec: DatasetSpec
    #: (list, task) -> [positives, positives ending with the own item, negatives, ...]
    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def histories(self) -> list[ListColumn]:
        # Only item-id histories without checked times: a history of categories ending with the
        # row's own category is a real signal (users come back to what they like), not a leak.
        if self.spec.item_id is None:
            return []
        return [e for e in self.spec.list_columns if e.of == self.spec.item_id and e.times is None]

    def add(self, table: Any) -> None:
        tasks = [t for t in self.spec.tasks if t.kind == "binary" and t.given is None]
        for entry in self.histories():
            lists = table.column(entry.column).combine_chunks()
            offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
            flat = np.asarray(lists.values.to_numpy(zero_copy_only=False))
            own = np.asarray(table.column(str(entry.of)).to_numpy())
            has = offsets[1:] > offsets[:-1]
            newest = np.zeros(len(own), dtype=bool)
            last = offsets[1:][has] - 1
            newest[has] = flat[last] == own[has]
            for task in tasks:
                y = np.asarray(table.column(task.column).to_numpy()) == 1
                c = self.counts.setdefault((entry.column, task.name), [0, 0, 0, 0])
                c[0] += int(y.sum())
                c[1] += int((newest & y).sum())
                c[2] += int((~y).sum())
                c[3] += int((newest & ~y).sum())

    def check(self) -> None:
        for (column, task), (pos, pos_hit, neg, neg_hit) in self.counts.items():
            if pos < LEAK_MIN_POSITIVES or not neg:
                continue
            share_pos, share_neg = pos_hit / pos, neg_hit / neg
            if share_pos >= LEAK_POSITIVE_SHARE and share_pos >= LEAK_RATIO * share_neg:
                of = self.spec.list_of(column).of
                raise DataValidationError(
                    f"history '{column}' ends with the row's own '{of}' on {share_pos:.0%} of "
                    f"'{task}' positive rows against {share_neg:.0%} of the others: it was built "
                    "including each row's own event, which leaks the label; build it from "
                    "events before the row (declare times: to have every value checked)"
                )


def list_row_hashes(values: Any) -> np.ndarray:
    """A 64-bit hash per row of a normalised list column (order and length included)."""
    import pandas as pd

    offsets = np.asarray(values.offsets.to_numpy(), dtype=np.int64)
    flat = values.values.to_numpy(zero_copy_only=False)
    hashed = pd.util.hash_array(np.asarray(flat, dtype=object if flat.dtype.kind == "O" else None))
    lengths = np.diff(offsets)
    position = np.arange(len(flat), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    mixed = hashed * np.uint64(0x9E3779B97F4A7C15) ^ pd.util.hash_array(position).astype(np.uint64)
    sums = np.zeros(len(lengths), dtype=np.uint64)
    np.add.at(sums, np.repeat(np.arange(len(lengths)), lengths), mixed)
    return sums ^ pd.util.hash_array(lengths)
