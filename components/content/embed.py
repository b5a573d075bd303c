"""The content step: every distinct train item's latest text, embedded once into a sealed table.

Only the train split is read: an item first shown later is not in the table, and the ranker (in
evaluation as in serving) gets its vector from its own row's text through the same encoder --
cold start is measured the way it is served. Vectors are cached by the encoder's sha256 and the
text's sha256 between runs, so an unchanged catalogue costs no forward pass.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankflow.core.artifacts import atomic_dir
from rankflow.core.content import ContentTable
from rankflow.core.errors import ConfigError, DataValidationError
from rankflow.core.io import parquet_parts
from rankflow.core.spec import DatasetSpec
from rankflow.core.text import (
    BATCH,
    DIMENSION,
    MODEL_ID,
    TFIDF_ID,
    EncoderFiles,
    HashedTfidf,
    Projected,
    TextEncoder,
)

logger = logging.getLogger(__name__)


#: How text becomes vectors: the language model, or the bag-of-words baseline it is measured
#: against (hashed TF-IDF, fitted on the train items' texts).
ENCODERS = ("minilm", "tfidf")


@dataclass(frozen=True)
class ContentConfig:
    """``cache_dir``: where vectors outlive a run (None: no cache); ``threads``: ONNX Runtime's
    intra-op threads (None: its default, every core)."""

    batch: int = BATCH
    threads: int | None = None
    cache_dir: Path | None = None
    encoder: str = "minilm"
    #: Principal axes of the catalogue's text vectors kept (see :class:`Projected`); None keeps
    #: the encoder's whole vector.
    dimension: int | None = 32

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if self.dimension is not None and self.dimension < 1:
            raise ConfigError(f"dimension must be >= 1, got {self.dimension}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")


@dataclass(frozen=True)
class ContentStats:
    """``texts``: item texts in the table; ``embedded``: distinct texts given a forward pass;
    ``cached``: item texts whose vector came from the cache."""

    items: int
    texts: int
    embedded: int
    cached: int


def latest_texts(spec: DatasetSpec, train: Path) -> tuple[np.ndarray, dict[str, list[str | None]]]:
    """Distinct item ids of ``train`` (sorted) and, per item text column, each one's text on its
    latest row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if spec.item_id is None or not spec.item_text:
        raise ConfigError("the content step needs an item id and item text columns in the spec")
    columns = [spec.item_id, spec.timestamp, *spec.item_text]
    files = parquet_parts(train) if Path(train).is_dir() else [Path(train)]
    if not files:
        raise DataValidationError(f"no parquet files in {train}")
    frame = pa.concat_tables(pq.read_table(f, columns=columns) for f in files).to_pandas()
    frame = frame.sort_values(spec.timestamp, kind="stable")
    latest = frame.drop_duplicates(spec.item_id, keep="last").sort_values(spec.item_id)
    ids = latest[spec.item_id].to_numpy()
    texts = {
        c: [None if v is None or v != v else str(v) for v in latest[c].tolist()]
        for c in spec.item_text
    }
    return ids, texts


class EmbeddingCache:
    """text sha256 -> vector, one file per encoder (its sha256 names it)."""

    def __init__(self, directory: Path, model_sha256: str) -> None:
        self.path = directory / f"{MODEL_ID}-{model_sha256[:16]}.npz"
        self.vectors: dict[bytes, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as stored:
                keys, values = stored["keys"], stored["vectors"]
            self.vectors = {bytes(k): v for k, v in zip(keys, values, strict=True)}
        self.added = 0

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode()).digest()

    def save(self) -> None:
        if not self.added:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.vectors), dtype="S32")
        values = np.stack(list(self.vectors.values())).astype(np.float32)
        # Written beside and renamed: a killed run leaves the old cache, never half a file.
        handle, scratch = tempfile.mkstemp(dir=self.path.parent, suffix=".partial")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, keys=keys, vectors=values)
        os.replace(scratch, self.path)


