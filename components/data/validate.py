"""Validate a raw interaction log against its dataset spec before anything else runs.

The log is scanned in record batches so validation stays in bounded memory at any size. Every error
names the offending column (and a sample value where there is one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import DataValidationError
from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("parquet", "csv")
#: Event times before this are clock or default-value bugs (1970-01-01 sentinels, zeroed fields).
EARLIEST_EVENT = "1990-01-01"
#: How far past "now" an event time may lie (clock skew) before it is a bug (9999-12-31 sentinels).
FUTURE_SLACK_S = 86_400
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ValidationReport:
    rows: int
    positives: dict[str, int]
    timestamp_min: str
    timestamp_max: str


def detect_format(source: str | Path) -> str:
    """``parquet`` or ``csv``, from the file name (a directory is read as parquet)."""
    path = Path(source)
    if path.is_dir():
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        return "csv"
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    raise DataValidationError(
        f"cannot tell the format of {source}: name a .parquet/.csv file or a parquet directory"
    )


def open_dataset(source: str | Path, columns: tuple[str, ...]):  # -> pyarrow.dataset.Dataset
    """Open a parquet/CSV log lazily; fails clearly when missing, empty or unreadable."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from rankflow.core.io import harden_pyarrow

    harden_pyarrow()  # the log comes from outside the pipeline
    path = Path(source)
    if not path.exists():
        raise DataValidationError(f"raw data not found: {source}")
    fmt = detect_format(path)
    try:
        if fmt == "csv":
            # Read every spec column as its natural type, but keep ids/categoricals as inferred;
            # the type check below decides whether they're acceptable.
            dataset = ds.dataset(str(path), format="csv")
        else:
            dataset = ds.dataset(str(path), format="parquet")
        schema = dataset.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(f"cannot read {fmt} data at {source}: {err}") from err
    except RuntimeError as err:
        if "Disallowed deserialization" not in str(err):
            raise
        raise DataValidationError(
            f"refusing {source}: it holds a pickled Arrow extension type, which would run code "
            "when read (CVE-2023-47248)"
        ) from err
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataValidationError(
            f"column(s) {missing} named in the dataset spec are missing from {source} "
            f"(it has {schema.names})"
        )
    return dataset


def _role_of(spec: DatasetSpec) -> dict[str, str]:
    roles: dict[str, str] = {spec.user_id: "user id", spec.item_id: "item id"}
    roles.update({c: "user categorical" for c in spec.user_categorical})
    roles.update({c: "item categorical" for c in spec.item_categorical})
    roles.update({c: "context categorical" for c in spec.context_categorical})
    roles.update({c: "continuous" for c in spec.continuous})
    roles.update({c: f"{stage} target" for stage, c in spec.targets.items()})
    roles.update({c: "true probability" for c in spec.true_probabilities.values()})
    roles[spec.timestamp] = "timestamp"
    return roles


def check_types(spec: DatasetSpec, schema) -> None:  # schema: pyarrow.Schema
    import pyarrow.types as pat

    def is_string(t) -> bool:
        return pat.is_string(t) or pat.is_large_string(t)

    categorical = (lambda t: pat.is_integer(t) or is_string(t), "an integer or string")
    number = (lambda t: pat.is_integer(t) or pat.is_floating(t), "a number")
    binary = (
        lambda t: pat.is_integer(t) or pat.is_boolean(t) or pat.is_floating(t),
        "0/1 integers or booleans",
    )
    moment = (
        lambda t: pat.is_timestamp(t) or pat.is_integer(t) or pat.is_date(t),
        "a timestamp or integer epoch",
    )
    expected = dict.fromkeys(spec.categorical_columns, categorical)
    expected.update(dict.fromkeys(spec.continuous, number))
    expected.update(dict.fromkeys(spec.true_probabilities.values(), number))
    expected.update(dict.fromkeys(spec.target_columns, binary))
    expected[spec.timestamp] = moment
    roles = _role_of(spec)
    for column in spec.raw_columns:
        dtype = schema.field(column).type
        accepts, description = expected[column]
        if not accepts(dtype):
            raise DataValidationError(
                f"column '{column}' ({roles[column]}) has type {dtype}, expected {description}"
            )


def _event_window() -> tuple[np.datetime64, np.datetime64]:
    now = np.datetime64("now", "s")
    return np.datetime64(EARLIEST_EVENT, "s"), now + np.timedelta64(FUTURE_SLACK_S, "s")


