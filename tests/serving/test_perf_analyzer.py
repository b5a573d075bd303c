"""Triton's perf_analyzer (the bench's C++ client) runs here against the served model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from bench import perf_analyzer


def test_input_data_is_one_entry_per_row(tmp_path, scorer, prepared):
    raw = pq.read_table(prepared["test"]).to_pandas().head(3)
    path = perf_analyzer.write_input_data(
        {c: raw[c].to_numpy() for c in scorer.input_dtypes}, tmp_path / "data.json"
    )
    data = json.loads(path.read_text())["data"]
    assert len(data) == 3
    assert set(data[0]) == set(scorer.input_dtypes)
    assert data[1]["surface"] == {"content": [raw["surface"].iloc[1]], "shape": [1]}
    assert data[2]["user_id"]["content"] == [int(raw["user_id"].iloc[2])]


def test_a_padded_list_is_one_row_of_its_width_per_entry(tmp_path):
    """The wire format of a list: ``[rows, width]`` values beside ``[rows]`` lengths."""
    import numpy as np

    from serving.client import pad_lists

    padded, lengths = pad_lists(
        "ads", [np.array([4, 5]), np.array([], np.int64)], 3, np.dtype("int64")
    )
    path = perf_analyzer.write_input_data(
        {"ads": padded, "ads__length": lengths.reshape(-1), "q": np.array(["a b", ""])},
        tmp_path / "data.json",
    )
    data = json.loads(path.read_text())["data"]
    assert data[0]["ads"] == {"content": [4, 5, 0], "shape": [3]}
    assert data[1]["ads"] == {"content": [0, 0, 0], "shape": [3]}
    assert [d["ads__length"]["content"] for d in data] == [[2], [0]]
    assert data[0]["q"] == {"content": ["a b"], "shape": [1]}


def test_perf_analyzer_measures_the_real_server(triton, scorer, prepared, tmp_path):
    raw = pq.read_table(prepared["test"]).to_pandas().head(64)
    data = perf_analyzer.write_input_data(
        {c: raw[c].to_numpy() for c in scorer.input_dtypes}, tmp_path / "data.json"
    )
    result = perf_analyzer.measure(
        grpc_url=triton.grpc_url,
        model="rankflow",
        input_data=data,
        batch=8,
        concurrency=1,
        requests=30,
        scratch=tmp_path,
    )
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["rows_per_s"] > 0
    assert result["server_ms"]["compute_infer"] > 0
    assert result["mean_ms"] == pytest.approx(
        sum(result["server_ms"].values()) + sum(result["client_ms"].values()), rel=0.02
    )


def test_a_wrong_model_name_fails_with_perf_analyzers_message(triton, scorer, prepared, tmp_path):
    raw = pq.read_table(prepared["test"]).to_pandas().head(2)
    data = perf_analyzer.write_input_data(
        {c: raw[c].to_numpy() for c in scorer.input_dtypes}, tmp_path / "data.json"
    )
    with pytest.raises(RuntimeError, match="perf_analyzer failed"):
        perf_analyzer.measure(
            grpc_url=triton.grpc_url,
            model="no-such-model",
            input_data=data,
            batch=1,
            concurrency=1,
            requests=5,
            scratch=tmp_path,
        )
