"""Validate a raw interaction log against its dataset spec before anything else runs.

The log is scanned in record batches so validation stays in bounded memory at any size. Every error
names the offending column (and a sample value where there is one).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.data.lists import LeakCheck, check_list_type, element_kind, normalized_lists
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
    #: Task -> positives (binary) or rows with a value (regression).
    positives: dict[str, int]
    timestamp_min: str
    timestamp_max: str
    #: Task -> rows positive where its ``given`` task is 0 (kept with ``count``, dropped with
    #: ``drop``; ``error`` refuses the log).
    violations: dict[str, int] = field(default_factory=dict)


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


def open_dataset(
    source: str | Path, columns: tuple[str, ...], *, strings: tuple[str, ...] = ()
):  # -> pyarrow.dataset.Dataset
    """Open a parquet/CSV log lazily; fails clearly when missing, empty or unreadable.

    ``strings`` are read from a CSV log as text whatever they look like: a list field "17" is
    the one-value list, not an integer column.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
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
            dataset = ds.dataset(
                str(path),
                format=ds.CsvFileFormat(
                    convert_options=pcsv.ConvertOptions(
                        column_types=dict.fromkeys(strings, pa.string())
                    )
                ),
            )
        else:
            dataset = ds.dataset(str(path), format="parquet")
        schema = dataset.schema
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(
            f"cannot read {fmt} data at {source}: {read_error(err, path)}"
        ) from err
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


_CSV_PLACE = re.compile(r"(?:In CSV column #(\d+): )?(?:CSV parse error: )?Row #(\d+): (.*)", re.S)


