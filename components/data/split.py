"""Time-based train / valid / test split of a validated log, streamed in bounded memory."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data.lists import element_kind, list_row_hashes, normalized_lists
from components.data.validate import open_dataset, string_columns, task_violations
from rankflow.core.artifacts import atomic_dir
from rankflow.core.errors import ConfigError, DataValidationError
from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of the time range (by row quantile) for valid and test; train is the rest."""

    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ConfigError("valid_fraction + test_fraction must leave rows for training")


def _as_int64(values) -> np.ndarray:  # values: pyarrow array
    """Timestamps/dates as integers in the column's own unit: order is all the split needs."""
    import pyarrow as pa

    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    elif pa.types.is_date(values.type):
        values = values.cast(pa.date32()).cast(pa.int32())
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class SplitResult:
    rows: dict[str, int]  # per split, after dropping duplicates
    duplicates: int  # exact duplicate rows dropped (the first of each kept)
    violations_dropped: int = 0  # rows dropped by on_violation: drop


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Mask keeping the first row of each distinct hash, in row order."""
    order = np.argsort(hashes, kind="stable")
    repeated = hashes[order][1:] == hashes[order][:-1]
    keep = np.ones(len(hashes), dtype=bool)
    keep[order[1:][repeated]] = False
    return keep


def _row_hashes(dataset, spec: DatasetSpec, kinds: dict[str, str]) -> np.ndarray:
    """A 64-bit hash of every row (all spec columns), streamed in record batches."""
    import pandas as pd
    import pyarrow as pa

    lists = {e.column for e in spec.list_columns} | {e.times for e in spec.list_columns if e.times}
    scalars = [c for c in spec.raw_columns if c not in lists]
    parts = []
    offset = 0
    for batch in dataset.to_batches(columns=list(spec.raw_columns)):
        table = pa.Table.from_batches([batch])
        if spec.list_columns:
            table = normalized_lists(spec, table, first_row=offset, kinds=kinds)
        offset += table.num_rows
        hashes = pd.util.hash_pandas_object(
            table.select(scalars).to_pandas(), index=False
        ).to_numpy()
        for column in sorted(lists):
            values = table.column(column).combine_chunks()
            hashes = hashes * np.uint64(1_000_003) ^ list_row_hashes(values)
        parts.append(hashes)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def split_by_time(
    spec: DatasetSpec, source: str | Path, outputs: dict[str, Path], config: SplitConfig
) -> SplitResult:
    """Write ``outputs[split]/part-0.parquet`` for each split; return the row counts.

    Rows before the (1 - valid - test) timestamp quantile train, the next slice validates, the
    latest rows test -- so evaluation always looks at the future of what the model saw.
    Exact duplicate rows (every spec column equal: a double-logged event) are dropped, the
    first kept: they would count the event twice in training and in the metrics.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = open_dataset(source, spec.raw_columns, strings=string_columns(spec))
    kinds = {e.column: element_kind(spec, e, dataset.schema) for e in spec.list_columns}
    keep = first_occurrences(_row_hashes(dataset, spec, kinds))
    duplicates = int((~keep).sum())
    if duplicates:
        logger.warning("dropping %d exact duplicate row(s) of %s", duplicates, source)
    ts = _as_int64(
        dataset.to_table(columns=[spec.timestamp]).column(spec.timestamp).combine_chunks()
    )[keep]
    cut_valid, cut_test = np.quantile(
        ts,
        [1.0 - config.valid_fraction - config.test_fraction, 1.0 - config.test_fraction],
        method="lower",
    )
    counts = dict.fromkeys(SPLITS, 0)
    with ExitStack() as stack:
        scratches = {name: stack.enter_context(atomic_dir(outputs[name])) for name in SPLITS}
        writers: dict[str, pq.ParquetWriter] = {}
        # Registered last, so writers close before the scratch dirs are renamed or removed.
        stack.callback(lambda: [w.close() for w in writers.values()])
        offset = 0
        dropped = 0
        for batch in dataset.to_batches(columns=list(spec.raw_columns)):
            table = pa.Table.from_batches([batch])
            if spec.list_columns:
                table = normalized_lists(spec, table, first_row=offset, kinds=kinds)
            rows = slice(offset, offset + table.num_rows)
            offset += table.num_rows
            mask = keep[rows] if duplicates else np.ones(table.num_rows, dtype=bool)
            if spec.on_violation == "drop":
                for violated in task_violations(spec, batch).values():
                    dropped += int((mask & violated).sum())
                    mask &= ~violated
            if not mask.all():
                table = table.filter(pa.array(mask))
            table = _targets_typed(spec, table)
            t = _as_int64(table.column(spec.timestamp).combine_chunks())
            which = np.where(t < cut_valid, 0, np.where(t < cut_test, 1, 2))
            for code, name in enumerate(SPLITS):
                part = table.filter(pa.array(which == code))
                if part.num_rows == 0:
                    continue
                if name not in writers:
                    writers[name] = pq.ParquetWriter(
                        scratches[name] / "part-0.parquet", part.schema
                    )
                writers[name].write_table(part)
                counts[name] += part.num_rows
        empty = [name for name in SPLITS if counts[name] == 0]
        if empty:
            raise DataValidationError(
                f"time split left {empty} empty: column '{spec.timestamp}' needs more distinct "
                "timestamps for the requested fractions"
            )
    if dropped:
        logger.warning("dropped %d row(s) violating a task's 'given' (on_violation: drop)", dropped)
    logger.info("time split: %s", counts)
    return SplitResult(counts, duplicates, dropped)


def _targets_typed(spec: DatasetSpec, table):  # pyarrow.Table -> pyarrow.Table
    """Binary targets as int32 whatever the source said (bool, int8, float 0/1), regression
    targets as float32; a target null where its given task is 0 (validation allowed only those)
    becomes 0: that row carries no weight in the task's loss or metrics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for task in spec.tasks:
        index = table.schema.get_field_index(task.column)
        values = table.column(task.column)
        if pa.types.is_boolean(values.type):
            values = values.cast(pa.int8())
        values = pc.fill_null(values, 0)
        kind = pa.int32() if task.kind == "binary" else pa.float32()
        table = table.set_column(index, task.column, values.cast(kind))
    # The source's pandas metadata may still call a target nullable ("Float32"): the columns'
    # Arrow types are what every later reader should go by.
    return table.replace_schema_metadata(None)
