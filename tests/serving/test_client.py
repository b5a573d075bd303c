"""The typed gRPC client against the exported ranker on a real Triton."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.client import ClientConfig, ClientError, RankflowClient, read_rows
from serving.triton import TritonPorts
from tests.conftest import TARGETS


def test_health_and_metadata(triton):
    client = RankflowClient(ClientConfig(url=triton.grpc_url))
    assert client.health() == {"live": True, "ready": True, "model_ready": True}
    metadata = client.metadata()
    assert {o["name"] for o in metadata["outputs"]} == set(TARGETS)
    assert {"name": "surface", "datatype": "BYTES", "shape": ["-1", "1"]} in metadata["inputs"]


def test_scores_raw_rows_like_the_offline_path(triton, scorer, prepared, tmp_path):
    raw = pq.read_table(prepared["test"]).to_pandas().head(50)
    expected = scorer.score(raw)
    client = RankflowClient(ClientConfig(url=triton.grpc_url))
    # The same rows from every supported file format.
    raw.to_csv(tmp_path / "rows.csv", index=False)
    raw.to_json(tmp_path / "rows.jsonl", orient="records", lines=True, date_format="iso")
    (tmp_path / "rows.json").write_text(raw.to_json(orient="records", date_format="iso"))
    for path in (
        prepared["test"],
        tmp_path / "rows.csv",
        tmp_path / "rows.jsonl",
        tmp_path / "rows.json",
    ):
        rows = read_rows(path).head(50)
        scores = client.score(rows)
        for task in ("click", "conversion"):
            np.testing.assert_allclose(scores[task], expected[task], atol=1e-5, err_msg=str(path))


def test_clear_errors(triton, prepared, tmp_path):
    raw = pq.read_table(prepared["test"]).to_pandas().head(5)
    client = RankflowClient(ClientConfig(url=triton.grpc_url))
    with pytest.raises(ClientError, match=r"lack input column\(s\) \['device'\]"):
        client.score(raw.drop(columns=["device"]))
    with pytest.raises(ClientError, match="no rows"):
        client.score(raw.iloc[:0])
    unknown = RankflowClient(ClientConfig(url=triton.grpc_url, model_name="nope"))
    with pytest.raises(ClientError, match="nope"):
        unknown.score(raw)
    down = RankflowClient(ClientConfig(url=f"127.0.0.1:{TritonPorts.free().grpc}", timeout_s=2))
    with pytest.raises(ClientError, match="cannot reach Triton"):
        down.health()
    with pytest.raises(ClientError, match="input not found"):
        read_rows(tmp_path / "absent.csv")
    (tmp_path / "rows.txt").write_text(json.dumps([{}]))
    with pytest.raises(ClientError, match="unsupported input"):
        read_rows(tmp_path / "rows.txt")
