"""The content step: every distinct train item's latest text embedded once into a sealed table,
the train split only (a cold item is not in it), cached between runs by text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.content.embed import ContentConfig, EmbeddingCache, embed_content, latest_texts
from components.data.prepare import prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import SyntheticConfig
from rankflow.core.content import ContentTable
from rankflow.core.integrity import verify
from rankflow.core.text import DIMENSION, EncoderFiles, Projected, TextEncoder

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def content_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("content")
    outputs = {s: root / s for s in ("train", "valid", "test")}
    prepared = prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=20_000, seed=4, content=True),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=root / "spec.yaml",
    )
    return prepared.spec, outputs


def test_the_table_holds_each_train_items_latest_text_vector(content_log, tmp_path):
    spec, splits = content_log
    table, stats = embed_content(spec, splits["train"], tmp_path / "table", config=ContentConfig())
    verify(tmp_path / "table")  # sealed
    train = pq.read_table(splits["train"] / "part-0.parquet").to_pandas()
    test = pq.read_table(splits["test"] / "part-0.parquet").to_pandas()
    assert list(table.ids) == sorted(train["ad_id"].unique())
    ids, texts = latest_texts(spec, splits["train"])
    # Each distinct text gets one forward pass, however many items share it.
    distinct = {t for t in texts["ad_title"] if t and t.strip()}
    assert stats.items == len(table.ids) == stats.texts
    assert stats.embedded == len(distinct)
    cold = set(test["ad_id"]) - set(train["ad_id"])
    assert cold and not cold & set(table.ids)
    assert table.positions([next(iter(cold))])[0] == -1
    encoder = TextEncoder(EncoderFiles.installed())
    sample = [0, len(ids) // 2, len(ids) - 1]
    whole = encoder.embed([texts["ad_title"][i] for i in sample])
    # Kept as the catalogue's principal axes: centred, projected, the first axis the widest.
    projection = Projected.load(encoder, tmp_path / "table")
    assert table.vectors["ad_title"].shape == (len(ids), ContentConfig().dimension)
    np.testing.assert_allclose(
        projection.components @ projection.components.T, np.eye(32), atol=1e-4
    )
    expected = (whole - projection.mean) @ projection.components.T
    np.testing.assert_allclose(table.vectors["ad_title"][sample], expected, atol=1e-5)
    spread = table.vectors["ad_title"].var(axis=0)
    assert spread[0] == spread.max() and spread[-1] < spread[0]
    again = ContentTable.load(tmp_path / "table")
    np.testing.assert_array_equal(again.ids, table.ids)
    np.testing.assert_array_equal(again.vectors["ad_title"], table.vectors["ad_title"])


def test_vectors_are_cached_between_runs_by_text(content_log, tmp_path):
    spec, splits = content_log
    config = ContentConfig(cache_dir=tmp_path / "cache")
    first, stats = embed_content(spec, splits["train"], tmp_path / "a", config=config)
    assert stats.embedded > 0 and stats.cached == 0
    second, again = embed_content(spec, splits["train"], tmp_path / "b", config=config)
    assert again.embedded == 0 and again.cached == stats.texts  # every item's text found
    np.testing.assert_array_equal(first.vectors["ad_title"], second.vectors["ad_title"])
    files = EncoderFiles.installed()
    assert len(EmbeddingCache(tmp_path / "cache", files.sha256).vectors) == stats.embedded


def test_the_component_seals_a_table_and_counts_what_it_embedded(content_log, artifact, tmp_path):
    from kfp import dsl

    from components.content.component import embed_content as component

    spec, splits = content_log
    spec.save(tmp_path / "spec.yaml")
    table = artifact(dsl.Model, "content_table")
    stats = artifact(dsl.Metrics, "content_stats")
    component.python_func(
        train_data=artifact(dsl.Dataset, "train", splits["train"]),
        dataset_spec=artifact(dsl.Artifact, "spec", tmp_path / "spec.yaml"),
        content_table=table,
        content_stats=stats,
        embedding_cache=str(tmp_path / "cache"),
    )
    verify(table.path)
    loaded = ContentTable.load(Path(table.path))
    assert stats.metadata["items"] == len(loaded.ids) > 0
    assert stats.metadata["embedded"] == stats.metadata["texts"]


def test_the_whole_vector_is_kept_without_a_dimension(content_log, tmp_path):
    spec, splits = content_log
    table, _ = embed_content(
        spec, splits["train"], tmp_path / "t", config=ContentConfig(dimension=None)
    )
    assert table.vectors["ad_title"].shape[1] == DIMENSION
    np.testing.assert_allclose(np.linalg.norm(table.vectors["ad_title"], axis=1), 1.0, rtol=1e-5)


def test_a_spec_without_item_text_gets_an_empty_table(content_log, tmp_path):
    from dataclasses import replace

    from components.content.embed import embed_or_empty

    spec, splits = content_log
    stats = embed_or_empty(
        replace(spec, item_text=()), splits["train"], tmp_path / "t", config=ContentConfig()
    )
    assert stats.items == 0
    assert ContentTable.load(tmp_path / "t").columns == ()


@pytest.mark.parametrize("encoder", ["minilm", "tfidf"])
def test_features_look_warm_items_up_and_embed_cold_items_and_queries(
    content_log, tmp_path, encoder
):
    """The way a row gets its vectors, offline and online alike: a train item's from the table
    (its latest train text), an item the table lacks from the row's own text, a query always
    from the row -- by the table's own encoder."""
    from rankflow.core.content import ContentFeatures, table_encoder, vector_name

    spec, splits = content_log
    table, _ = embed_content(
        spec, splits["train"], tmp_path / "t", config=ContentConfig(encoder=encoder)
    )
    model = table_encoder(tmp_path / "t", table)
    features = ContentFeatures(
        table, model, item_id=spec.item_id, item_text=spec.item_text, context_text=spec.context_text
    )
    test = pq.read_table(splits["test"] / "part-0.parquet").to_pandas().head(400)
    cold = ~test["ad_id"].isin(table.ids).to_numpy()
    assert cold.any() and not cold.all()
    # A warm item's request text is ignored: its table vector is what it was trained with.
    titles = test["ad_title"].to_numpy(dtype=object).copy()
    titles[~cold] = "something else entirely"
    columns = {
        "ad_id": test["ad_id"].to_numpy(),
        "ad_title": titles,
        "query": test["query"].to_numpy(dtype=object),
    }
    vectors = features.vectors(columns)
    title = vectors[vector_name("ad_title")]
    np.testing.assert_array_equal(
        title[~cold], table.vectors["ad_title"][table.positions(test["ad_id"][~cold])]
    )
    np.testing.assert_allclose(title[cold], model.embed(list(titles[cold])), atol=1e-6)
    query = vectors[vector_name("query")]
    searched = (test["query"] != "").to_numpy()
    assert searched.any() and (~searched).any()
    np.testing.assert_allclose(
        query[searched], model.embed(list(test["query"][searched])), atol=1e-6
    )
    np.testing.assert_array_equal(query[~searched], 0.0)  # no query, no content


