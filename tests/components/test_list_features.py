"""List columns through the feature step and the ranker: a history shares its scalar column's
vocabulary, lists keep their newest values, the compiled transform equals NVTabular's, and a
ranker over pooled list embeddings fits, saves, reloads and predicts the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.workflow import FeatureConfig, run_feature_engineering
from rankflow.core.spec import DatasetSpec
from tests.components.test_lists import SPEC, _prepare, _table, _write

MAX_LENGTH = 3


@pytest.fixture(scope="module")
def list_features(tmp_path_factory) -> dict[str, Path]:
    tmp_path = tmp_path_factory.mktemp("lists")
    columns = _table(rows=3000)
    history = columns["recent_ads"].to_pylist()
    history[0] = list(range(10))  # longer than the maximum
    columns["recent_ads"] = pa.array(history, pa.list_(pa.int64()))
    # Lists alone: text needs the content step's table (tests/serving/test_text_serving.py).
    lists_spec = SPEC.replace(", text: [title]", "").replace(", text: [query]", "")
    log, spec_path = _write(tmp_path, columns, lists_spec + f"lists_max_length: {MAX_LENGTH}\n")
    _, splits = _prepare(tmp_path, log, spec_path)
    spec = DatasetSpec.load(spec_path)
    out = {}
    for transform in ("auto", "nvtabular"):
        outputs = {s: tmp_path / transform / s for s in splits}
        run_feature_engineering(
            spec,
            splits,
            workflow_dir=tmp_path / transform / "workflow",
            outputs=outputs,
            config=FeatureConfig(transform=transform),
        )
        out[transform] = outputs["train"]
    return {
        "raw": splits["train"],
        "spec": spec_path,
        **out,
        "workflow": tmp_path / "auto" / "workflow",
    }


def test_lists_share_vocabularies_and_keep_their_newest_values(list_features):
    from merlin.io import Dataset
    from merlin.schema import Tags

    raw = pq.read_table(list_features["raw"] / "part-0.parquet").to_pandas()
    done = pd.read_parquet(list_features["auto"] / "part_0.parquet")
    # The row's ad and the same ad in a history get one code.
    # (Train rows whose id was dropped to OOV -- item-id dropout -- don't tell an id's code.)
    codes = {a: c for a, c in zip(raw["ad_id"], done["ad_id"], strict=True) if c != 2}
    for values, encoded in zip(raw["recent_ads"], done["recent_ads"], strict=True):
        kept = list(values)[-MAX_LENGTH:]
        assert len(encoded) == len(kept)
        for value, code in zip(kept, encoded, strict=True):
            if value in codes:
                assert code == codes[value]
    assert list(done["recent_ads"].iloc[0]) == [codes.get(v, 2) for v in (7, 8, 9)]
    schema = Dataset(str(list_features["auto"]), engine="parquet", cpu=True).schema
    history, ad = schema["recent_ads"], schema["ad_id"]
    assert Tags.LIST in history.tags and Tags.USER in history.tags
    assert schema.select_by_tag(Tags.ITEM_ID).column_names == ["ad_id"]
    assert history.int_domain.name == ad.int_domain.name  # one embedding table
    assert Tags.LIST in schema["keywords"].tags and Tags.ITEM in schema["keywords"].tags


def test_compiled_list_transform_equals_nvtabulars(list_features):
    compiled = pd.read_parquet(list_features["auto"] / "part_0.parquet")
    nvtabular = pd.read_parquet(list_features["nvtabular"] / "part_0.parquet")
    assert list(compiled.columns) == list(nvtabular.columns)
    for column in compiled.columns:
        for a, b in zip(compiled[column], nvtabular[column], strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), column


def test_ranker_pools_list_embeddings_and_reloads_the_same(list_features, tmp_path):
    import tensorflow as tf

    from components.training.ranker import RankerConfig, build_ranker
    from rankflow.core.artifacts import split_loader

    loader = split_loader(list_features["auto"], batch_size=256, shuffle=False)
    model = build_ranker(loader.schema, config=RankerConfig(epochs=1, cross_depth=1))
    model.compile(optimizer="adam")
    model.fit(loader, epochs=1, steps_per_epoch=2, verbose=0)
    inputs, _ = next(iter(loader))
    assert "recent_ads__values" in inputs and "recent_ads__offsets" in inputs
    before = model(inputs, training=False)
    model.save(str(tmp_path / "model"))
    reloaded = tf.keras.models.load_model(str(tmp_path / "model"))
    after = reloaded(inputs, training=False)
    np.testing.assert_allclose(np.asarray(before), np.asarray(after), rtol=1e-6)
    assert np.isfinite(np.asarray(before)).all()


def test_in_memory_batches_equal_merlins_dataloader(list_features):
    """The CPU feed (rankflow.core.batches) yields what mm.Loader yields, batch for batch."""
    import merlin.models.tf as mm
    from merlin.io import Dataset

    from rankflow.core.batches import in_memory_loader

    ours = in_memory_loader(list_features["auto"], batch_size=700, shuffle=False)
    merlin = mm.Loader(
        Dataset(str(list_features["auto"]), engine="parquet", cpu=True),
        batch_size=700,
        shuffle=False,
    )
    assert len(ours) == len(merlin)
    batches = 0
    for (inputs, targets), (want_inputs, want_targets) in zip(ours, merlin, strict=True):
        assert not isinstance(want_targets, dict)  # one target: a tensor, as Merlin's
        np.testing.assert_array_equal(targets.numpy(), want_targets.numpy())
        for got, want in ((inputs, want_inputs),):
            assert set(got) == set(want)
            for name in want:
                assert got[name].dtype == want[name].dtype, name
                np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), name)
        batches += 1
    assert batches == len(ours) > 1
    assert "recent_ads__offsets" in inputs


def test_shuffled_batches_visit_every_row_once_in_a_new_order_each_epoch(list_features):
    from rankflow.core.batches import in_memory_loader

    def epoch(loader) -> tuple[np.ndarray, np.ndarray]:
        ids, lengths = [], []
        for inputs, _ in loader:
            ids.append(inputs["user_id"].numpy())
            lengths.append(np.diff(inputs["recent_ads__offsets"].numpy()))
        loader.on_epoch_end()
        return np.concatenate(ids), np.concatenate(lengths)

    plain = epoch(in_memory_loader(list_features["auto"], batch_size=256, shuffle=False))
    loader = in_memory_loader(list_features["auto"], batch_size=256, shuffle=True, seed=3)
    first, second = epoch(loader), epoch(loader)
    again = epoch(in_memory_loader(list_features["auto"], batch_size=256, shuffle=True, seed=3))
    for ids, lengths in (first, second):
        assert sorted(zip(ids, lengths, strict=True)) == sorted(zip(*plain, strict=True))
    assert not np.array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0], again[0])  # seeded


def test_a_log_whose_first_history_is_empty_is_engineered(tmp_path):
    """Merlin types a column from a split's first row, and a time-ordered log starts with users
    who have no history yet: the list was "unknown" and the fit failed. Typed from parquet."""
    from merlin.io import Dataset

    from components.features.workflow import raw_dataset

    columns = _table(rows=1500, seed=3)
    history = columns["recent_ads"].to_pylist()
    history[0] = []
    columns["recent_ads"] = pa.array(history, pa.list_(pa.int64()))
    lists_spec = SPEC.replace(", text: [title]", "").replace(", text: [query]", "")
    log, spec_path = _write(tmp_path, columns, lists_spec)
    _, splits = _prepare(tmp_path, log, spec_path)
    merlins = Dataset(str(splits["train"]), engine="parquet", cpu=True).schema["recent_ads"]
    assert merlins.dtype.element_type.value == "unknown"  # what the fit used to get
    typed = raw_dataset(Path(splits["train"]), engine="parquet", cpu=True).schema["recent_ads"]
    assert typed.dtype.to_numpy == np.dtype("int64") and typed.is_list and typed.is_ragged
    outputs = {s: tmp_path / "features" / s for s in splits}
    run_feature_engineering(
        DatasetSpec.load(spec_path),
        splits,
        workflow_dir=tmp_path / "workflow",
        outputs=outputs,
        config=FeatureConfig(),
    )
    done = pd.read_parquet(outputs["train"] / "part_0.parquet")
    assert len(done["recent_ads"].iloc[0]) == 0 and done["recent_ads"].map(len).max() > 0
