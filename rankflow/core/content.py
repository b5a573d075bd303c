"""The sealed table of item content vectors: item id -> one text vector per item text column.

The content step writes it (every distinct train item's latest text, embedded once); the ranker
takes the vectors as frozen features; the endpoint looks a request's item up in it and embeds the
request's own text only for an item the table lacks (cold start). Stored without pickles: an
``.npz`` of plain arrays (ids as int64 or unicode) plus ``content.json`` naming the model.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import ConfigError, MissingArtifactError

TABLE_FILE = "content.npz"
META_FILE = "content.json"


@dataclass(frozen=True)
class ContentTable:
    """``vectors[column][i]`` is the vector of ``ids[i]``'s latest text in ``column``."""

    item_id: str
    ids: np.ndarray
    vectors: Mapping[str, np.ndarray]
    model_id: str
    model_sha256: str

    def __post_init__(self) -> None:
        for column, values in self.vectors.items():
            if values.shape[0] != len(self.ids):
                raise MissingArtifactError(
                    f"content table: {values.shape[0]} vectors of '{column}' for "
                    f"{len(self.ids)} ids"
                )

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.vectors)

    def positions(self, ids: Sequence | np.ndarray) -> np.ndarray:
        """Row of each id in the table, -1 where the table lacks it."""
        import pandas as pd

        index = pd.Index(self.ids)
        return np.asarray(index.get_indexer(np.asarray(ids, dtype=self.ids.dtype)), dtype=np.int64)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"ids": self.ids, **{f"vectors__{c}": v for c, v in self.vectors.items()}}
        with (directory / TABLE_FILE).open("wb") as handle:
            np.savez(handle, **arrays)
        meta = {
            "item_id": self.item_id,
            "columns": list(self.vectors),
            "model_id": self.model_id,
            "model_sha256": self.model_sha256,
            "items": len(self.ids),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ContentTable:
        meta_path, table_path = directory / META_FILE, directory / TABLE_FILE
        if not (meta_path.is_file() and table_path.is_file()):
            raise MissingArtifactError(f"no content table at {directory}")
        meta = json.loads(meta_path.read_text())
        with np.load(table_path, allow_pickle=False) as arrays:
            ids = arrays["ids"]
            vectors = {c: arrays[f"vectors__{c}"] for c in meta["columns"]}
        return cls(meta["item_id"], ids, vectors, meta["model_id"], meta["model_sha256"])


#: Distinct texts whose vectors :class:`ContentFeatures` keeps (at 32 floats a vector, ~20 MB).
CACHE_TEXTS = 100_000

#: Suffix of the model input holding a text column's vector.
VECTOR_SUFFIX = "_vector"


def vector_name(text_column: str) -> str:
    return text_column + VECTOR_SUFFIX


class ContentFeatures:
    """Per row, each text column's vector, the same way offline and online: an item text is
    looked up by the row's item id in the table and embedded from the row's own text only when
    the table lacks the item (cold start); a context text (a query) is always embedded. Distinct
    texts of a batch are embedded once, and the last ``cache_texts`` distinct texts' vectors are
    kept: real query logs repeat their head queries, and a forward pass is most of a request's
    time (a 64-row batch of queries took 135 ms to embed, scoring it ~7 ms). A vector depends on
    its text alone, so a cached one is the one a new pass would give, up to float32 rounding of
    another batching (~1e-7), far inside the serving skew check."""

    def __init__(
        self,
        table: ContentTable | None,
        encoder: object,
        *,
        item_id: str | None,
        item_text: Sequence[str],
        context_text: Sequence[str],
        cache_texts: int = CACHE_TEXTS,
    ) -> None:
        if cache_texts < 0:
            raise ConfigError(f"cache_texts must be >= 0, got {cache_texts}")
        self.table = table
        self.encoder = encoder
        self.item_id = item_id
        self.item_text = tuple(item_text)
        self.context_text = tuple(context_text)
        self.cache_texts = cache_texts
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.item_text + self.context_text

    def vectors(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A text column is one value a row (a list column would be values + offsets).
        rows = len(columns[self.columns[0]])
        out: dict[str, np.ndarray] = {}
        known = np.full(rows, -1, dtype=np.int64)
        if self.table is not None and self.item_id is not None and self.item_text:
            known = self.table.positions(columns[self.item_id])
        for column in self.columns:
            texts = np.asarray(columns[column], dtype=object).reshape(-1)
            vectors = np.zeros((rows, _dimension(self.table)), dtype=np.float32)
            todo = np.arange(rows)
            if column in self.item_text and self.table is not None:
                hit = known >= 0
                vectors[hit] = self.table.vectors[column][known[hit]]
                todo = np.flatnonzero(~hit)
            if len(todo):
                vectors[todo] = self._embed(texts[todo])
            out[vector_name(column)] = vectors
        return out

    def _embed(self, texts: np.ndarray) -> np.ndarray:
        keys = [t if isinstance(t, str) else "" for t in texts.tolist()]
        distinct = sorted(set(keys))
        cache = self._cache
        missing = [t for t in distinct if t not in cache]
        fresh = self.encoder.embed(missing) if missing else None  # type: ignore[attr-defined]
        found = {t: cache[t] for t in distinct if t in cache}
        for text in found:
            cache.move_to_end(text)
        if fresh is not None:
            found.update(zip(missing, fresh, strict=True))
            if self.cache_texts:
                # Own copies: a row view would keep its whole request's array alive.
                cache.update((t, v.copy()) for t, v in zip(missing, fresh, strict=True))
                while len(cache) > self.cache_texts:
                    cache.popitem(last=False)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def _dimension(table: ContentTable | None) -> int:
    from rankflow.core.text import DIMENSION

    if table is not None and table.vectors:
        return int(next(iter(table.vectors.values())).shape[1])
    return DIMENSION


def table_encoder(directory: Path, table: ContentTable) -> object:
    """The encoder that made ``table`` (at ``directory``), to embed what it lacks the same way:
    the language model, checked against the table's sha256, or the table's fitted TF-IDF; then
    the table's projection, when it has one."""
    from rankflow.core.text import PROJECTION_FILE, Projected

    encoder = _base_encoder(directory, table)
    if (directory / PROJECTION_FILE).is_file():
        return Projected.load(encoder, directory)
    return encoder


def _base_encoder(directory: Path, table: ContentTable) -> object:
    from rankflow.core.text import MODEL_ID, TFIDF_ID, EncoderFiles, HashedTfidf, TextEncoder

    if table.model_id == TFIDF_ID:
        tfidf = HashedTfidf.load(directory)
        if tfidf.sha256 != table.model_sha256:
            raise MissingArtifactError(f"the TF-IDF at {directory} is not the one of its table")
        return tfidf
    if table.model_id != MODEL_ID:
        raise MissingArtifactError(
            f"content table at {directory} was made by {table.model_id!r}; this build embeds "
            f"with {MODEL_ID!r}: rerun the content step"
        )
    bundled = directory / ENCODER_DIR
    files = (
        EncoderFiles.bundled(bundled)
        if (bundled / "model.onnx").is_file()
        else EncoderFiles.installed()
    )
    if files.sha256 != table.model_sha256:
        raise MissingArtifactError(
            f"content table at {directory} was embedded by another {MODEL_ID} file "
            f"(sha256 {table.model_sha256[:12]}, installed {files.sha256[:12]}): rerun the "
            "content step"
        )
    # Embeds a request's few texts between TensorFlow runs (see TextEncoder's spinning).
    return TextEncoder(files, spinning=False)


#: Where an exported version keeps the language model's files beside its content table, so it
#: embeds with the very bytes it was trained with wherever it is served.
ENCODER_DIR = "encoder"
#: The version manifest's key naming the text columns (see :func:`open_content`).
MANIFEST_KEY = "content"


def content_fields(spec: Any) -> dict[str, Any]:  # spec: rankflow.core.spec.DatasetSpec
    """What a version's manifest records for :func:`open_content`."""
    return {
        "item_id": spec.item_id,
        "item_text": list(spec.item_text),
        "context_text": list(spec.context_text),
    }


def open_content(directory: Path, fields: Mapping[str, Any]) -> ContentFeatures:
    """The content features of the table at ``directory`` for the columns ``fields`` names
    (:func:`content_fields`): the table, its encoder, and the text columns a request carries."""
    table = ContentTable.load(directory)
    return ContentFeatures(
        table,
        table_encoder(directory, table),
        item_id=fields["item_id"],
        item_text=fields["item_text"],
        context_text=fields["context_text"],
    )


def spec_content(spec: Any, directory: Path | None) -> ContentFeatures | None:
    """:func:`open_content` of the content step's table at ``directory`` for ``spec``'s text
    columns; None when the spec has none."""
    if not spec.text_columns:
        return None
    if directory is None:
        raise MissingArtifactError(
            f"text inputs {list(spec.text_columns)} need the content step's table"
        )
    return open_content(directory, content_fields(spec))
