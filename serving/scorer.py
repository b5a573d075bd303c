"""Raw rows -> per-task scores: the fitted NVTabular workflow, then the saved ranker.

One class serves both sides of the skew check: offline scoring in-process, and online scoring
inside Triton's python backend, so serving can't drift from what training saw.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankflow.core.artifacts import input_dtypes, load_ranker, load_workflow
from rankflow.core.compiled import Ragged
from rankflow.core.contract import LENGTH_SUFFIX
from rankflow.core.errors import NotCompilable, ScoringError
from rankflow.core.tasks import task_of

if TYPE_CHECKING:
    from rankflow.core.compiled import CompiledWorkflow
    from rankflow.core.content import ContentFeatures

logger = logging.getLogger(__name__)

__all__ = ["RankerScorer", "ScoringError"]


class RankerScorer:
    """Loads a fitted workflow (targets removed) and a saved ranker; scores raw DataFrames.

    Part of the serving contract (:mod:`rankflow.core.contract`): every store version's
    ``model.py`` constructs it and calls ``input_dtypes``, ``prepare``, ``rows_independent``
    and ``score_prepared``.
    """

    def __init__(
        self,
        workflow_dir: Path,
        model_dir: Path,
        *,
        targets: Sequence[str],
        content: ContentFeatures | None = None,
    ) -> None:
        import tensorflow as tf

        from rankflow.core.compiled import compile_workflow

        self.workflow = load_workflow(workflow_dir, drop=targets)
        self.model = load_ranker(model_dir)
        self.tasks = tuple(targets)
        self.input_dtypes: dict[str, np.dtype] = input_dtypes(self.workflow)
        #: Text columns become vectors beside the workflow (see ContentFeatures): raw strings in.
        self.content = content
        for column in content.columns if content is not None else ():
            self.input_dtypes[column] = np.dtype(object)
        #: Input columns that are lists: each arrives padded, with ``<name>__length``.
        self.lists: tuple[str, ...] = tuple(c.name for c in self.workflow.input_schema if c.is_list)
        try:
            self.compiled: CompiledWorkflow | None = compile_workflow(self.workflow)
        except NotCompilable as err:
            # Still correct, just ~100 ms per request slower: NVTabular's own transform.
            logger.warning("serving through NVTabular's transform: %s", err)
            self.compiled = None
        # One concrete graph with a batch-polymorphic signature: eager Keras took 87 ms per
        # 64-row request here, a tf.function 3.8 ms (1.5 ms of it matching the call against its
        # traces), the concrete function 2.3 ms. Tracing it now also means the first request (in
        # Triton: the first after a rollout) doesn't pay seconds of tracing.
        sample = self._transform(self._blank_columns(2))
        signature = {
            c: tf.TensorSpec([None, *v.shape[1:]], tf.as_dtype(v.dtype)) for c, v in sample.items()
        }
        self._predict = tf.function(
            lambda inputs: self.model(inputs, training=False)
        ).get_concrete_function(signature)
        self.score_columns(self._blank_columns(1))

    def _blank_columns(self, n: int) -> dict:
        columns: dict = {}
        for c, d in self.input_dtypes.items():
            if c in self.lists:
                columns[c] = Ragged(np.zeros(0, dtype=d), np.zeros(n + 1, dtype=np.int64))
            else:
                columns[c] = np.full(n, "", dtype=object) if d.kind in "OSU" else np.zeros(n, d)
        return columns

    def _transform(self, raw: Mapping) -> dict[str, np.ndarray]:
        """The model's inputs: a list output ``c`` as ``c__values`` / ``c__offsets``."""
        from rankflow.core.compiled import flatten_ragged

        vectors = self.content.vectors(raw) if self.content is not None else {}
        if self.compiled is not None:
            return {**self.compiled.model_inputs(raw), **vectors}
        frame = self.workflow.transform(
            pd.DataFrame({c: v.to_lists() if isinstance(v, Ragged) else v for c, v in raw.items()})
        )
        return {
            **flatten_ragged(
                {
                    c: Ragged.from_lists(list(frame[c])) if c in self._list_outputs else frame[c]
                    for c in frame.columns
                }
            ),
            **vectors,
        }

    @property
    def _list_outputs(self) -> set[str]:
        return {c.name for c in self.workflow.output_schema if c.is_list}

    def check(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.input_dtypes if c not in frame.columns]
        if missing:
            raise ScoringError(f"missing input column(s) {missing}")
        if frame.empty:
            raise ScoringError("no rows to score")

    def score(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-task probabilities (float32, one per row) for raw feature rows; a list column
        holds one sequence of values per row (oldest first)."""
        self.check(frame)
        return self.score_columns({c: frame[c].to_numpy() for c in self.input_dtypes})

    def score_columns(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`score` for one array per input column (what Triton hands the model)."""
        return self.score_prepared(self.prepare(columns))

    def prepare(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checked, flattened input columns cast to the workflow's dtypes."""
        missing = [c for c in self.input_dtypes if c not in columns]
        if missing:
            raise ScoringError(f"missing input column(s) {missing}")
        raw: dict = {name: self._list(name, columns) for name in self.lists}
        counts = {
            len(np.asarray(columns[c]).reshape(-1)) for c in self.input_dtypes if c not in raw
        }
        counts |= {lists.rows for lists in raw.values()}
        if len(counts) != 1:
            raise ScoringError(f"input columns have different row counts {sorted(counts)}")
        if counts == {0}:
            raise ScoringError("no rows to score")
        for name, dtype in self.input_dtypes.items():
            if name in raw:
                continue
            values = np.asarray(columns[name]).reshape(-1)
            if dtype.kind in "iu" and values.dtype.kind == "f" and not np.isfinite(values).all():
                # numpy would turn NaN into an arbitrary integer id without a word.
                raise ScoringError(f"input '{name}' has NaN/Inf values but is an integer column")
            if values.dtype.kind == "f" and np.isinf(values).any():
                # NaN is a missing value, filled as in training; Inf has no fill and would turn
                # the normalised feature, and the score, into NaN.
                raise ScoringError(f"input '{name}' has infinite values")
            try:
                raw[name] = values.astype(dtype, copy=False)
            except (TypeError, ValueError) as err:
                raise ScoringError(f"input '{name}' can't be read as {dtype}: {err}") from err
        return raw

    def _list(self, name: str, columns: Mapping) -> Ragged:
        """List input ``name`` as a Ragged of the workflow's dtype, from a Ragged, from a padded
        ``[rows, width]`` array with ``<name>__length`` (the wire format), or from one sequence
        per row (a DataFrame column)."""
        dtype = self.input_dtypes[name]
        value = columns[name]
        if isinstance(value, Ragged):
            lists = value
        elif isinstance(value, np.ndarray) and value.ndim == 2:
            lists = _unpad(name, value, columns.get(name + LENGTH_SUFFIX))
        else:
            rows = np.asarray(value, dtype=object).reshape(-1)
            # A null list is the empty list, as in the data step.
            rows = np.array([[] if v is None else v for v in rows] + [None], dtype=object)[:-1]
            bad = [i for i, v in enumerate(rows) if isinstance(v, str | bytes) or np.ndim(v) != 1]
            if bad:
                raise ScoringError(
                    f"input '{name}' row {bad[0]} is {rows[bad[0]]!r}, not a list of values"
                )
            lists = Ragged.from_lists(list(rows))
        values = lists.values
        if dtype.kind in "iu" and values.dtype.kind not in "iu" and len(values):
            raise ScoringError(
                f"input '{name}' holds {values.dtype} values; its values are integers"
            )
        try:
            values = values.astype(dtype, copy=False)
        except (TypeError, ValueError) as err:
            raise ScoringError(f"input '{name}' values can't be read as {dtype}: {err}") from err
        return Ragged(values, lists.offsets.astype(np.int64, copy=False))

    def concat(self, parts: Sequence[Mapping]) -> dict:
        """Columns of several :meth:`prepare` results as one batch (lists re-offset)."""
        merged: dict = {}
        for name in self.input_dtypes:
            pieces = [part[name] for part in parts]
            if isinstance(pieces[0], Ragged):
                starts = np.cumsum([0] + [p.offsets[-1] for p in pieces[:-1]])
                merged[name] = Ragged(
                    np.concatenate([p.values for p in pieces]),
                    np.concatenate(
                        [[0]] + [p.offsets[1:] + s for p, s in zip(pieces, starts, strict=True)]
                    ).astype(np.int64),
                )
            else:
                merged[name] = np.concatenate(pieces)
        return merged

    @staticmethod
    def rows(columns: Mapping) -> int:
        value = next(iter(columns.values()))
        return value.rows if isinstance(value, Ragged) else len(value)

    @property
    def rows_independent(self) -> bool:
        """True when a row's scores don't depend on the other rows of its batch, so requests
        may be scored together. NVTabular's CPU HashBucket hashes values *with* their row index."""
        return self.compiled is not None and self.compiled.rows_independent

    def score_prepared(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores of columns that :meth:`prepare` returned (possibly several concatenated)."""
        import tensorflow as tf

        transformed = self._transform(raw)
        outputs = self._predict({c: tf.constant(v) for c, v in transformed.items()})
        if not isinstance(outputs, Mapping):
            outputs = {self.tasks[0]: outputs}
        return {
            task_of(name): np.asarray(value, dtype=np.float32).reshape(-1)
            for name, value in outputs.items()
        }


def _unpad(name: str, padded: np.ndarray, lengths: np.ndarray | None) -> Ragged:
    """``[rows, width]`` values whose row i holds ``lengths[i]`` real values first."""
    if lengths is None:
        raise ScoringError(f"missing input '{name}{LENGTH_SUFFIX}' (the length of each '{name}')")
    lengths = np.asarray(lengths).reshape(-1)
    rows, width = padded.shape
    if len(lengths) != rows:
        raise ScoringError(
            f"input '{name}{LENGTH_SUFFIX}' has {len(lengths)} rows, '{name}' {rows}"
        )
    if lengths.dtype.kind not in "iu":
        raise ScoringError(f"input '{name}{LENGTH_SUFFIX}' must hold integers")
    bad = np.flatnonzero((lengths < 0) | (lengths > width))
    if len(bad):
        raise ScoringError(
            f"input '{name}{LENGTH_SUFFIX}' row {bad[0]} is {lengths[bad[0]]}, outside "
            f"[0, {width}] (the width of '{name}')"
        )
    keep = np.arange(width)[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Ragged(padded[keep], offsets)


def version_scorer(version_dir: Path, manifest: Mapping, *, targets: Sequence[str]) -> RankerScorer:
    """The scorer of an exported version (its ``rankflow.json`` as ``manifest``): its workflow,
    its ranker and, when it takes text, its own content table and encoder files."""
    from rankflow.core.content import MANIFEST_KEY, open_content

    fields = manifest.get(MANIFEST_KEY)
    content = open_content(version_dir / "content", fields) if fields else None
    return RankerScorer(
        version_dir / "workflow", version_dir / "ranker", targets=targets, content=content
    )
