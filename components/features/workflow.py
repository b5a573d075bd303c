"""NVTabular feature engineering built from the dataset spec.

The fitted workflow is the one transform that both training and serving run, and the Merlin schema
it emits (with Tags) is the contract the training and evaluation steps read their roles from.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rankflow.core import merlin_fixes
from rankflow.core.artifacts import atomic_dir
from rankflow.core.device import gpu_available
from rankflow.core.errors import ConfigError, DataValidationError, MissingArtifactError
from rankflow.core.spec import CLIP_QUANTILES, DEFAULT_BINS, DatasetSpec

if TYPE_CHECKING:
    import nvtabular as nvt

logger = logging.getLogger(__name__)

TRANSFORMS = ("auto", "nvtabular")


@dataclass(frozen=True)
class FeatureConfig:
    """Execution options of the feature step.

    ``dask_workers`` > 1 runs fit and transform on a local Dask cluster of that many workers;
    ``part_size`` bounds the memory of each partition. ``transform`` picks how the splits are
    transformed after NVTabular fits: "auto" uses the compiled workflow (numpy lookups equal to
    NVTabular's output, see :mod:`rankflow.core.compiled`) on the CPU when it applies,
    NVTabular otherwise;
    "nvtabular" always uses NVTabular's own transform.
    """

    dask_workers: int = 1
    part_size: str = "64MB"
    transform: str = "auto"
    #: Rows per batch of the compiled transform (bounds its memory).
    batch_rows: int = 1 << 20
    #: Share of train rows whose item id is replaced by the out-of-vocabulary index. Every
    #: item seen in train has a vocabulary entry, so without this the OOV embedding -- the one
    #: an item new at serving time gets -- is never trained, and the model never learns to
    #: rank such an item on its other features and its content (ID dropout, as in DropoutNet).
    item_id_dropout: float = 0.05
    seed: int = 7

    def __post_init__(self) -> None:
        if self.dask_workers < 1:
            raise ConfigError(f"dask_workers must be >= 1, got {self.dask_workers}")
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be >= 1, got {self.batch_rows}")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ConfigError(f"item_id_dropout must be in [0, 1), got {self.item_id_dropout}")


#: Custom schema tag of the per-row weight column (a TARGET-tagged column that is no task).
WEIGHT_TAG = "rankflow_row_weight"


def continuous_bounds(spec: DatasetSpec, train: Path) -> dict[str, tuple[float, ...]]:
    """Fixed bounds of every clip / bucketize transform, from the train split, before the fit.

    clip -> (min, max); bucketize -> its increasing inner boundaries. Explicit spec values win.
    """
    import pyarrow.dataset as ds

    wanted = {
        c: t for c, t in spec.continuous_transforms.items() if t.kind in ("clip", "bucketize")
    }
    if not wanted:
        return {}
    table = ds.dataset(str(train), format="parquet").to_table(columns=list(wanted))
    bounds: dict[str, tuple[float, ...]] = {}
    for column, transform in wanted.items():
        values = np.asarray(table.column(column).to_numpy(), dtype=np.float64)
        values = values[np.isfinite(values)]
        if transform.kind == "clip":
            quantiles = np.quantile(values, CLIP_QUANTILES) if values.size else np.zeros(2)
            lo = transform.min if transform.min is not None else float(quantiles[0])
            hi = transform.max if transform.max is not None else float(quantiles[1])
            bounds[column] = (lo, max(hi, lo))
        elif transform.bounds is not None:
            bounds[column] = tuple(transform.bounds)
        else:
            bins = transform.bins or DEFAULT_BINS
            inner = (
                np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
                if values.size
                else np.zeros(0)
            )
            bounds[column] = tuple(float(b) for b in np.unique(inner))
            if not bounds[column]:
                raise DataValidationError(
                    f"continuous column '{column}' has a single value in train: nothing to "
                    "bucketize"
                )
    return bounds


def build_workflow(
    spec: DatasetSpec,
    *,
    categories_dir: str | Path,
    bounds: Mapping[str, tuple[float, ...]] | None = None,
) -> nvt.Workflow:
    """An unfitted workflow: categorify ids and categoricals, shape and normalize continuous
    columns, tag each task's target by kind (renamed to the task's name).

    ``bounds`` holds the clip / bucketize bounds of :func:`continuous_bounds`.
    """
    import nvtabular as nvt
    from merlin.schema import Tags
    from nvtabular import ops

    hashed = dict(spec.categorify.hash_buckets)
    bounds = dict(bounds or {})

    def vocabulary():  # one vocabulary file per column
        return ops.Categorify(
            freq_threshold=spec.categorify.freq_threshold,
            out_path=str(categories_dir),
            dtype="int32",
        )

    def categorical(columns: tuple[str, ...], *tags: Tags):
        vocab = [c for c in columns if c not in hashed]
        hashing = [c for c in columns if c in hashed]
        nodes = []
        if vocab:
            nodes.append(vocab >> vocabulary())
        if hashing:
            nodes.append(hashing >> ops.HashBucket({c: hashed[c] for c in hashing}))
        node = nodes[0] if len(nodes) == 1 else nodes[0] + nodes[1]
        return node >> ops.AddTags([*tags])

    # A scalar column that lists are declared of is encoded jointly with them: one vocabulary,
    # so a history of ad ids and the candidate ad share codes (and Merlin one embedding table).
    shared = {e.of for e in spec.list_columns if e.of is not None}
    groups = [
        (() if spec.user_id is None else (spec.user_id,), (Tags.USER, Tags.ID, Tags.USER_ID)),
        (spec.user_categorical, (Tags.USER,)),
        (() if spec.item_id is None else (spec.item_id,), (Tags.ITEM, Tags.ID, Tags.ITEM_ID)),
        (spec.item_categorical, (Tags.ITEM,)),
        (spec.context_categorical, (Tags.CONTEXT,)),
    ]
    nodes = []
    for columns, tags in groups:
        own = tuple(c for c in columns if c not in shared)
        if own:
            nodes.append(categorical(own, *tags))
    scalar_tags = {c: tags for columns, tags in groups for c in columns}
    list_tags = {
        **{e.column: (Tags.USER,) for e in spec.user_lists},
        **{e.column: (Tags.ITEM,) for e in spec.item_lists},
        **{e.column: (Tags.CONTEXT,) for e in spec.context_lists},
    }

    def newest(node):  # a list ordered oldest to newest keeps its newest values
        return node >> ops.ListSlice(-spec.lists_max_length)

    for of in sorted(shared):
        members = [e.column for e in spec.list_columns if e.of == of]
        joint = [[of, *members]] >> ops.Categorify(
            freq_threshold=spec.categorify.freq_threshold,
            out_path=str(categories_dir),
            dtype="int32",
            encode_type="joint",
        )
        nodes.append(joint[[of]] >> ops.AddTags([*scalar_tags[of]]))
        for column in members:
            nodes.append(newest(joint[[column]]) >> ops.AddTags([*list_tags[column]]))
    for entry in spec.list_columns:
        if entry.of is None:
            node = newest([entry.column] >> vocabulary())
            nodes.append(node >> ops.AddTags([*list_tags[entry.column]]))
    transforms = spec.continuous_transforms
    plain = [c for c in spec.continuous if c not in transforms]
    # Nulls take the train median: filled with 0 and z-scored, MovieLens' unknown release years
    # landed at -135 sigma, and the model's output there swamped the rating head's calibration.
    if plain:
        nodes.append(plain >> ops.FillMedian() >> ops.Normalize() >> ops.AddTags([Tags.CONTINUOUS]))
    for column, transform in transforms.items():
        node = [column] >> ops.FillMedian()
        if transform.kind == "log":
            node = node >> ops.Clip(min_value=0) >> ops.LogOp()
        elif transform.kind == "clip":
            low, high = bounds[column]
            node = node >> ops.Clip(min_value=low, max_value=high)
        else:
            # Bucket ids through a vocabulary: an embedding table with a known size.
            node = node >> ops.Bucketize({column: list(bounds[column])}) >> vocabulary()
            nodes.append(node >> ops.AddTags([Tags.CONTEXT]))
            continue
        nodes.append(node >> ops.Normalize() >> ops.AddTags([Tags.CONTINUOUS]))
    for task in spec.tasks:
        node = [task.column]
        if task.name != task.column:
            node = node >> ops.Rename(name=task.name)
        if task.transform == "log1p":
            node = node >> ops.LogOp()
        kind = Tags.BINARY_CLASSIFICATION if task.kind == "binary" else Tags.REGRESSION
        nodes.append(node >> ops.AddTags([kind, Tags.TARGET]))
    if spec.weight_column is not None:
        nodes.append([spec.weight_column] >> ops.AddTags([Tags.TARGET, WEIGHT_TAG]))
    output = nodes[0]
    for node in nodes[1:]:
        output = output + node
    return nvt.Workflow(output)


@contextmanager
def _maybe_cluster(config: FeatureConfig, *, gpu: bool) -> Iterator[None]:
    """A local Dask cluster of ``dask_workers`` workers: one per GPU with dask-cuda, processes on
    the CPU. Merlin picks its client up as the global Dask client."""
    if config.dask_workers == 1:
        yield
        return
    from distributed import Client

    if gpu:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(n_workers=config.dask_workers, dashboard_address=None)
    else:
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=config.dask_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
    with cluster, Client(cluster):
        yield


def run_feature_engineering(
    spec: DatasetSpec,
    splits: Mapping[str, Path],
    *,
    workflow_dir: Path,
    outputs: Mapping[str, Path],
    config: FeatureConfig,
    content: Path | None = None,
) -> dict[str, int]:
    """Fit on ``splits['train']`` only, transform every split into ``outputs[split]``.

    With text columns in the spec every split also gets one vector per text column and row
    (``<column>_vector``, tagged EMBEDDING): item text from the content table at ``content`` (the
    content step's), embedded from the row's own text where the table lacks the item, context
    text always embedded (:class:`rankflow.core.content.ContentFeatures`).

    Each output directory holds parquet parts plus the Merlin ``schema.pbtxt``; the fitted
    workflow (with its category vocabularies) is saved to ``workflow_dir``. Returns the
    cardinality of every categorical feature.
    """
    if "train" not in splits:
        raise MissingArtifactError("feature engineering needs a 'train' split to fit on")
    cpu = not gpu_available()
    if cpu:
        merlin_fixes.apply()
    logger.info(
        "feature engineering on %s, %d Dask worker(s)",
        "CPU" if cpu else "GPU (cudf)",
        config.dask_workers,
    )
    engine_kwargs = {"engine": "parquet", "part_size": config.part_size, "cpu": cpu}

    with (
        _maybe_cluster(config, gpu=not cpu),
        tempfile.TemporaryDirectory(prefix="rankflow-categories-") as categories_dir,
    ):
        # Before the fit: a drifted split fails in seconds, not after the longest part.
        # Text is embedded by the content step, not transformed here.
        inputs = [c for c in spec.feature_columns if c not in spec.text_columns]
        _check_split_schemas(splits, [*inputs, *spec.label_columns])
        workflow = build_workflow(
            spec,
            categories_dir=categories_dir,
            bounds=continuous_bounds(spec, Path(splits["train"])),
        )
        # The workflow selects its own columns: timestamps and true probabilities never enter it.
        workflow.fit(raw_dataset(Path(splits["train"]), **engine_kwargs))
        cardinalities = _cardinalities(spec, workflow)
        _check_vocabularies(spec, cardinalities)
        compiled = _compiled_for_transform(workflow, cpu=cpu, config=config)
        features = content_features(spec, content) if spec.text_columns else None
        for name, source in splits.items():
            with atomic_dir(outputs[name]) as scratch:
                if compiled is not None:
                    _transform_compiled(compiled, workflow, Path(source), scratch, config)
                else:
                    transformed = workflow.transform(raw_dataset(Path(source), **engine_kwargs))
                    # No shuffle: evaluation aligns processed rows with the raw split row by row.
                    transformed.to_parquet(str(scratch), shuffle=None, output_files=1)
                dropout = _dropped_ids(spec, config) if name == "train" else {}
                if features is not None or dropout:
                    _finish_split(
                        scratch,
                        workflow,
                        vectors=_content_vectors(features, spec, Path(source)) if features else {},
                        item_columns=spec.item_text,
                        dropout=dropout,
                        seed=config.seed,
                    )
        with atomic_dir(workflow_dir) as scratch:
            workflow.save(str(scratch))
    return cardinalities


def raw_dataset(path: Path, **kwargs: object):  # -> merlin.io.Dataset
    """Merlin's Dataset over a raw split, its list columns typed from the parquet schema.

    Merlin infers a column's dtype from the split's first row, and a list that is empty there
    has none: "unknown", which the fit and the compiled transform then fail on. A time-ordered
    log starts with users who have no history yet, so its first row's histories are empty
    (a 400k-row synthetic log with content, seed 11, failed so).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from merlin.io import Dataset
    from merlin.schema import Schema

    from rankflow.core.io import parquet_parts

    dataset = Dataset(str(path), **kwargs)
    parts = parquet_parts(path) if path.is_dir() else [path]
    arrow = pq.read_schema(parts[0]) if parts else None
    columns = []
    for column in dataset.schema:
        kind = arrow.field(column.name).type if arrow is not None else None
        if (
            column.dtype.element_type.value == "unknown"
            and kind is not None
            and (pa.types.is_list(kind) or pa.types.is_large_list(kind))
        ):
            dtype = np.dtype(kind.value_type.to_pandas_dtype())
            column = column.with_dtype(dtype, is_list=True, is_ragged=True)
        columns.append(column)
    dataset.schema = Schema(columns)
    return dataset


def content_features(spec: DatasetSpec, content: Path | None):  # -> ContentFeatures
    """The vectors of ``spec``'s text columns: the content step's table at ``content`` (sealed)
    and its encoder; with context text only and no table, the language model alone."""
    from rankflow.core.content import ContentFeatures, content_fields, open_content
    from rankflow.core.integrity import verify
    from rankflow.core.text import EncoderFiles, TextEncoder

    if content is not None:
        verify(content)
        return open_content(content, content_fields(spec))
    if spec.item_text:
        raise MissingArtifactError(
            f"item text {list(spec.item_text)} needs the content step's table (content=...)"
        )
    return ContentFeatures(
        None,
        TextEncoder(EncoderFiles.installed()),
        item_id=spec.item_id,
        item_text=spec.item_text,
        context_text=spec.context_text,
    )


def _dropped_ids(spec: DatasetSpec, config: FeatureConfig) -> dict[str, float]:
    """The train split's id columns to drop to OOV, with their shares (hashed ids have no OOV)."""
    item = spec.item_id
    if item is None or config.item_id_dropout == 0 or item in spec.categorify.hash_buckets:
        return {}
    return {item: config.item_id_dropout}


def _content_vectors(features, spec: DatasetSpec, source: Path) -> dict[str, np.ndarray]:
    """Each text column's vectors for the raw split at ``source``, row by row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankflow.core.io import parquet_parts

    raw_files = parquet_parts(source) if source.is_dir() else [source]
    needed = [c for c in (spec.item_id, *features.columns) if c is not None]
    raw = pa.concat_tables(pq.read_table(f, columns=needed) for f in raw_files)
    from rankflow.core.content import vector_name

    vectors = features.vectors({c: raw.column(c).to_numpy() for c in needed})
    return {c: vectors[vector_name(c)] for c in features.columns}


def _finish_split(
    out: Path,
    workflow,
    *,
    vectors: Mapping[str, np.ndarray],
    item_columns: tuple[str, ...],
    dropout: Mapping[str, float],
    seed: int,
) -> None:
    """Rewrite the processed split at ``out`` (one part, row-aligned with its raw split): append
    each text column's vector (``<column>_vector``, tagged EMBEDDING) to it and its Merlin
    schema, and set a seeded ``share`` of each ``dropout`` column's codes to the OOV index."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from merlin.schema import ColumnSchema, Schema, Tags
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    from rankflow.core.compiled import OOV_INDEX
    from rankflow.core.content import vector_name
    from rankflow.core.io import parquet_parts

    parts = parquet_parts(out)
    if len(parts) != 1:
        raise DataValidationError(f"expected one processed part in {out}, found {len(parts)}")
    table = pq.read_table(parts[0])
    rng = np.random.default_rng([seed, 0x1D])
    for column, share in dropout.items():
        codes = table.column(column).to_numpy().copy()
        codes[rng.random(len(codes)) < share] = OOV_INDEX
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), pa.array(codes))
    added = []
    for column, values in vectors.items():
        name = vector_name(column)
        if len(values) != table.num_rows:
            raise DataValidationError(
                f"processed {out} has {table.num_rows} rows, its vectors {len(values)}"
            )
        flat = pa.array(values.reshape(-1), pa.float32())
        table = table.append_column(name, pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        role = Tags.ITEM if column in item_columns else Tags.CONTEXT
        added.append(
            ColumnSchema(
                name, tags=[Tags.EMBEDDING, role], dtype="float32", is_list=True
            ).with_shape((None, values.shape[1]))
        )
    pq.write_table(table, parts[0])
    if added:
        schema = Schema([*workflow.output_schema, *added])
        metadata = TensorflowMetadata.from_merlin_schema(schema)
        metadata.to_proto_text_file(str(out))
        (out / ".merlin").mkdir(exist_ok=True)
        metadata.to_json_file(str(out / ".merlin"))


def _cardinalities(spec: DatasetSpec, workflow: nvt.Workflow) -> dict[str, int]:
    """Embedding-table rows of every categorical output (special indices included)."""
    cardinalities = {}
    for column in workflow.output_schema:
        domain = column.int_domain
        bucketized = [c for c, t in spec.continuous_transforms.items() if t.kind == "bucketize"]
        encoded = (*spec.categorical_columns, *spec.list_names, *bucketized)
        if domain is not None and column.name in encoded:
            cardinalities[column.name] = int(domain.max) + 1
    return cardinalities


def _check_vocabularies(spec: DatasetSpec, cardinalities: Mapping[str, int]) -> None:
    limit = spec.categorify.max_vocabulary
    hashed = spec.categorify.hash_buckets
    too_big = {c: n for c, n in cardinalities.items() if c not in hashed and n > limit}
    if too_big:
        column, size = max(too_big.items(), key=lambda item: item[1])
        raise DataValidationError(
            f"categorical column(s) {sorted(too_big)} have more distinct train values than "
            f"categorify.max_vocabulary={limit:,} ('{column}': {size:,}); an embedding table "
            f"that size would not fit: hash it (categorify.hash_buckets: {{{column}: {limit}}}), "
            "raise freq_threshold, or raise max_vocabulary"
        )


def _check_split_schemas(splits: Mapping[str, Path], columns: list[str]) -> None:
    """Every split must give the workflow's input columns the types the train split had: a
    column that drifted (ids as strings in one split, ints in another) would be encoded as
    out-of-vocabulary without a word."""
    import pyarrow.dataset as ds

    schemas = {
        name: ds.dataset(str(path), format="parquet").schema for name, path in splits.items()
    }
    reference = schemas["train"]
    for name, schema in schemas.items():
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataValidationError(
                f"split '{name}' lacks the workflow's input column(s) {missing}"
            )
        drifted = {
            c: (str(reference.field(c).type), str(schema.field(c).type))
            for c in columns
            if not schema.field(c).type.equals(reference.field(c).type)
        }
        if drifted:
            raise DataValidationError(
                f"split '{name}' drifted from train's schema: {drifted} (train type, its type)"
            )


def _compiled_for_transform(workflow: nvt.Workflow, *, cpu: bool, config: FeatureConfig):
    """The compiled workflow when it may transform the splits, else None (NVTabular does).

    On the GPU cudf is the fast path; on the CPU NVTabular runs pandas merges per partition and
    the compiled lookups produce the same output several times faster. A workflow whose outputs
    depend on row position (HashBucket hashes the row index too) stays with NVTabular, whose
    partitioning defines those positions.
    """
    from rankflow.core.compiled import NotCompilable, compile_workflow

    if config.transform == "nvtabular" or not cpu or config.dask_workers > 1:
        return None
    try:
        compiled = compile_workflow(workflow)
    except NotCompilable as err:
        logger.info("transforming with NVTabular: %s", err)
        return None
    return compiled if compiled.rows_independent else None


def _transform_compiled(compiled, workflow: nvt.Workflow, source: Path, out: Path, config) -> int:
    """Transform the parquet at ``source`` into ``out``: one ``part_0.parquet`` in input row
    order plus the Merlin schema files ``Dataset.to_parquet`` writes. Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    from rankflow.core.compiled import Ragged

    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise MissingArtifactError(f"no parquet files in {source}")
    names = workflow.output_schema.column_names
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    writer = None
    try:
        for path in files:
            reader = pq.ParquetFile(path)
            for batch in reader.iter_batches(
                batch_size=config.batch_rows, columns=list(compiled.inputs)
            ):
                # Through pandas, as NVTabular reads: same null and dtype conventions; lists
                # straight from Arrow (pandas would make an object array per row).
                scalars = [c for c in compiled.inputs if c not in compiled.lists]
                frame = batch.select(scalars).to_pandas()
                raw = {c: Ragged.from_arrow(batch.column(c)) for c in compiled.lists}
                raw.update({c: frame[c].to_numpy() for c in scalars})
                columns = compiled.transform(raw)
                table = pa.table(
                    {
                        c: columns[c].to_arrow() if isinstance(columns[c], Ragged) else columns[c]
                        for c in names
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(out / "part_0.parquet", table.schema)
                writer.write_table(table)
                rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise DataValidationError(f"{source} has no rows to transform")
    metadata = TensorflowMetadata.from_merlin_schema(workflow.output_schema)
    metadata.to_proto_text_file(str(out))
    (out / ".merlin").mkdir(exist_ok=True)
    metadata.to_json_file(str(out / ".merlin"))
    logger.info("transformed %d rows of %s (compiled workflow)", rows, source)
    return rows
