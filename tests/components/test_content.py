"""The content step: every distinct train item's latest text embedded once into a sealed table,
the train split only (a cold item is not in it), cached between runs by text."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.content.embed import ContentConfig, EmbeddingCache, embed_content, latest_texts
from components.data.prepare import prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import SyntheticConfig
from rankflow.core.content import ContentTable
from rankflow.core.integrity import verify
from rankflow.core.text import EncoderFiles, TextEncoder

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
    assert stats.items == len(table.ids) and stats.embedded == stats.texts
    cold = set(test["ad_id"]) - set(train["ad_id"])
    assert cold and not cold & set(table.ids)
    assert table.positions([next(iter(cold))])[0] == -1
    ids, texts = latest_texts(spec, splits["train"])
    encoder = TextEncoder(EncoderFiles.installed())
    sample = [0, len(ids) // 2, len(ids) - 1]
    expected = encoder.embed([texts["ad_title"][i] for i in sample])
    np.testing.assert_allclose(table.vectors["ad_title"][sample], expected, atol=1e-5)
    again = ContentTable.load(tmp_path / "table")
    np.testing.assert_array_equal(again.ids, table.ids)
    np.testing.assert_array_equal(again.vectors["ad_title"], table.vectors["ad_title"])


def test_vectors_are_cached_between_runs_by_text(content_log, tmp_path):
    spec, splits = content_log
    config = ContentConfig(cache_dir=tmp_path / "cache")
    first, stats = embed_content(spec, splits["train"], tmp_path / "a", config=config)
    assert stats.embedded > 0 and stats.cached == 0
    second, again = embed_content(spec, splits["train"], tmp_path / "b", config=config)
    assert again.embedded == 0 and again.cached == stats.embedded
    np.testing.assert_array_equal(first.vectors["ad_title"], second.vectors["ad_title"])
    files = EncoderFiles.installed()
    assert len(EmbeddingCache(tmp_path / "cache", files.sha256).vectors) == stats.embedded
