"""The training inputs' drift profiles, from the train split the model was fitted on."""

from __future__ import annotations

import logging
from pathlib import Path

from rankflow.core.drift import DriftReference
from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)


def drift_reference(
    spec: DatasetSpec, train_data: str | Path, valid_data: str | Path
) -> DriftReference:
    """Profiles of the spec's categorical and continuous features over ``train_data``; the
    validation split (later rows) sets how often an id unseen in training is expected."""
    columns = [*spec.categorical_columns, *spec.continuous]
    table = _read(train_data, columns)
    holdout = _read(valid_data, list(spec.categorical_columns))
    reference = DriftReference.build(
        {c: table.column(c).to_numpy() for c in columns},
        categorical=spec.categorical_columns,
        continuous=spec.continuous,
        holdout={c: holdout.column(c).to_numpy() for c in spec.categorical_columns},
    )
    logger.info("drift profiles of %d inputs over %d training rows", len(columns), table.num_rows)
    return reference


def _read(directory: str | Path, columns: list[str]):  # -> pa.Table
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankflow.core.io import parquet_parts

    return pa.concat_tables([pq.read_table(p, columns=columns) for p in parquet_parts(directory)])
