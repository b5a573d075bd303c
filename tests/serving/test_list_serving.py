"""List inputs on a real Triton: padded ``[rows, L]`` plus ``<name>__length``, scored as the
in-process path scores the same raw rows (truncation, empty and null lists included), from
parquet, JSON and CSV rows, one request at a time or batched together; malformed list requests
fail alone with one clear line."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.workflow import FeatureConfig, run_feature_engineering
from components.training.ranker import RankerConfig, train_ranker
from rankflow.core.contract import LENGTH_SUFFIX, read_manifest
from rankflow.core.spec import DatasetSpec
from serving.client import ClientConfig, RankflowClient, read_rows
from serving.export import ExportConfig, export_cpu_repository
from serving.scorer import RankerScorer
from serving.triton import TritonConfig, TritonServer
from tests.components.test_lists import SPEC, _prepare, _table, _write

MAX_LENGTH = 4
#: The lists spec without text (text is not served yet).
LIST_SPEC = (
    SPEC.replace(", text: [title]", "").replace(", text: [query]", "")
    + f"lists_max_length: {MAX_LENGTH}\n"
)
SKEW = 1e-5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("list-serving")
    columns = _table(rows=4000, seed=1)
    log, spec_path = _write(root, columns, LIST_SPEC)
    _, splits = _prepare(root, log, spec_path)
    spec = DatasetSpec.load(spec_path)
    features = {s: root / "features" / s for s in splits}
    run_feature_engineering(
        spec,
        splits,
        workflow_dir=root / "workflow",
        outputs=features,
        config=FeatureConfig(),
    )
    train_ranker(
        spec,
        features["train"],
        features["valid"],
        model_dir=root / "model",
        config=RankerConfig(epochs=1, batch_size=512),
    )
    repository = export_cpu_repository(
        spec,
        workflow_dir=root / "workflow",
        model_dir=root / "model",
        repository=root / "repository",
        config=ExportConfig(),
    )
    scorer = RankerScorer(root / "workflow", root / "model", targets=spec.label_columns)
    rows = pq.read_table(splits["test"] / "part-0.parquet").to_pandas()
    with TritonServer(TritonConfig(repository, models=("rankflow",))) as server:
        client = RankflowClient(ClientConfig(url=server.grpc_url))
        try:
            yield {
                "client": client,
                "scorer": scorer,
                "rows": rows,
                "repo": repository,
                "root": root,
            }
        finally:
            client.close()


def _skew(online: dict, offline: dict) -> float:
    return max(float(np.max(np.abs(online[t] - offline[t]))) for t in offline)


def test_the_contract_spells_each_list_as_padded_values_and_lengths(served):
    manifest = read_manifest(served["repo"] / "rankflow" / "1")
    inputs = {i.name: i for i in manifest.contract.inputs}
    assert inputs["recent_ads"].dims == (MAX_LENGTH,) and inputs["recent_ads"].dtype == "int64"
    assert inputs["keywords"].dims == (MAX_LENGTH,) and inputs["keywords"].dtype == "object"
    assert inputs["recent_ads" + LENGTH_SUFFIX].dtype == "int32"
    assert manifest.contract.lists == {"recent_ads": MAX_LENGTH, "keywords": MAX_LENGTH}
    metadata = served["client"].metadata()
    shapes = {i["name"]: [int(d) for d in i["shape"]] for i in metadata["inputs"]}
    assert shapes["recent_ads"] == [-1, MAX_LENGTH] and shapes["keywords__length"] == [-1, 1]


def test_triton_scores_lists_as_the_in_process_path(served):
    rows = served["rows"].head(64).copy()
    history = list(rows["recent_ads"])
    history[0] = np.arange(10)  # longer than the width: its newest 4 are kept
    history[1] = np.zeros(0, dtype=np.int64)
    history[2] = None  # a null list is the empty list
    history[3] = np.array([99_999])  # an id never seen
    rows["recent_ads"] = history
    online = served["client"].score(rows)
    offline = served["scorer"].score(rows)
    assert _skew(online, offline) <= SKEW
    # The long list scores as its newest values alone; the null list as the empty one.
    rows.at[rows.index[0], "recent_ads"] = np.arange(6, 10)
    rows.at[rows.index[2], "recent_ads"] = np.zeros(0, dtype=np.int64)
    again = served["client"].score(rows)
    assert _skew(again, online) <= SKEW
    # The list matters: the model reads it.
    rows["recent_ads"] = [np.zeros(0, dtype=np.int64)] * len(rows)
    rows["keywords"] = [np.array([], dtype=object)] * len(rows)
    assert _skew(served["client"].score(rows), online) > 1e-4


def test_lists_read_from_parquet_json_and_csv_score_the_same(served, tmp_path):
    rows = served["rows"].head(32)
    features = rows.drop(columns=["click", "ts"])
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(features, preserve_index=False), parquet)
    as_lists = features.assign(
        recent_ads=[list(map(int, v)) for v in features["recent_ads"]],
        keywords=[list(v) for v in features["keywords"]],
    )
    (tmp_path / "rows.json").write_text(json.dumps(as_lists.to_dict(orient="records")))
    as_csv = features.assign(
        recent_ads=["|".join(map(str, v)) for v in features["recent_ads"]],
        keywords=["|".join(v) for v in features["keywords"]],
    )
    as_csv.to_csv(tmp_path / "rows.csv", index=False)
    reference = served["scorer"].score(rows)
    for name in ("rows.parquet", "rows.json", "rows.csv"):
        frame = read_rows(tmp_path / name)
        assert _skew(served["client"].score(frame), reference) <= SKEW, name


def test_concurrent_requests_batched_together_keep_their_rows(served):
    rows = served["rows"]
    chunks = [rows.iloc[i * 16 : (i + 1) * 16] for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(served["client"].score, chunks))
    for chunk, online in zip(chunks, results, strict=True):
        assert _skew(online, served["scorer"].score(chunk)) <= SKEW


def _request(served, rows: pd.DataFrame, change):
    """Raw gRPC request of ``rows`` in the wire format, with ``change(name, array)`` applied."""
    import tritonclient.grpc as grpcclient

    from serving.client import pad_lists

    client = grpcclient.InferenceServerClient(served["client"].config.url)
    inputs = []
    for spec in served["client"].metadata()["inputs"]:
        name, datatype = spec["name"], spec["datatype"]
        if name.endswith(LENGTH_SUFFIX):
            continue
        if name in ("recent_ads", "keywords"):
            dtype = np.dtype(object) if datatype == "BYTES" else np.dtype(np.int64)
            padded, lengths = pad_lists(name, rows[name].to_numpy(), MAX_LENGTH, dtype)
            arrays = [(name, padded, datatype), (name + LENGTH_SUFFIX, lengths, "INT32")]
        else:
            values = rows[name].to_numpy().reshape(-1, 1)
            values = values.astype(object) if datatype == "BYTES" else values
            arrays = [(name, values, datatype)]
        for tensor_name, array, kind in arrays:
            changed = change(tensor_name, array, kind)
            if changed is None:
                continue
            array, kind = changed
            tensor = grpcclient.InferInput(tensor_name, list(array.shape), kind)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
    try:
        return client.infer("rankflow", inputs)
    finally:
        client.close()


def _set(target: str, row: int, value):
    def change(name, array, kind):
        if name != target:
            return array, kind
        array = array.copy()
        array[row, 0] = value
        return array, kind

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _set("recent_ads__length", 3, MAX_LENGTH + 1),
            r"recent_ads__length' row 3 is 5, outside \[0, 4\]",
        ),
        (_set("keywords__length", 1, -1), r"keywords__length' row 1 is -1, outside"),
        (lambda n, a, k: None if n == "recent_ads__length" else (a, k), r"recent_ads__length"),
        (
            lambda n, a, k: (a[:, :1], k) if n == "recent_ads" else (a, k),
            r"recent_ads",
        ),
        (
            lambda n, a, k: (
                (a.astype(str).astype(object), "BYTES") if n == "recent_ads" else (a, k)
            ),
            r"recent_ads",
        ),
    ],
    ids=["length-past-width", "negative-length", "no-lengths", "scalar-for-list", "wrong-type"],
)
def test_malformed_list_requests_fail_alone(served, change, message):
    from tritonclient.utils import InferenceServerException

    rows = served["rows"].head(8)
    with pytest.raises(InferenceServerException, match=message):
        _request(served, rows, change)
    # The server is fine: the next good request scores as before.
    assert _skew(served["client"].score(rows), served["scorer"].score(rows)) <= SKEW


def test_the_client_names_a_row_that_is_no_list(served):
    from rankflow.core.errors import ClientInputError

    rows = served["rows"].head(4).copy()
    rows["recent_ads"] = [np.array([1]), np.array([[1, 2]]), np.array([2]), np.array([3])]
    with pytest.raises(ClientInputError, match=r"column 'recent_ads' row 1 is .*, not a list"):
        served["client"].score(rows)


def test_the_client_refuses_fractional_ids_instead_of_truncating_them(served):
    from rankflow.core.errors import ClientInputError

    rows = served["rows"].head(3).copy()
    rows["recent_ads"] = [np.array([1.0, 2.0]), np.array([1.7]), np.array([3])]
    with pytest.raises(ClientInputError, match=r"column 'recent_ads' row 1 holds \[1.7\]"):
        served["client"].score(rows)
