"""The compiled serving transform equals NVTabular's, row for row and dtype for dtype."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.features.workflow import build_workflow
from rankflow.core.compiled import SMALL_BATCH, NotCompilable, compile_workflow
from rankflow.core.spec import CategorifyOptions, DatasetSpec
from serving.scorer import RankerScorer, ScoringError
from tests.conftest import TARGETS


def _load(features):
    import nvtabular as nvt

    return nvt.Workflow.load(str(features["workflow"])).remove_inputs(list(TARGETS))


def _assert_same(workflow, compiled, frame) -> None:
    frame = frame.reset_index(drop=True)
    expected = workflow.transform(frame)
    got = compiled.transform({c: frame[c].to_numpy() for c in compiled.inputs})
    assert list(got) == workflow.output_schema.column_names
    for name in got:
        want = expected[name].to_numpy()
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


@pytest.mark.parametrize("rows", [1, 64, SMALL_BATCH + 1, None])
def test_compiled_transform_equals_nvtabular_on_held_out_rows(features, prepared, rows):
    """Request-sized batches take the dict/dense lookups, big ones pandas' join: all exact."""
    workflow = _load(features)
    compiled = compile_workflow(workflow)
    raw = pq.read_table(prepared["test"]).to_pandas()[list(compiled.inputs)]
    _assert_same(workflow, compiled, raw if rows is None else raw.head(rows))


def test_unseen_values_nulls_and_negative_ids(features, prepared):
    workflow = _load(features)
    compiled = compile_workflow(workflow)
    raw = pq.read_table(prepared["test"]).to_pandas()[list(compiled.inputs)].head(6)
    raw = raw.reset_index(drop=True)
    raw.loc[0, "user_id"] = 10**12  # beyond the dense table
    raw.loc[1, "ad_id"] = -5
    raw.loc[2, "surface"] = "never-seen"
    raw.loc[3, "device"] = None
    raw.loc[4, "bid"] = np.nan
    raw.loc[5, "user_gender"] = ""
    _assert_same(workflow, compiled, raw)
    codes = compiled.transform({c: raw[c].to_numpy() for c in compiled.inputs})
    assert codes["user_id"][0] == 2 and codes["ad_id"][1] == 2 and codes["surface"][2] == 2
    assert codes["device"][3] == 1  # null index


def test_hash_buckets_compile_and_match(prepared, tmp_path):
    """A spec that hashes a high-cardinality column: HashBucket is reproduced too."""
    from merlin.io import Dataset

    spec = DatasetSpec.load(prepared["spec"])
    spec = dataclasses.replace(
        spec, categorify=CategorifyOptions(hash_buckets={spec.user_id: 97, "surface": 5})
    )
    workflow = build_workflow(spec, categories_dir=tmp_path / "categories")
    workflow.fit(Dataset(str(prepared["train"]), engine="parquet", cpu=True))
    workflow = workflow.remove_inputs(list(spec.target_columns))
    compiled = compile_workflow(workflow)
    raw = pq.read_table(prepared["test"]).to_pandas()[list(compiled.inputs)]
    for rows in (64, 3000):
        _assert_same(workflow, compiled, raw.head(rows))


def test_unknown_ops_are_refused_and_the_scorer_falls_back(features, trained, prepared, caplog):
    import nvtabular as nvt
    from nvtabular import ops

    workflow = nvt.Workflow(["bid"] >> ops.LambdaOp(lambda col: col * 2))
    workflow.fit(nvt.Dataset(pq.read_table(prepared["train"]).to_pandas()[["bid"]], cpu=True))
    with pytest.raises(NotCompilable, match="op UDF is not compiled"):
        compile_workflow(workflow)

    scorer = RankerScorer(features["workflow"], trained, targets=TARGETS)
    raw = pq.read_table(prepared["test"]).to_pandas().head(64)
    fast = scorer.score(raw)
    scorer.compiled = None  # what a workflow with an uncompiled op gets
    with caplog.at_level(logging.WARNING):
        slow = scorer.score(raw)
    for task in fast:
        np.testing.assert_allclose(fast[task], slow[task], atol=1e-6)


def test_scorer_refuses_ragged_or_nan_integer_columns(scorer, prepared):
    raw = pq.read_table(prepared["test"]).to_pandas().head(4)
    columns = {c: raw[c].to_numpy() for c in scorer.input_dtypes}
    ragged = {**columns, "bid": columns["bid"][:3]}
    with pytest.raises(ScoringError, match="different row counts"):
        scorer.score_columns(ragged)
    nan_ids = {**columns, "user_id": np.array([1.0, np.nan, 3.0, 4.0])}
    with pytest.raises(ScoringError, match="'user_id' has NaN"):
        scorer.score_columns(nan_ids)
    words = {**columns, "ad_id": np.array(["x", "y", "z", "w"], dtype=object)}
    with pytest.raises(ScoringError, match="'ad_id' can't be read as int64"):
        scorer.score_columns(words)