def read_error(err: Exception, path: Path) -> str:
    """Arrow's reading error in one line; for a CSV, its place as column name and data row
    (counted from 0 after the header, as every other message counts rows)."""
    text = str(err)
    if not (path.is_file() and detect_format(path) == "csv"):
        return text.splitlines()[0] if text else repr(err)
    match = _CSV_PLACE.search(text)
    if match is None:
        return text.splitlines()[0]
    column, line, problem = match.groups()
    where = f"row {int(line) - 2} (line {line})"
    if column is not None:
        import csv

        with path.open(newline="", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        index = int(column)
        name = header[index] if index < len(header) else f"#{index}"
        where = f"column '{name}' {where}"
    problem = problem.splitlines()[0]
    hint = ""
    if "Expected" in problem and "columns" in problem:
        hint = (
            "; a field holding the delimiter must be quoted (a list joined by ',' is one "
            "quoted field, or choose another list_separator)"
        )
    if "UTF8" in problem:
        hint = "; re-encode the log as UTF-8"
    return f"{where}: {problem}{hint}"


def _role_of(spec: DatasetSpec) -> dict[str, str]:
    roles: dict[str, str] = {}
    if spec.user_id is not None:
        roles[spec.user_id] = "user id"
    if spec.item_id is not None:
        roles[spec.item_id] = "item id"
    roles.update({c: "user categorical" for c in spec.user_categorical})
    roles.update({c: "item categorical" for c in spec.item_categorical})
    roles.update({c: "context categorical" for c in spec.context_categorical})
    roles.update({c: "continuous" for c in spec.continuous})
    for section, lists in (
        ("user", spec.user_lists),
        ("item", spec.item_lists),
        ("context", spec.context_lists),
    ):
        for entry in lists:
            roles[entry.column] = f"{section} list" + (f" of {entry.of}" if entry.of else "")
            if entry.times is not None:
                roles[entry.times] = f"times of {entry.column}"
    roles.update({c: "item text" for c in spec.item_text})
    roles.update({c: "context text" for c in spec.context_text})
    roles.update({c: "slice" for c in spec.slices if c not in roles})
    roles.update({t.column: f"{t.name} {t.kind} target" for t in spec.tasks})
    roles.update({t.truth: f"{t.name} truth" for t in spec.tasks if t.truth is not None})
    if spec.weight_column is not None:
        roles[spec.weight_column] = "row weight"
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
    value = (lambda t: pat.is_integer(t) or pat.is_floating(t), "numbers (a regression target)")
    moment = (
        lambda t: pat.is_timestamp(t) or pat.is_integer(t) or pat.is_date(t),
        "a timestamp or integer epoch",
    )
    label = (
        lambda t: pat.is_integer(t) or is_string(t) or pat.is_boolean(t),
        "integers, strings or booleans (a slice)",
    )
    expected = dict.fromkeys(spec.slices, label)
    expected.update(dict.fromkeys(spec.categorical_columns, categorical))
    expected.update(dict.fromkeys(spec.continuous, number))
    expected.update(dict.fromkeys(spec.truth_columns, number))
    for task in spec.tasks:
        expected[task.column] = binary if task.kind == "binary" else value
    if spec.weight_column is not None:
        expected[spec.weight_column] = number
    expected[spec.timestamp] = moment
    text = (is_string, "a string (text)")
    expected.update(dict.fromkeys(spec.text_columns, text))
    roles = _role_of(spec)
    for entry in spec.list_columns:
        check_list_type(spec, entry, schema, roles[entry.column])
    skip = {*spec.list_names, *(e.times for e in spec.list_columns if e.times)}
    for column in spec.raw_columns:
        if column in skip:
            continue  # checked above, and value by value when read
        dtype = schema.field(column).type
        accepts, description = expected[column]
        if not accepts(dtype):
            raise DataValidationError(
                f"column '{column}' ({roles[column]}) has type {dtype}, expected {description}"
            )


def string_columns(spec: DatasetSpec) -> tuple[str, ...]:
    """Columns a CSV log holds as text whatever they look like: lists, their times, text."""
    times = tuple(e.times for e in spec.list_columns if e.times is not None)
    return spec.list_names + times + spec.text_columns


def _check_text(column: str, values, *, first_row: int) -> None:
    """Text must be UTF-8 (parquet does not check it on write; CSV reading does)."""
    import pyarrow as pa

    try:
        values.validate(full=True)
    except pa.ArrowInvalid:
        for row, value in enumerate(values.cast(pa.binary()).to_pylist()):
            if value is None:
                continue
            try:
                value.decode()
            except UnicodeDecodeError as err:
                raise DataValidationError(
                    f"text column '{column}' row {first_row + row} is not UTF-8 ({err.reason} "
                    f"at byte {err.start}); re-encode the log's text as UTF-8"
                ) from None
        raise


def _floats(batch, column: str) -> np.ndarray:
    """A column as float64 with nulls as NaN."""
    import pyarrow as pa

    values = batch.column(column)
    if pa.types.is_boolean(values.type):
        values = values.cast(pa.int8())
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def task_violations(spec: DatasetSpec, batch) -> dict[str, np.ndarray]:
    """Per ``given`` task: rows where it is positive (binary 1, or a non-zero value) while its
    given task is 0. Such a row is an event logged without its precondition."""
    columns = {t.name: t.column for t in spec.tasks}
    masks = {}
    for task in spec.tasks:
        if task.given is None:
            continue
        given = _floats(batch, columns[task.given])
        values = _floats(batch, task.column)
        masks[task.name] = (given == 0) & ~np.isnan(values) & (values != 0)
    return masks


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
    """Check columns, types, nulls, targets per kind and every task's ``given`` precondition."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = open_dataset(source, spec.raw_columns, strings=string_columns(spec))
    try:
        empty = dataset.count_rows() == 0
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(
            f"cannot read rows of {source}: {read_error(err, Path(source))}"
        ) from err
    if empty:
        raise DataValidationError(f"raw data at {source} has no rows")
    check_types(spec, dataset.schema)
    not_null = spec.id_columns + (spec.timestamp,)
    if spec.weight_column is not None:
        not_null += (spec.weight_column,)
    rows = 0
    positives = dict.fromkeys(spec.task_names, 0)
    violations = {t.name: 0 for t in spec.tasks if t.given is not None}
    weight_total = 0.0
    ts_min: Any = None
    ts_max: Any = None
    window = _event_window()
    columns = {t.name: t.column for t in spec.tasks}
    kinds = {e.column: element_kind(spec, e, dataset.schema) for e in spec.list_columns}
    leaks = LeakCheck(spec)
    try:
        batches = dataset.to_batches(columns=list(spec.raw_columns))
        for batch in batches:
            if spec.list_columns:
                table = normalized_lists(
                    spec, pa.Table.from_batches([batch]), first_row=rows, kinds=kinds
                )
                leaks.add(table)
            for column in spec.text_columns:
                _check_text(column, batch.column(column), first_row=rows)
            rows += batch.num_rows
            for column in not_null:
                nulls = batch.column(column).null_count
                if nulls:
                    raise DataValidationError(
                        f"column '{column}' has {nulls} null value(s); ids, the timestamp and "
                        "the weight column must be complete"
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
            for task in spec.tasks:
                values = _floats(batch, task.column)
                missing = np.isnan(values)
                if missing.any():
                    given = _floats(batch, columns[task.given]) if task.given is not None else None
                    unexplained = missing if given is None else missing & (given != 0)
                    if unexplained.any():
                        where = (
                            f" where '{columns[task.given]}' ({task.given}) is 1"
                            if task.given is not None
                            else ""
                        )
                        raise DataValidationError(
                            f"target column '{task.column}' ({task.name}) has "
                            f"{int(unexplained.sum())} null value(s){where}; a target may be null "
                            "only where its given task is 0"
                        )
                present = values[~missing]
                if task.kind == "binary":
                    invalid = ~np.isin(present, (0.0, 1.0))
                    if invalid.any():
                        raise DataValidationError(
                            f"target column '{task.column}' ({task.name}, binary) must be 0/1, "
                            f"found {present[invalid][0]!r}; declare kind: regression for a "
                            "numeric target"
                        )
                    positives[task.name] += int(present.sum())
                else:
                    if not np.isfinite(present).all():
                        raise DataValidationError(
                            f"target column '{task.column}' ({task.name}, regression) has "
                            "infinite values"
                        )
                    if task.transform == "log1p" and (present < 0).any():
                        raise DataValidationError(
                            f"target column '{task.column}' ({task.name}) has negative values, "
                            "which transform: log1p cannot take"
                        )
                    positives[task.name] += int(present.size)
            for name, mask in task_violations(spec, batch).items():
                violations[name] += int(mask.sum())
            if spec.weight_column is not None:
                weights = _floats(batch, spec.weight_column)
                if not np.isfinite(weights).all() or (weights < 0).any():
                    raise DataValidationError(
                        f"weight column '{spec.weight_column}' must hold finite weights >= 0"
                    )
                weight_total += float(weights.sum())
            for task in spec.tasks:
                if task.truth is None:
                    continue
                values = _floats(batch, task.truth)
                if task.kind == "binary":
                    bad = np.isnan(values).any() or (values < 0).any() or (values > 1).any()
                    what = "lie in [0, 1]"
                else:
                    bad = not np.isfinite(values).all()
                    what = "be finite"
                if bad:
                    raise DataValidationError(
                        f"truth column '{task.truth}' of task '{task.name}' must {what} "
                        "without nulls"
                    )
            ts = batch.column(spec.timestamp)
            _check_event_times(spec.timestamp, ts, window)
            lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
            ts_min = lo if ts_min is None else min(ts_min, lo)
            ts_max = hi if ts_max is None else max(ts_max, hi)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataValidationError(
            f"cannot read rows of {source}: {read_error(err, Path(source))}"
        ) from err
    leaks.check()
    if spec.weight_column is not None and not weight_total > 0:
        raise DataValidationError(f"weight column '{spec.weight_column}' is 0 on every row")
    for name, count in violations.items():
        if not count:
            continue
        violated = spec.task(name)
        given_task = spec.task(str(violated.given))
        message = (
            f"column '{violated.column}' ({name}) is positive on {count} row(s) where "
            f"'{given_task.column}' ({given_task.name}, its given task) is 0"
        )
        if spec.on_violation == "error":
            raise DataValidationError(
                f"{message}; fix the log, declare the tasks independent (no 'given'), or set "
                "on_violation: drop (or count)"
            )
        logger.warning("%s: %s (on_violation: %s)", source, message, spec.on_violation)
    logger.info("validated %d rows of %s", rows, source)
    return ValidationReport(rows, positives, str(ts_min), str(ts_max), violations)
