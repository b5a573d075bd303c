"""Concurrent requests are scored together on the real Triton, each gets its own rows back, and a
bad one fails alone."""

from __future__ import annotations

import queue

import numpy as np
import pyarrow.parquet as pq
import pytest

from rankflow.core.spec import DatasetSpec
from serving.export import ExportConfig, export_cpu_repository
from serving.triton import TritonConfig, TritonServer

#: Long enough that all 16 requests, sent one after another by a client that may share its cores
#: with other tests, reach the queue while the first still waits there: merging is then certain
#: rather than a matter of the model being busy when they arrive.
QUEUE_DELAY_US = 300_000


@pytest.fixture(scope="module")
def batching_triton(prepared, features, trained, tmp_path_factory):
    repository = export_cpu_repository(
        DatasetSpec.load(prepared["spec"]),
        workflow_dir=features["workflow"],
        model_dir=trained,
        repository=tmp_path_factory.mktemp("batching") / "repo",
        config=ExportConfig(max_queue_delay_us=QUEUE_DELAY_US),
    )
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        yield server


def _inputs(grpcclient, scorer, frame, *, corrupt: bool = False):
    inputs = []
    for name, dtype in scorer.input_dtypes.items():
        values = frame[name].to_numpy()
        if dtype == np.dtype(object):
            values = np.array([str(v).encode() for v in values], dtype=object)
            if corrupt and name == "surface":
                values[0] = b"\xff\xfe not utf-8"
            datatype = "BYTES"
        else:
            values = values.astype(dtype)
            datatype = grpcclient.np_to_triton_dtype(dtype)
        tensor = grpcclient.InferInput(name, [len(frame), 1], datatype)
        tensor.set_data_from_numpy(values.reshape(-1, 1))
        inputs.append(tensor)
    return inputs


def test_queued_requests_are_merged_and_split_back(batching_triton, scorer, prepared):
    import tritonclient.grpc as grpcclient

    raw = pq.read_table(prepared["test"]).to_pandas()
    client = grpcclient.InferenceServerClient(batching_triton.grpc_url)
    before = client.get_inference_statistics("rankflow").model_stats[0]
    frames, done = [], queue.Queue()
    start = 0
    for i in range(16):
        rows = 1 + (i * 5) % 23
        frames.append(raw.iloc[start : start + rows].reset_index(drop=True))
        start += rows
    bad = 7
    for i, frame in enumerate(frames):
        client.async_infer(
            "rankflow",
            _inputs(grpcclient, scorer, frame, corrupt=i == bad),
            callback=lambda result, error, i=i: done.put((i, result, error)),
        )
    results = dict((i, (r, e)) for i, r, e in (done.get(timeout=120) for _ in frames))

    for i, frame in enumerate(frames):
        result, error = results[i]
        if i == bad:
            assert error is not None and "rankflow:" in error.message()
            continue
        assert error is None, error
        expected = scorer.score(frame)
        for task in ("click", "conversion"):
            got = result.as_numpy(task).reshape(-1)
            assert got.shape == (len(frame),)
            np.testing.assert_allclose(got, expected[task], atol=1e-5)

    after = client.get_inference_statistics("rankflow").model_stats[0]
    requests = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert requests == sum(len(f) for f in frames)
    # 16 requests sent at once into a queue that holds them for QUEUE_DELAY_US: they merge.
    assert executions < len(frames) // 2
    # The server still answers a plain request afterwards.
    ok = client.infer("rankflow", _inputs(grpcclient, scorer, frames[0]))
    assert ok.as_numpy("click").shape == (len(frames[0]), 1)
