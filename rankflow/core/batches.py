"""Batches of a processed split from arrays held in memory: the CPU feed for training and scoring.

On the CPU, Merlin's dataloader reads a split into pandas, where a list column is an object column
of numpy arrays, and flattens it row by row for every batch. Measured at 80,000 train rows and
batch 1024 (``python -m bench.training`` and ``bench/cold_start.py`` time it): 0.15 s an epoch for
scalar columns only, 6.4 s with three list columns, 8.1 s with two 32-d vectors added; at the
default run's 1.6M train rows that is minutes an epoch before the model does any work.

Here a split is read once with pyarrow into one array per column: a scalar ``[rows]``, a vector
``[rows, d]``, a ragged list padded ``[rows, L]`` with its lengths. A batch is a fancy index per
column; a ragged list is handed to the model as Merlin's ``<col>__values`` / ``<col>__offsets``
pair, exactly what ``mm.Loader`` yields, so the model, its saved signature and serving do not
change. The cost is holding the split in memory (about its parquet's uncompressed size).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import DataValidationError
from rankflow.core.io import parquet_parts

logger = logging.getLogger(__name__)

#: Merlin's tags of target columns: the loader yields these as the labels, the rest as inputs.
TARGET_TAGS = ("target", "binary_classification", "regression")


@dataclass(frozen=True)
class _Ragged:
    padded: np.ndarray  # [rows, L], values past a row's length are 0
    lengths: np.ndarray  # [rows], int64

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lengths = self.lengths[rows]
        block = self.padded[rows]
        values = block[np.arange(block.shape[1]) < lengths[:, None]]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return values, offsets


def _column(table: Any, name: str, *, ragged: bool) -> np.ndarray | _Ragged:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name).combine_chunks()
    kind = column.type
    if column.null_count:
        raise DataValidationError(
            f"processed column {name!r} has {column.null_count} null value(s); "
            "re-run the feature step"
        )
    if pa.types.is_fixed_size_list(kind):
        values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        return values.reshape(len(column), kind.list_size)
    if not pa.types.is_list(kind) and not pa.types.is_large_list(kind):
        return column.to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    width = int(lengths.max(initial=0))
    if not ragged:
        if width and not (lengths == width).all():
            raise DataValidationError(
                f"processed column {name!r} is declared fixed-size but its rows hold "
                f"{int(lengths.min())}..{width} values; re-run the feature step"
            )
        return values.reshape(len(lengths), width)
    padded = np.zeros((len(lengths), max(width, 1)), dtype=values.dtype)
    padded[np.arange(max(width, 1)) < lengths[:, None]] = values
    return _Ragged(padded, lengths)


def _dense(column: np.ndarray | _Ragged) -> np.ndarray:
    if isinstance(column, _Ragged):
        raise DataValidationError("a target column holds lists; a target is one value a row")
    return column


class InMemoryLoader:
    """A processed split as ``(inputs, targets)`` batches of tensors, like ``mm.Loader``.

    It is a ``tf.keras.utils.Sequence`` (its class is made when TensorFlow is imported), so
    ``model.fit`` takes it; iterating it yields every batch in order. With ``shuffle`` each epoch
    visits the rows in a new order drawn from ``seed``.
    """

    def __init__(self, path: Path, *, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        import pyarrow.dataset as ds
        from merlin.io import Dataset

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.input_schema = Dataset(str(path), engine="parquet", cpu=True).schema
        self.output_schema = self.input_schema
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._random = np.random.default_rng(seed)
        names = self.input_schema.column_names
        table = ds.dataset([str(p) for p in parquet_parts(path)], format="parquet").to_table(
            columns=names
        )
        self.rows = table.num_rows
        targets = set(self.input_schema.select_by_tag(list(TARGET_TAGS)).column_names)
        self._columns = {
            c.name: _column(table, c.name, ragged=c.is_ragged) for c in self.input_schema
        }
        self._targets = [n for n in names if n in targets]
        self._inputs = [n for n in names if n not in targets]
        self._order = self._new_order()

    @property
    def schema(self) -> Any:
        return self.input_schema

    def _new_order(self) -> np.ndarray:
        if self.shuffle:
            return self._random.permutation(self.rows)
        return np.arange(self.rows)

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def batch(self, index: int) -> tuple[dict[str, Any], Any]:
        import tensorflow as tf

        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        inputs: dict[str, Any] = {}
        for name in self._inputs:
            column = self._columns[name]
            if isinstance(column, _Ragged):
                values, offsets = column.take(rows)
                inputs[f"{name}__values"] = tf.constant(values)
                inputs[f"{name}__offsets"] = tf.constant(offsets)
            else:
                inputs[name] = tf.constant(column[rows])
        targets = {name: tf.constant(_dense(self._columns[name])[rows]) for name in self._targets}
        # As Merlin's loader: one target is a tensor, several a dict, none None.
        if len(targets) == 1:
            return inputs, next(iter(targets.values()))
        return inputs, targets or None

    def on_epoch_end(self) -> None:
        self._order = self._new_order()

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        for index in range(len(self)):
            yield self.batch(index)


def in_memory_loader(path: Path, *, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """An :class:`InMemoryLoader` that Keras' ``fit`` accepts as a ``Sequence``."""
    import tensorflow as tf

    class _Sequence(InMemoryLoader, tf.keras.utils.Sequence):
        def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
            return self.batch(index)

    return _Sequence(path, batch_size=batch_size, shuffle=shuffle, seed=seed)
