"""The text encoder: the lock's ONNX graph and tokenizer, offline, checked, deterministic; the
documented truncation and empty-text conventions; one text's vector the same alone or batched."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rankflow.core.errors import MissingArtifactError
from rankflow.core.text import DIMENSION, MAX_TOKENS, EncoderFiles, TextEncoder

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(EncoderFiles.installed(), threads=2)


def test_vectors_are_unit_length_and_carry_meaning(encoder):
    vectors = encoder.embed(
        ["running shoes for the marathon", "sneakers for a sprint", "mortgage and savings loan"]
    )
    assert vectors.shape == (3, DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    related, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert related > unrelated + 0.2


def test_a_text_embeds_the_same_alone_or_in_any_batch(encoder):
    """What the endpoint embeds online (one text) is what the content step embedded (batches)."""
    rng = np.random.default_rng(0)
    words = [
        "garden",
        "lamp",
        "sofa",
        "hotel",
        "flight",
        "beach",
        "pizza",
        "recipe",
        "laptop",
        "gaming",
    ]
    texts = [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(150)]
    batched = encoder.embed(texts)
    alone = np.stack([encoder.embed([t])[0] for t in texts[:20]])
    np.testing.assert_allclose(batched[:20], alone, atol=1e-5)
    np.testing.assert_array_equal(encoder.embed(texts), batched)  # deterministic


def test_long_text_keeps_its_first_tokens_and_empty_text_has_no_content(encoder):
    long = " ".join(["marathon"] * 400 + ["mortgage"] * 400)
    assert encoder.tokens(long) == MAX_TOKENS
    head = " ".join(["marathon"] * (MAX_TOKENS - 2))  # [CLS] and [SEP] take two
    np.testing.assert_allclose(encoder.embed([long]), encoder.embed([head]), atol=1e-5)
    empty = encoder.embed(["", "   ", None, "shoes"])
    assert not empty[:3].any() and empty[3].any()


def test_a_changed_model_file_is_refused(tmp_path):
    files = EncoderFiles.installed()
    copy = tmp_path / "model.onnx"
    shutil.copyfile(files.model, copy)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01")
    with pytest.raises(MissingArtifactError, match=r"has sha256 .*, expected"):
        EncoderFiles(copy, files.tokenizer, files.sha256).verify()


def test_hashed_tfidf_weighs_rare_words_up_and_round_trips(tmp_path):
    from rankflow.core.text import TFIDF_DIMENSION, HashedTfidf

    items = ["hotel beach resort", "hotel flight", "hotel cruise island", None, ""]
    tfidf = HashedTfidf.fit(items)
    assert tfidf.dimension == TFIDF_DIMENSION
    vectors = tfidf.embed(["hotel", "cruise", "Hotel, HOTEL!", "", None, "hotel cruise"])
    assert vectors.shape == (6, TFIDF_DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[[0, 1, 2, 5]], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vectors[[3, 4]], 0.0)  # no words, no content
    np.testing.assert_allclose(vectors[2], vectors[0])  # case and punctuation don't count
    # "cruise" is in one item of three, "hotel" in all: the pair leans to the rarer word.
    both = vectors[5]
    assert both @ vectors[1] > both @ vectors[0]
    tfidf.save(tmp_path)
    again = HashedTfidf.load(tmp_path)
    assert again.sha256 == tfidf.sha256
    np.testing.assert_array_equal(again.embed(["hotel cruise"]), vectors[5:6])


def test_hashed_tfidf_without_its_file_is_refused(tmp_path):
    from rankflow.core.text import HashedTfidf

    with pytest.raises(MissingArtifactError, match=r"tfidf\.npz"):
        HashedTfidf.load(tmp_path)
