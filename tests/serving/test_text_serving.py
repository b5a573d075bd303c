"""Text inputs on a real Triton: the endpoint looks a known item's vector up in the content table
its version carries, embeds an item the table lacks (cold start) and every query from the
request's own text with the same encoder files, and scores what the evaluation scored offline
from the processed test split."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.content.embed import ContentConfig, embed_content
from components.data.prepare import prepare_data
from components.data.split import SplitConfig
from components.data.synthetic import SyntheticConfig
from components.features.workflow import FeatureConfig, run_feature_engineering
from components.training.ranker import RankerConfig, train_ranker
from rankflow.core.artifacts import load_ranker, predict
from rankflow.core.content import content_fields, open_content
from rankflow.core.contract import read_manifest
from serving.client import ClientConfig, RankflowClient
from serving.export import ExportConfig, export_cpu_repository
from serving.scorer import RankerScorer
from serving.triton import TritonConfig, TritonServer

SKEW = 1e-5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-serving")
    splits = {s: root / s for s in ("train", "valid", "test")}
    spec = prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=20_000, seed=4, content=True),
        split=SplitConfig(),
        outputs=splits,
        spec_out=root / "spec.yaml",
    ).spec
    embed_content(spec, splits["train"], root / "content", config=ContentConfig())
    features = {s: root / "features" / s for s in splits}
    run_feature_engineering(
        spec,
        splits,
        workflow_dir=root / "workflow",
        outputs=features,
        config=FeatureConfig(),
        content=root / "content",
    )
    train_ranker(
        spec,
        features["train"],
        features["valid"],
        model_dir=root / "model",
        config=RankerConfig(epochs=1, batch_size=1024),
    )
    repository = export_cpu_repository(
        spec,
        workflow_dir=root / "workflow",
        model_dir=root / "model",
        repository=root / "repository",
        config=ExportConfig(content_table=root / "content"),
    )
    scorer = RankerScorer(
        root / "workflow",
        root / "model",
        targets=spec.label_columns,
        content=open_content(root / "content", content_fields(spec)),
    )
    rows = pq.read_table(splits["test"] / "part-0.parquet").to_pandas()
    train_ids = set(pq.read_table(splits["train"] / "part-0.parquet").column("ad_id").to_pylist())
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        client = RankflowClient(ClientConfig(url=server.grpc_url))
        try:
            yield {
                "client": client,
                "scorer": scorer,
                "rows": rows,
                "cold": ~rows["ad_id"].isin(train_ids).to_numpy(),
                "features": features,
                "model": root / "model",
                "repo": repository,
            }
        finally:
            client.close()


def _skew(online: dict, offline: dict) -> float:
    """Largest difference, relative to the value past 1 (dwell seconds: float32 ulps of ~100)."""
    return max(
        float(np.max(np.abs(online[t] - offline[t]) / np.maximum(1.0, np.abs(offline[t]))))
        for t in offline
    )


def test_the_version_carries_its_table_and_encoder_and_takes_raw_text(served):
    version = served["repo"] / "rankflow" / "1"
    assert (version / "content" / "content.npz").is_file()
    assert (version / "content" / "encoder" / "model.onnx").is_file()
    manifest = read_manifest(version)
    inputs = {i.name: i for i in manifest.contract.inputs}
    assert inputs["ad_title"].dtype == "object" and inputs["query"].dtype == "object"
    assert manifest.extra["content"]["context_text"] == ["query"]


def test_triton_scores_warm_and_cold_items_as_the_evaluation_did(served):
    """The online path (Triton: table lookup, or the request's text embedded) gives the scores
    the evaluation computed from the processed test split -- cold start is measured as served."""
    rows, cold = served["rows"], served["cold"]
    assert cold.sum() >= 50 and (~cold).sum() >= 50
    pick = np.concatenate([np.flatnonzero(cold)[:128], np.flatnonzero(~cold)[:128]])
    sample = rows.iloc[pick].reset_index(drop=True)
    online = served["client"].score(sample)
    in_process = served["scorer"].score(sample)
    evaluated = predict(load_ranker(served["model"]), served["features"]["test"])
    offline = {t: v[pick] for t, v in evaluated.items() if t in online}
    assert set(offline) == set(online) == set(in_process)
    for task in online:
        # float32 rounding of other batchings is relative to the value: for dwell seconds
        # (~100) 1e-5 is one or two ulps.
        for reference in (in_process[task], offline[task]):
            np.testing.assert_allclose(online[task], reference, rtol=1e-6, atol=SKEW, err_msg=task)


def test_a_cold_items_text_moves_its_score_and_a_warm_items_does_not(served):
    rows, cold = served["rows"], served["cold"]
    sample = rows.iloc[np.concatenate([np.flatnonzero(cold)[:16], np.flatnonzero(~cold)[:16]])]
    sample = sample.reset_index(drop=True)
    before = served["client"].score(sample)
    changed = sample.assign(ad_title="luggage cruise island hotel flight beach")
    after = served["client"].score(changed)
    moved = np.abs(after["click"] - before["click"])
    assert moved[:16].max() > 1e-4  # cold: embedded from the request
    assert moved[16:].max() <= SKEW  # warm: the table's vector, whatever the request says


def test_long_and_empty_text_score_as_in_process(served):
    """A query past the model's 256 tokens keeps its first ones; an empty one embeds as zeros."""
    rows = served["rows"].head(8).copy()
    rows["query"] = ["word " * 2000, "", *rows["query"].iloc[2:]]
    online = served["client"].score(rows)
    assert _skew(online, served["scorer"].score(rows)) <= SKEW
    truncated = rows.assign(query=["word " * 256, *rows["query"].iloc[1:]])
    assert _skew(served["client"].score(truncated), online) <= SKEW


def _raw_inputs(client, frame, *, text: str, value: bytes):
    """The client's request for ``frame`` with row 1 of text input ``text`` set to raw
    ``value`` bytes (the Python client only sends valid UTF-8)."""
    import tritonclient.grpc as grpcclient

    from rankflow.core.contract import LENGTH_SUFFIX
    from serving.client import pad_lists

    metadata = client.metadata()
    names = {i["name"] for i in metadata["inputs"]}
    inputs = []
    for spec in metadata["inputs"]:
        name, datatype = spec["name"], spec["datatype"]
        if name.endswith(LENGTH_SUFFIX):
            continue
        if name + LENGTH_SUFFIX in names:
            dtype = np.dtype(object) if datatype == "BYTES" else np.dtype("int64")
            padded, lengths = pad_lists(name, frame[name].to_numpy(), int(spec["shape"][-1]), dtype)
            arrays = [(name, padded, datatype), (name + LENGTH_SUFFIX, lengths, "INT32")]
        else:
            values = frame[name].to_numpy().reshape(-1, 1)
            if datatype == "BYTES":
                values = np.array([[str(v).encode()] for v in values[:, 0]], dtype=object)
                if name == text:
                    values[1, 0] = value
            else:
                values = values.astype(grpcclient.triton_to_np_dtype(datatype))
            arrays = [(name, values, datatype)]
        for tensor_name, array, kind in arrays:
            tensor = grpcclient.InferInput(tensor_name, list(array.shape), kind)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
    return inputs


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("query", b"cheap \xff\xfe flights", r"input 'query' row 1 is not UTF-8 text"),
        ("ad_title", b"x" * (65 * 1024), r"input 'ad_title' row 1: a 66,560-byte value"),
    ],
    ids=["invalid-utf8", "oversized-text"],
)
def test_bad_text_fails_its_request_alone_in_one_line(served, column, value, message):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    rows = served["rows"].head(4).reset_index(drop=True)
    before = served["client"].score(rows)
    raw = grpcclient.InferenceServerClient(served["client"].config.url)
    try:
        with pytest.raises(InferenceServerException, match=message):
            raw.infer("rankflow", _raw_inputs(served["client"], rows, text=column, value=value))
    finally:
        raw.close()
    after = served["client"].score(rows)  # the server is up and scores as before
    for task in before:
        np.testing.assert_array_equal(after[task], before[task])
