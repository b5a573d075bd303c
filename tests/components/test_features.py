from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from components.features.component import engineer_features
from components.features.workflow import FeatureConfig, build_workflow, run_feature_engineering
from rankflow.core.errors import ConfigError
from rankflow.core.spec import DatasetSpec
from tests.conftest import pipeline_defaults


def _schema(path: Path):
    from merlin.io import Dataset

    return Dataset(str(path), engine="parquet", cpu=True).schema


def test_schema_carries_roles_as_tags(features, prepared):
    from merlin.schema import Tags

    spec = DatasetSpec.load(prepared["spec"])
    schema = _schema(features["train"])
    assert schema.select_by_tag(Tags.USER_ID).column_names == [spec.user_id]
    assert schema.select_by_tag(Tags.ITEM_ID).column_names == [spec.item_id]
    assert set(schema.select_by_tag(Tags.CONTEXT).column_names) == set(spec.context_categorical)
    assert set(schema.select_by_tag(Tags.CONTINUOUS).column_names) == set(spec.continuous)
    targets = schema.select_by_tag(Tags.TARGET)
    assert targets.column_names == list(spec.task_names)
    for task in spec.tasks:
        kind = Tags.BINARY_CLASSIFICATION if task.kind == "binary" else Tags.REGRESSION
        assert kind in schema[task.name].tags
    # Timestamps and truths never become features.
    assert spec.timestamp not in schema.column_names
    assert not set(spec.truth_columns) & set(schema.column_names)


def test_transform_keeps_rows_order_and_fills_missing(features, prepared):
    raw = pq.read_table(prepared["test"]).to_pandas()
    processed = pd.read_parquet(features["test"] / "part_0.parquet")
    assert len(processed) == len(raw)
    assert (processed["click"].to_numpy() == raw["click"].to_numpy()).all()
    assert raw["user_activity"].isna().any()
    assert not processed["user_activity"].isna().any()
    # A null takes train's median (as z-score), not 0: filled with 0, a column far from 0 (a
    # release year) put its nulls at -135 sigma, where the model's outputs explode.
    filled = processed["user_activity"][raw["user_activity"].isna().to_numpy()]
    train_raw = pq.read_table(prepared["train"]).to_pandas()["user_activity"]
    z_median = (train_raw.median() - train_raw.mean()) / train_raw.std()
    assert filled.nunique() == 1
    assert filled.iloc[0] == pytest.approx(z_median, abs=0.05)
    # Normalized on train statistics: train is centred, the other splits roughly so.
    train = pd.read_parquet(features["train"] / "part_0.parquet")
    assert train["bid"].mean() == pytest.approx(0.0, abs=1e-6)


def test_fit_uses_train_only(tmp_path, prepared):
    """An ad id that occurs only in the test split maps to the out-of-vocabulary index."""
    spec = DatasetSpec.load(prepared["spec"])
    test = pq.read_table(prepared["test"]).to_pandas()
    test.loc[:, spec.item_id] = 10_000_000  # never seen in train
    test.to_parquet(tmp_path / "test.parquet", index=False)
    outputs = {n: tmp_path / f"f_{n}" for n in ("train", "test")}
    run_feature_engineering(
        spec,
        {"train": prepared["train"], "test": tmp_path / "test.parquet"},
        workflow_dir=tmp_path / "wf",
        outputs=outputs,
        config=FeatureConfig(),
    )
    encoded = pd.read_parquet(outputs["test"] / "part_0.parquet")[spec.item_id]
    assert encoded.nunique() == 1
    assert encoded.iloc[0] <= 2  # 0 padding, 1 null, 2 out-of-vocabulary


def test_hash_buckets_bound_cardinality(tmp_path, prepared):
    raw = DatasetSpec.load(prepared["spec"]).to_dict()
    raw["categorify"]["hash_buckets"] = {"user_id": 32}
    spec = DatasetSpec.from_dict(raw)
    outputs = {"train": tmp_path / "f_train"}
    cardinalities = run_feature_engineering(
        spec,
        {"train": prepared["train"]},
        workflow_dir=tmp_path / "wf",
        outputs=outputs,
        config=FeatureConfig(),
    )
    assert cardinalities["user_id"] == 33
    assert pd.read_parquet(outputs["train"] / "part_0.parquet")["user_id"].max() < 32