def _check_event_times(column: str, values, window: tuple[np.datetime64, np.datetime64]) -> None:
    """Refuse event times outside ``window`` (timestamp/date columns) or negative epochs.

    The split is by time quantile: one 9999-12-31 sentinel row lands in test, a block of
    1970-01-01 rows in train, and neither is an event that happened. Integer columns may be
    any monotone clock (seconds, days, a sequence number), so only negative values are refused.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(values.type):
        if len(values) and pc.min(values).as_py() < 0:
            raise DataValidationError(
                f"timestamp column '{column}' has negative values (-1 sentinels?)"
            )
        return
    if pa.types.is_date(values.type):
        ticks, per_second = values.cast(pa.date32()).cast(pa.int32()), 1 / 86_400
    else:
        ticks, per_second = values.cast(pa.int64()), _PER_SECOND[values.type.unit]
    ticks = np.asarray(ticks.to_numpy(zero_copy_only=False), dtype=np.int64)
    bounds = [int(b.astype(np.int64) * per_second) for b in window]
    early, late = ticks < bounds[0], ticks > bounds[1]
    for mask, where in ((early, f"before {window[0]}"), (late, f"after {window[1]} (now + 1 day)")):
        if mask.any():
            raise DataValidationError(
                f"timestamp column '{column}' has {int(mask.sum())} event time(s) {where}, "
                f"e.g. {values[int(np.argmax(mask))]}: default-value or clock bugs; drop or fix "
                "those rows"
            )


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def validate_log(spec: DatasetSpec, source: str | Path) -> ValidationReport:
    """Check columns, types, nulls, binary targets and the click -> conversion funnel."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = open_dataset(source, spec.raw_columns)
    try:
        empty = dataset.count_rows() == 0
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(f"cannot read rows of {source}: {err}") from err
    if empty:
        raise DataValidationError(f"raw data at {source} has no rows")
    check_types(spec, dataset.schema)
    not_null = spec.id_columns + spec.target_columns + (spec.timestamp,)
    rows = 0
    positives = dict.fromkeys(spec.target_columns, 0)
    ts_min: Any = None
    ts_max: Any = None
    window = _event_window()
    click_col = spec.targets["click"]
    conversion_col = spec.targets.get("conversion")
    try:
        batches = dataset.to_batches(columns=list(spec.raw_columns))
        for batch in batches:
            rows += batch.num_rows
            for column in not_null:
                nulls = batch.column(column).null_count
                if nulls:
                    raise DataValidationError(
                        f"column '{column}' has {nulls} null value(s); ids, targets and the "
                        "timestamp must be complete"
                    )
            for column in spec.id_columns:
                values = batch.column(column)
                if not pa.types.is_integer(values.type) or not len(values):
                    continue
                if pc.min(values).as_py() < 0:
                    raise DataValidationError(f"column '{column}' has negative ids")
                if pc.max(values).as_py() > INT64_MAX:
                    raise DataValidationError(
                        f"column '{column}' has ids above {INT64_MAX} (int64): they would wrap "
                        "to negative ids; hash them to a smaller range or store them as strings"
                    )
            for column in spec.target_columns:
                values = np.asarray(
                    batch.column(column).to_numpy(zero_copy_only=False), dtype=float
                )
                invalid = ~np.isin(values, (0.0, 1.0))
                if invalid.any():
                    raise DataValidationError(
                        f"target column '{column}' must be 0/1, found {values[invalid][0]!r}"
                    )
                positives[column] += int(values.sum())
            if conversion_col is not None:
                click = np.asarray(batch.column(click_col).to_numpy(zero_copy_only=False), float)
                conv = np.asarray(
                    batch.column(conversion_col).to_numpy(zero_copy_only=False), float
                )
                orphan = int(((conv == 1) & (click == 0)).sum())
                if orphan:
                    raise DataValidationError(
                        f"column '{conversion_col}' has {orphan} conversion(s) without a click in "
                        f"'{click_col}'"
                    )
            for column in spec.true_probabilities.values():
                values = np.asarray(batch.column(column).to_numpy(zero_copy_only=False), float)
                if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
                    raise DataValidationError(
                        f"true-probability column '{column}' must lie in [0, 1] without nulls"
                    )
            ts = batch.column(spec.timestamp)
            _check_event_times(spec.timestamp, ts, window)
            lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
            ts_min = lo if ts_min is None else min(ts_min, lo)
            ts_max = hi if ts_max is None else max(ts_max, hi)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(f"cannot read rows of {source}: {err}") from err
    logger.info("validated %d rows of %s", rows, source)
    return ValidationReport(rows, positives, str(ts_min), str(ts_max))
