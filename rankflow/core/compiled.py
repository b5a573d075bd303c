"""The fitted NVTabular workflow compiled into plain numpy lookups for per-request serving.

NVTabular's CPU transform is built for partitions of millions of rows: every request pays a pandas
merge per categorical column plus DataFrame bookkeeping, ~100 ms for 64 rows, which is the whole
serving latency. The fitted state is small (vocabulary tables, means and stds), so the same
arithmetic can run as hash lookups on the request's arrays in well under a millisecond.

Only ops whose transform is reproduced exactly are compiled (Categorify with a vocabulary, also
joint and over list columns, HashBucket, FillMissing, FillMedian, Normalize, LogOp, Clip,
Bucketize, ListSlice keeping a list's last values, Rename, plus the selection/tagging plumbing);
anything else raises
:class:`NotCompilable` and the caller keeps NVTabular. :func:`compile_workflow` also runs both
paths on probe rows (every vocabulary's values, unseen values, nulls) and refuses to compile if any
output differs, so a future NVTabular change can slow serving down but not make it drift.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from rankflow.core.errors import NotCompilable

if TYPE_CHECKING:
    import nvtabular as nvt
    import pandas as pd

logger = logging.getLogger(__name__)

#: NVTabular 23.08 Categorify layout without hashing of rare values: 1 is null, 2 out-of-vocabulary.
NULL_INDEX, OOV_INDEX = 1, 2


class Ragged(NamedTuple):
    """A list column as Merlin's dataloader hands it to a model: every row's values end to end,
    and ``offsets`` (int64, rows + 1) where each row starts."""

    values: np.ndarray
    offsets: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_arrow(cls, array: Any) -> Ragged:  # a pyarrow (Chunked)ListArray without nulls
        import pyarrow as pa

        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        offsets = np.asarray(array.offsets.to_numpy(), dtype=np.int64)
        values = array.flatten().to_numpy(zero_copy_only=False)
        return cls(np.asarray(values), offsets - offsets[0])

    @classmethod
    def from_lists(cls, lists: Any, dtype: np.dtype | None = None) -> Ragged:
        """From a sequence of per-row arrays (a pandas list column)."""
        lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        parts = [np.asarray(v) for v in lists if len(v)]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype or np.int64)
        return cls(values if dtype is None else values.astype(dtype, copy=False), offsets)

    def to_arrow(self) -> Any:  # pyarrow.ListArray
        import pyarrow as pa

        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), pa.array(self.values))

    def to_lists(self) -> list[np.ndarray]:
        return [self.values[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]


Column = np.ndarray | Ragged
Columns = Mapping[str, Column]
ColumnFn = Callable[[Columns], Any]


def _isna(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(values) if values.dtype.kind == "O" else np.isnan(values)


def _vocabulary(path: str | Path, column: str) -> tuple[Any, np.ndarray]:
    """(index of vocabulary values, their codes) from a Categorify ``unique.<col>.parquet``."""
    import pandas as pd

    table = pd.read_parquet(path, columns=[column])
    labels = table.index.to_numpy(dtype=np.int64)
    if len(labels) and labels[0] < OOV_INDEX + 1:
        # The parquet index was dropped on write; NVTabular shifts the labels the same way.
        labels = labels + OOV_INDEX + 1
    values = table[column].to_numpy()
    keep = ~_isna(values) if values.dtype.kind in "fO" else np.ones(len(values), dtype=bool)
    index = pd.Index(values[keep])
    if not index.is_unique:
        raise NotCompilable(f"vocabulary of '{column}' at {path} has duplicate values")
    return index, labels[keep]


#: Integer vocabularies whose values fit below this are looked up in a dense array.
DENSE_LIMIT = 1 << 24
#: Below this many rows a dict lookup beats pandas' vectorised hash join (which has ~100 us setup).
SMALL_BATCH = 2048


class _Lookup:
    """Vocabulary value -> code; unseen values -> OOV_INDEX."""

    def __init__(self, index: Any, labels: np.ndarray) -> None:
        self.index = index
        self.labels = labels
        self.table = dict(zip(index.tolist(), labels.tolist(), strict=True))
        self.dense: np.ndarray | None = None
        if index.dtype.kind in "iu" and len(index):
            low, high = int(index.min()), int(index.max())
            if low >= 0 and high < DENSE_LIMIT:
                self.dense = np.full(high + 1, OOV_INDEX, dtype=np.int64)
                self.dense[index.to_numpy()] = labels

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.dense is not None and values.dtype.kind in "iu":
            inside = (values >= 0) & (values < len(self.dense))
            if inside.all():
                return self.dense[values]
            codes = np.full(len(values), OOV_INDEX, dtype=np.int64)
            codes[inside] = self.dense[values[inside]]
            return codes
        if len(values) <= SMALL_BATCH:
            get = self.table.get
            return np.fromiter(
                (get(v, OOV_INDEX) for v in values.tolist()), dtype=np.int64, count=len(values)
            )
        found = self.index.get_indexer(values)
        return np.where(found >= 0, self.labels[found], OOV_INDEX)


def _categorify(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    if op.single_table or op.num_buckets or op.max_size or op.search_sorted:
        raise NotCompilable(f"Categorify options on '{column}' are not compiled")
    storage = op.storage_name.get(column, column)
    if storage not in op.categories:
        raise NotCompilable(f"Categorify has no vocabulary file for '{column}'")
    index, labels = _vocabulary(op.categories[storage], storage)
    lookup = _Lookup(index, labels)
    value_dtype = index.dtype
    out_dtype = np.dtype(op.output_dtype)

    def encode(raw: Columns) -> Column:
        values = parent(raw)
        if isinstance(values, Ragged):
            # List values are never null: the data step made null lists empty.
            codes = lookup(values.values.astype(value_dtype, copy=False))
            return Ragged(codes.astype(out_dtype, copy=False), values.offsets)
        values = np.asarray(values)
        nulls = _isna(values) if values.dtype.kind in "fO" else None
        codes = lookup(values.astype(value_dtype, copy=False))
        if nulls is not None and nulls.any():
            codes[nulls] = NULL_INDEX
        return codes.astype(out_dtype, copy=False)

    return encode


def _hash_bucket(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    import pandas as pd
    from merlin.core.dispatch import hash_series

    buckets = op.num_buckets if isinstance(op.num_buckets, int) else op.num_buckets[column]
    out_dtype = np.dtype(op.output_dtype)

    def bucket(raw: Columns) -> np.ndarray:
        # NVTabular hashes a pandas Series together with its RangeIndex, so a value's bucket
        # depends on its row position; reproduced as is (and requests are then not merged).
        return (hash_series(pd.Series(parent(raw))) % buckets).astype(out_dtype)

    return bucket


def _filler(fill: float, parent: ColumnFn) -> ColumnFn:
    def filled(raw: Columns) -> np.ndarray:
        values = np.asarray(parent(raw))
        if values.dtype.kind not in "fO":
            return values
        nulls = _isna(values)
        if not nulls.any():
            return values
        values = values.copy()
        values[nulls] = fill
        return values

    return filled


def _fill_missing(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    if op.add_binary_cols:
        raise NotCompilable("FillMissing(add_binary_cols=True) is not compiled")
    return _filler(op.fill_val, parent)


def _fill_median(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    if op.add_binary_cols:
        raise NotCompilable("FillMedian(add_binary_cols=True) is not compiled")
    return _filler(op.medians[column], parent)


def _normalize(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    mean, std = op.means[column], op.stds[column]
    out_dtype = np.dtype(op.output_dtype)

    def normalized(raw: Columns) -> np.ndarray:
        values = np.asarray(parent(raw))
        values = (values - mean) / std if std > 0 else values - mean
        return values.astype(out_dtype, copy=False)

    return normalized


def _log(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    out_dtype = np.dtype(op.output_dtype)

    def logged(raw: Columns) -> np.ndarray:
        return np.log(np.asarray(parent(raw)).astype(out_dtype) + 1)

    return logged


def _clip(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    low, high = op.min_value, op.max_value

    def clipped(raw: Columns) -> np.ndarray:
        values = np.array(parent(raw), copy=True)
        if low is not None:
            values[values < low] = low
        if high is not None:
            values[values > high] = high
        return values

    return clipped


def _bucketize(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    boundaries = np.asarray(op.boundaries(column))
    out_dtype = np.dtype(op.output_dtype)

    def bucketed(raw: Columns) -> np.ndarray:
        return np.digitize(np.asarray(parent(raw)), boundaries, right=False).astype(out_dtype)

    return bucketed


def _list_slice(op: Any, column: str, parent: ColumnFn) -> ColumnFn:
    if op.pad or op.start >= 0 or op.end < op.max_elements:
        raise NotCompilable(f"ListSlice({op.start}, {op.end}, pad={op.pad}) is not compiled")
    keep = -op.start

    def newest(raw: Columns) -> Ragged:
        values = parent(raw)
        if not isinstance(values, Ragged):
            raise NotCompilable(f"ListSlice on '{column}', which is not a list")
        lengths = np.diff(values.offsets)
        if not (lengths > keep).any():
            return values
        kept = np.minimum(lengths, keep)
        offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        starts = values.offsets[1:] - kept
        index = np.repeat(starts - offsets[:-1], kept) + np.arange(offsets[-1])
        return Ragged(values.values[index], offsets)

    return newest


_PER_COLUMN = {
    "Categorify": _categorify,
    "HashBucket": _hash_bucket,
    "FillMissing": _fill_missing,
    "FillMedian": _fill_median,
    "Normalize": _normalize,
    "LogOp": _log,
    "Clip": _clip,
    "Bucketize": _bucketize,
    "ListSlice": _list_slice,
}
_PASS_THROUGH = {"ConcatColumns", "AddTags", "AddMetadata", "TagAsItemFeatures", "SubsetColumns"}
#: Ops that take scalars only: compiled over a list column they would silently misread it.
_SCALAR_ONLY = {
    "HashBucket",
    "FillMissing",
    "FillMedian",
    "Normalize",
    "LogOp",
    "Clip",
    "Bucketize",
}


def _select(column: str) -> ColumnFn:
    def select(raw: Columns) -> Column:
        return raw[column]

    return select


def _compile_node(node: Any, memo: dict[int, dict[str, ColumnFn]]) -> dict[str, ColumnFn]:
    if id(node) in memo:
        return memo[id(node)]
    parents: dict[str, ColumnFn] = {}
    for parent in node.parents_with_dependencies:
        parents.update(_compile_node(parent, memo))
    name = type(node.op).__name__
    outputs = node.output_columns.names
    if name == "SelectionOp" and not node.parents_with_dependencies:
        compiled = {c: _select(c) for c in outputs}
    elif name in _PASS_THROUGH or name == "SelectionOp":
        missing = [c for c in outputs if c not in parents]
        if missing:
            raise NotCompilable(f"{name} outputs {missing} that no parent produces")
        compiled = {c: parents[c] for c in outputs}
    elif name == "Rename":
        inputs = list(node.input_columns.names)
        mapping = node.op.column_mapping(node.input_columns)
        missing = [c for c in inputs if c not in parents]
        if missing or len(mapping) != len(inputs):
            raise NotCompilable(f"Rename of {inputs} is not compiled")
        compiled = {new: parents[old[0]] for new, old in mapping.items()}
    elif name in _PER_COLUMN:
        if list(node.input_columns.names) != list(outputs):
            raise NotCompilable(f"{name} renames or adds columns")
        lists = [c for c in node.input_columns.names if node.input_schema[c].is_list]
        if name in _SCALAR_ONLY and lists:
            raise NotCompilable(f"{name} over the list column(s) {lists} is not compiled")
        compiled = {c: _PER_COLUMN[name](node.op, c, parents[c]) for c in outputs}
    else:
        raise NotCompilable(f"op {name} is not compiled")
    memo[id(node)] = compiled
    return compiled


class CompiledWorkflow:
    """Maps raw feature arrays (one per input column; a :class:`Ragged` per list column) to the
    workflow's output arrays (a :class:`Ragged` per list output)."""

    def __init__(
        self,
        functions: dict[str, ColumnFn],
        inputs: tuple[str, ...],
        *,
        rows_independent: bool,
        lists: tuple[str, ...] = (),
    ) -> None:
        self._functions = functions
        self.inputs = inputs
        self.outputs = tuple(functions)
        #: Input columns that are lists.
        self.lists = lists
        #: False when an output depends on a row's position in the batch (HashBucket on CPU).
        self.rows_independent = rows_independent

    def transform(self, columns: Columns) -> dict[str, Column]:
        return {name: fn(columns) for name, fn in self._functions.items()}

    def model_inputs(self, columns: Columns) -> dict[str, np.ndarray]:
        """:meth:`transform` as a Merlin model takes it: a list output ``c`` as
        ``c__values`` and ``c__offsets``."""
        return flatten_ragged(self.transform(columns))