def test_gigantic_vocabulary_is_refused_before_anything_is_written(tmp_path, prepared):
    raw = DatasetSpec.load(prepared["spec"]).to_dict()
    raw["categorify"]["max_vocabulary"] = 150

    def fit_train():
        return run_feature_engineering(
            DatasetSpec.from_dict(raw),
            {"train": prepared["train"]},
            workflow_dir=tmp_path / "wf",
            outputs={"train": tmp_path / "f_train"},
            config=FeatureConfig(),
        )

    with pytest.raises(ValueError, match=r"\['user_id'\] have more distinct train values than "):
        fit_train()
    assert list(tmp_path.iterdir()) == []
    # The advice works: hashed, the same column passes.
    raw["categorify"]["hash_buckets"] = {"user_id": 150}
    assert fit_train()["user_id"] == 151


def test_split_whose_schema_drifted_from_train_is_refused(tmp_path, prepared):
    """Ids that arrive as strings in one split would all be out-of-vocabulary."""
    test = pq.read_table(prepared["test"]).to_pandas()
    test["ad_id"] = test["ad_id"].astype(str)
    test.to_parquet(tmp_path / "test.parquet", index=False)
    with pytest.raises(ValueError, match=r"split 'test' drifted.*'ad_id': \('int64', 'string'\)"):
        run_feature_engineering(
            DatasetSpec.load(prepared["spec"]),
            {"train": prepared["train"], "test": tmp_path / "test.parquet"},
            workflow_dir=tmp_path / "wf",
            outputs={n: tmp_path / f"f_{n}" for n in ("train", "test")},
            config=FeatureConfig(),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.parquet"]


def test_categorify_never_writes_into_the_working_directory(tmp_path, prepared, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_feature_engineering(
        DatasetSpec.load(prepared["spec"]),
        {"train": prepared["train"]},
        workflow_dir=tmp_path / "wf",
        outputs={"train": tmp_path / "f_train"},
        config=FeatureConfig(),
    )
    assert os.listdir(cwd) == []
    assert (tmp_path / "wf" / "categories").is_dir()


def test_dask_local_cluster_gives_the_same_features(tmp_path, prepared, features):
    outputs = {"train": tmp_path / "f_train"}
    run_feature_engineering(
        DatasetSpec.load(prepared["spec"]),
        {"train": prepared["train"]},
        workflow_dir=tmp_path / "wf",
        outputs=outputs,
        config=FeatureConfig(dask_workers=2),
    )
    single = pd.read_parquet(features["train"] / "part_0.parquet")
    distributed = pd.concat(
        [pd.read_parquet(p) for p in sorted(outputs["train"].glob("*.parquet"))], ignore_index=True
    )
    pd.testing.assert_frame_equal(single, distributed, check_dtype=False)


def test_saved_workflow_reloads_and_transforms_identically(features, prepared):
    import nvtabular as nvt
    from merlin.io import Dataset

    workflow = nvt.Workflow.load(str(features["workflow"]))
    again = (
        workflow.transform(Dataset(str(prepared["test"]), engine="parquet", cpu=True))
        .to_ddf()
        .compute()
    )
    before = pd.read_parquet(features["test"] / "part_0.parquet")
    pd.testing.assert_frame_equal(
        again.reset_index(drop=True)[before.columns], before, check_dtype=False
    )


def test_build_workflow_is_unfitted(prepared, tmp_path):
    workflow = build_workflow(DatasetSpec.load(prepared["spec"]), categories_dir=tmp_path)
    assert workflow.output_schema is None or len(os.listdir(tmp_path)) == 0


@pytest.mark.gpu
def test_gpu_path_uses_cudf(prepared, tmp_path):
    import cudf  # noqa: F401

    from rankflow.core.device import gpu_available

    assert gpu_available()
    run_feature_engineering(
        DatasetSpec.load(prepared["spec"]),
        {"train": prepared["train"]},
        workflow_dir=tmp_path / "wf",
        outputs={"train": tmp_path / "f_train"},
        config=FeatureConfig(),
    )
    assert "cudf" in (tmp_path / "wf" / "metadata.json").read_text()


def test_component_wires_artifacts(artifact, prepared, tmp_path):
    from components.content.embed import ContentConfig, embed_or_empty

    # The synthetic spec here names no text: embed-content hands over an empty table.
    spec = DatasetSpec.load(prepared["spec"])
    embed_or_empty(spec, prepared["train"], tmp_path / "content", config=ContentConfig())
    outs = {
        "nvt_workflow": artifact(dsl.Model, "nvt_workflow"),
        "train_features": artifact(dsl.Dataset, "train_features"),
        "valid_features": artifact(dsl.Dataset, "valid_features"),
        "test_features": artifact(dsl.Dataset, "test_features"),
        "feature_stats": artifact(dsl.Metrics, "feature_stats"),
    }
    engineer_features.python_func(
        train_data=artifact(dsl.Dataset, "train", prepared["train"]),
        valid_data=artifact(dsl.Dataset, "valid", prepared["valid"]),
        test_data=artifact(dsl.Dataset, "test", prepared["test"]),
        dataset_spec=artifact(dsl.Artifact, "spec", prepared["spec"]),
        content_table=artifact(dsl.Model, "content", tmp_path / "content"),
        **outs,
        **pipeline_defaults(engineer_features),
    )
    assert (Path(outs["nvt_workflow"].path) / "workflow.pkl").is_file()
    for name in ("train_features", "valid_features", "test_features"):
        assert (Path(outs[name].path) / "schema.pbtxt").is_file()
    assert outs["feature_stats"].metadata["cardinality_user_interest"] == 12 + 3


def test_compiled_transform_writes_what_nvtabular_writes(features, prepared, tmp_path):
    """The default CPU path (compiled lookups) and NVTabular's transform give the same files:
    same rows in the same order, same dtypes, same values, same Merlin schema."""
    from merlin.io import Dataset

    spec = DatasetSpec.load(prepared["spec"])
    outputs = {n: tmp_path / n for n in ("train", "test")}
    run_feature_engineering(
        spec,
        {n: prepared[n] for n in outputs},
        workflow_dir=tmp_path / "wf",
        outputs=outputs,
        config=FeatureConfig(transform="nvtabular"),
    )
    for name in outputs:
        compiled = pd.read_parquet(features[name] / "part_0.parquet")
        reference = pd.read_parquet(outputs[name] / "part_0.parquet")
        pd.testing.assert_frame_equal(compiled, reference, check_exact=True)
        # Equal but for the vocabulary paths, which point into each run's temporary directory.
        schemas = [
            [
                (
                    c.name,
                    c.dtype,
                    c.tags,
                    {k: v for k, v in c.properties.items() if k != "cat_path"},
                )
                for c in Dataset(str(path[name]), engine="parquet", cpu=True).schema
            ]
            for path in (features, outputs)
        ]
        assert schemas[0] == schemas[1]


def test_compiled_transform_streams_batches(prepared, tmp_path):
    """Small batches (bounded memory) give the same output as one batch."""
    spec = DatasetSpec.load(prepared["spec"])
    results = {}
    for rows in (1000, 1 << 20):
        out = {"train": tmp_path / f"train-{rows}", "test": tmp_path / f"test-{rows}"}
        run_feature_engineering(
            spec,
            {n: prepared[n] for n in ("train", "test")},
            workflow_dir=tmp_path / f"wf-{rows}",
            outputs=out,
            config=FeatureConfig(batch_rows=rows),
        )
        results[rows] = pd.read_parquet(out["test"] / "part_0.parquet")
        assert pq.ParquetFile(out["test"] / "part_0.parquet").metadata.num_rows == len(
            pq.read_table(prepared["test"])
        )
    pd.testing.assert_frame_equal(results[1000], results[1 << 20], check_exact=True)


OWN_SPEC = """
timestamp: event_ts
item: {categorical: []}
context: {categorical: [surface, device]}
continuous: [{column: bid, transform: log}, {column: user_activity, transform: clip, max: 2.5},
             {column: hour, transform: bucketize, bins: 6}]
tasks:
  - {name: ctr, column: click}
  - {name: dwell, column: dwell_seconds, kind: regression, given: ctr, transform: log1p}
weight_column: w
"""


def test_no_ids_renamed_tasks_weights_and_transforms(prepared, tmp_path):
    """No ids, an empty role list, log / clip / bucketize, a task named apart from its column,
    a regression target and a weight column: tagged as declared, and the compiled transform
    writes exactly what NVTabular writes."""
    import numpy as np
    from merlin.io import Dataset
    from merlin.schema import Tags

    from components.features.workflow import WEIGHT_TAG

    spec = DatasetSpec.from_yaml(OWN_SPEC)
    splits = {}
    for name in ("train", "test"):
        frame = pq.read_table(prepared[name]).to_pandas()
        frame["w"] = np.where(frame["click"] == 1, 1.0, 10.0)
        splits[name] = tmp_path / f"{name}.parquet"
        frame.to_parquet(splits[name], index=False)
    written = {}
    for transform in ("auto", "nvtabular"):
        outputs = {n: tmp_path / transform / n for n in splits}
        run_feature_engineering(
            spec,
            splits,
            workflow_dir=tmp_path / transform / "wf",
            outputs=outputs,
            config=FeatureConfig(transform=transform),
        )
        written[transform] = pd.read_parquet(outputs["test"] / "part_0.parquet")
    pd.testing.assert_frame_equal(written["auto"], written["nvtabular"], check_exact=True)
    schema = Dataset(str(tmp_path / "auto" / "train"), engine="parquet", cpu=True).schema
    assert Tags.BINARY_CLASSIFICATION in schema["ctr"].tags and "click" not in schema.column_names
    assert Tags.REGRESSION in schema["dwell"].tags
    assert {Tags.TARGET.value, WEIGHT_TAG} <= {
        str(getattr(t, "value", t)) for t in schema["w"].tags
    }
    assert Tags.CATEGORICAL in schema["hour"].tags and schema["hour"].int_domain.max >= 6
    assert not schema.select_by_tag(Tags.USER_ID).column_names
    test = pd.read_parquet(splits["test"])
    # log: z-scored log(1 + bid); clip: nothing above 2.5 before the z-score.
    logged = written["auto"]["bid"].to_numpy()
    assert np.corrcoef(logged, np.log1p(test["bid"]))[0, 1] > 0.999
    clipped = written["auto"]["user_activity"]
    assert clipped.max() == pytest.approx(clipped[test["user_activity"] >= 2.5].min())


def test_feature_config_refuses_unknown_transform():
    with pytest.raises(ValueError, match="transform must be one of"):
        FeatureConfig(transform="polars")


def test_item_id_dropout_trains_the_oov_row_on_train_rows_only(features, prepared):
    """A seeded share of train rows carry the OOV item index (what a new item gets at serving
    time); valid and test are transformed as served: OOV only for items train never saw."""
    import numpy as np

    from rankflow.core.compiled import OOV_INDEX

    share = FeatureConfig().item_id_dropout
    train = pd.read_parquet(features["train"] / "part_0.parquet")
    dropped = (train["ad_id"] == OOV_INDEX).to_numpy()
    assert dropped.mean() == pytest.approx(share, abs=0.015)
    # Only the id: the row's other features and its labels are untouched.
    raw = pq.read_table(prepared["train"]).to_pandas()
    assert (train["click"].to_numpy() == raw["click"].to_numpy()).all()
    seen = set(raw["ad_id"])
    for name in ("valid", "test"):
        split = pd.read_parquet(features[name] / "part_0.parquet")
        unseen = ~pq.read_table(prepared[name]).to_pandas()["ad_id"].isin(seen).to_numpy()
        np.testing.assert_array_equal(split["ad_id"].to_numpy() == OOV_INDEX, unseen)


def test_item_id_dropout_is_refused_outside_zero_to_one():
    with pytest.raises(ConfigError, match="item_id_dropout"):
        FeatureConfig(item_id_dropout=1.0)
