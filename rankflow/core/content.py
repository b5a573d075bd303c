"""The sealed table of item content vectors: item id -> one text vector per item text column.

The content step writes it (every distinct train item's latest text, embedded once); the ranker
takes the vectors as frozen features; the endpoint looks a request's item up in it and embeds the
request's own text only for an item the table lacks (cold start). Stored without pickles: an
``.npz`` of plain arrays (ids as int64 or unicode) plus ``content.json`` naming the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankflow.core.errors import MissingArtifactError

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