def flatten_ragged(columns: Mapping[str, Column]) -> dict[str, np.ndarray]:
    """A list column ``c`` as Merlin's ``c__values`` / ``c__offsets`` pair."""
    flat: dict[str, np.ndarray] = {}
    for name, value in columns.items():
        if isinstance(value, Ragged):
            flat[f"{name}__values"] = value.values
            flat[f"{name}__offsets"] = value.offsets
        else:
            flat[name] = value
    return flat


def _probe_rows(
    workflow: nvt.Workflow, dtypes: Mapping[str, np.dtype], lists: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Rows that hit every vocabulary entry, unseen values and (where representable) nulls;
    list columns get lists of every length from empty to past any ListSlice."""
    import pandas as pd
    from merlin.dag.node import iter_nodes

    vocab: dict[str, np.ndarray] = {}
    for node in iter_nodes([workflow.output_node]):
        if type(node.op).__name__ == "Categorify":
            for column in node.input_columns.names:
                storage = node.op.storage_name.get(column, column)
                path = node.op.categories.get(storage)
                if path is not None:
                    vocab[column] = pd.read_parquet(path, columns=[storage])[storage].to_numpy()
    size = max([len(v) for v in vocab.values()] + [16]) + 3
    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {}
    for column, dtype in dtypes.items():
        if column in lists:
            columns[column] = _probe_lists(vocab.get(column), dtype, size, rng)
        elif dtype.kind == "O" or dtype.kind in "SU":
            known = [str(v) for v in vocab.get(column, ())] or ["a", "b"]
            cycle = [known[i % len(known)] for i in range(size - 3)]
            columns[column] = np.array([*cycle, "rankflow-unseen", None, ""], dtype=object)
        elif dtype.kind in "iu":
            ids = vocab.get(column, np.arange(8)).astype(np.int64)
            repeated = ids[np.arange(size - 3) % max(len(ids), 1)]
            unseen = int(ids.max()) + 1 if len(ids) else 1
            columns[column] = np.array([*repeated, unseen, -1, 0], dtype=dtype)
        else:
            values = rng.normal(size=size).astype(dtype)
            values[-1] = np.nan
            columns[column] = values
    return pd.DataFrame(columns)


#: Probe lists run from empty to this long (past any ListSlice a spec would set by default).
PROBE_LIST_LENGTH = 48


def _probe_lists(
    vocabulary: np.ndarray | None, dtype: np.dtype, size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    if dtype.kind in "iu":
        ids = (vocabulary if vocabulary is not None else np.arange(8)).astype(np.int64)
        ids = ids[ids >= 0] if len(ids) else np.arange(1)
        pool = np.concatenate([ids, [int(ids.max()) + 1 if len(ids) else 1]])
    else:
        values = list(vocabulary) if vocabulary is not None else []
        names = [str(v) for v in values if v is not None]
        pool = np.array([*names, "rankflow-unseen"] if names else ["a", "b"], dtype=object)
    rows = []
    for i in range(size):
        length = i % (PROBE_LIST_LENGTH + 1)
        rows.append(pool[(np.arange(length) + i) % len(pool)].astype(dtype))
    return rows


def compile_workflow(workflow: nvt.Workflow) -> CompiledWorkflow:
    """Compile a fitted workflow, checked against ``workflow.transform`` on probe rows."""
    from merlin.dag.node import iter_nodes

    dtypes = {c.name: np.dtype(c.dtype.to_numpy) for c in workflow.input_schema}
    lists = tuple(c.name for c in workflow.input_schema if c.is_list)
    functions = _compile_node(workflow.output_node, {})
    names = workflow.output_schema.column_names
    missing = [c for c in names if c not in functions]
    if missing:
        raise NotCompilable(f"workflow outputs {missing} were not compiled")
    hashed = any(
        type(node.op).__name__ == "HashBucket" for node in iter_nodes([workflow.output_node])
    )
    compiled = CompiledWorkflow(
        {c: functions[c] for c in names}, tuple(dtypes), rows_independent=not hashed, lists=lists
    )
    output_lists = {c.name for c in workflow.output_schema if c.is_list}

    probe = _probe_rows(workflow, dtypes, lists)
    # The whole probe takes the large-batch lookups; its ends (unseen values and nulls sit at the
    # tail) take the per-request ones.
    for rows in (probe, probe.iloc[:64], probe.iloc[-64:]):
        rows = rows.reset_index(drop=True)
        expected = workflow.transform(rows)
        raw = {
            c: Ragged.from_lists(list(rows[c]), dtypes[c]) if c in lists else rows[c].to_numpy()
            for c in rows.columns
        }
        got = compiled.transform(raw)
        for name in names:
            want, out = expected[name].to_numpy(), got[name]
            if name in output_lists or isinstance(out, Ragged):
                if not isinstance(out, Ragged):
                    raise NotCompilable(f"compiled '{name}' is no list")
                want_ragged = Ragged.from_lists(list(want))
                if not np.array_equal(want_ragged.offsets, out.offsets):
                    raise NotCompilable(f"compiled list '{name}' differs from NVTabular")
                want, have = want_ragged.values, out.values
                if not len(want):
                    want = want.astype(have.dtype)
            else:
                have = out
            if want.dtype != have.dtype or not np.array_equal(want, have, equal_nan=True):
                raise NotCompilable(
                    f"compiled '{name}' differs from NVTabular on {len(rows)} probe rows "
                    f"({have.dtype} vs {want.dtype})"
                )
    logger.info("workflow compiled: %d outputs checked on %d probe rows", len(names), len(probe))
    return compiled