class _Counting:
    """An encoder that counts the texts it is asked to embed (wrapping the real one)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.asked: list[str] = []

    def embed(self, texts, **kwargs):
        self.asked.extend(texts)
        return self.encoder.embed(texts, **kwargs)


def test_a_repeated_text_is_embedded_once_and_gets_the_same_vector(content_log, tmp_path):
    """Head queries repeat: the features keep the last texts' vectors (LRU), and a vector from
    the cache is the one a fresh pass gives."""
    from rankflow.core.content import ContentFeatures, table_encoder, vector_name

    spec, splits = content_log
    table, _ = embed_content(spec, splits["train"], tmp_path / "t", config=ContentConfig())
    counting = _Counting(table_encoder(tmp_path / "t", table))

    def features(cache_texts: int) -> ContentFeatures:
        return ContentFeatures(
            table,
            counting,
            item_id=spec.item_id,
            item_text=(),
            context_text=("query",),
            cache_texts=cache_texts,
        )

    cached, uncached = features(2), features(0)
    a, b, c = "running shoes", "cheap flights", "pizza delivery"

    def query(model: ContentFeatures, *texts: str) -> np.ndarray:
        return model.vectors({"query": np.array(texts, dtype=object)})[vector_name("query")]

    first = query(cached, a, b, a)
    assert sorted(counting.asked) == sorted([a, b])  # distinct texts of a batch once
    again = query(cached, b, a)
    assert len(counting.asked) == 2  # both cached
    np.testing.assert_array_equal(again, first[[1, 0]])
    query(cached, c)  # evicts the least recently used: a was used after b, so b goes
    assert list(cached._cache) == [a, c]
    counting.asked.clear()
    query(cached, b)
    assert counting.asked == [b]
    np.testing.assert_allclose(query(uncached, a, b), first[:2], atol=1e-6)
    assert uncached._cache == {}
    assert all(v.base is None for v in cached._cache.values())  # own copies, no batch kept
    from rankflow.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cache_texts must be >= 0, got -1"):
        features(-1)