def embed_content(
    spec: DatasetSpec, train: Path, out_dir: Path, *, config: ContentConfig
) -> tuple[ContentTable, ContentStats]:
    """Write the content table of ``train``'s items to ``out_dir`` (whole and sealed, or not)."""
    from tqdm.auto import tqdm

    ids, texts = latest_texts(spec, train)
    if config.encoder == "tfidf":
        return _embed_tfidf(spec, ids, texts, out_dir, config)
    files = EncoderFiles.installed()
    cache = EmbeddingCache(config.cache_dir, files.sha256) if config.cache_dir else None
    encoder: TextEncoder | None = None
    vectors: dict[str, np.ndarray] = {}
    embedded = cached = 0
    for column, values in texts.items():
        out = np.zeros((len(values), DIMENSION), dtype=np.float32)
        # Items sharing a text (a catalogue's repeated titles) share one forward pass.
        rows_of: dict[str, list[int]] = {}
        for i, text in enumerate(values):
            if text is None or not text.strip():
                continue  # no content: the zero vector
            hit = cache.vectors.get(cache.key(text)) if cache is not None else None
            if hit is not None:
                out[i] = hit
                cached += 1
            else:
                rows_of.setdefault(text, []).append(i)
        todo = list(rows_of)
        if todo:
            encoder = encoder or TextEncoder(files, threads=config.threads)
            bar = tqdm(total=len(todo), desc=f"embed-content {column}", unit="text")
            for start in range(0, len(todo), config.batch * 16):
                chunk = todo[start : start + config.batch * 16]
                for text, vector in zip(
                    chunk, encoder.embed(chunk, batch=config.batch), strict=True
                ):
                    out[rows_of[text]] = vector
                bar.update(len(chunk))
            bar.close()
            embedded += len(todo)
            if cache is not None:
                for text in todo:
                    cache.vectors[cache.key(text)] = out[rows_of[text][0]]
                cache.added += len(todo)
        vectors[column] = out
    table = _seal(spec, ids, vectors, config, out_dir, model=(MODEL_ID, files.sha256))
    if cache is not None:
        cache.save()
    stats = ContentStats(len(ids), sum(len(v) for v in texts.values()), embedded, cached)
    logger.info("content table: %s", stats)
    return table, stats


def _seal(
    spec: DatasetSpec,
    ids: np.ndarray,
    vectors: dict[str, np.ndarray],
    config: ContentConfig,
    out_dir: Path,
    *,
    model: tuple[str, str],
    fitted: HashedTfidf | None = None,
) -> ContentTable:
    """Project the vectors (unless ``config.dimension`` is None) and write the sealed table
    with what embeds its missing texts later: the projection, a fitted encoder."""
    projection = None
    if config.dimension is not None:
        stacked = np.concatenate(list(vectors.values()))
        projection = Projected.fit(None, stacked, config.dimension)
        vectors = {c: projection.project(v) for c, v in vectors.items()}
    table = ContentTable(str(spec.item_id), ids, vectors, *model)
    with atomic_dir(out_dir) as scratch:
        table.save(scratch)
        for part in (fitted, projection):
            if part is not None:
                part.save(scratch)
    return table


def _embed_tfidf(
    spec: DatasetSpec,
    ids: np.ndarray,
    texts: dict[str, list[str | None]],
    out_dir: Path,
    config: ContentConfig,
) -> tuple[ContentTable, ContentStats]:
    """The bag-of-words table: IDF fitted on every item text, saved beside the vectors."""
    encoder = HashedTfidf.fit([t for values in texts.values() for t in values])
    vectors = {column: encoder.embed(values) for column, values in texts.items()}
    table = _seal(
        spec, ids, vectors, config, out_dir, model=(TFIDF_ID, encoder.sha256), fitted=encoder
    )
    total = sum(len(v) for v in texts.values())
    stats = ContentStats(len(ids), total, total, 0)
    logger.info("content table (hashed TF-IDF): %s", stats)
    return table, stats


def embed_or_empty(
    spec: DatasetSpec, train: Path, out_dir: Path, *, config: ContentConfig
) -> ContentStats:
    """:func:`embed_content`, or, when the spec names no item text, an empty table (the feature
    step then embeds only context text, if any)."""
    if spec.item_id is not None and spec.item_text:
        return embed_content(spec, train, out_dir, config=config)[1]
    files = EncoderFiles.installed()
    table = ContentTable(
        str(spec.item_id or ""), np.zeros(0, dtype=np.int64), {}, MODEL_ID, files.sha256
    )
    with atomic_dir(out_dir) as scratch:
        table.save(scratch)
    return ContentStats(0, 0, 0, 0)
