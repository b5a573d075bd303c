"""Malformed requests on the real Triton: each gets a clear error, the server stays up, and the
next good request is scored exactly as before."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow.parquet as pq
import pytest

ROWS = 8


def _inputs(frame, dtypes, *, override=None):
    """One InferInput per column (``override(name, values) -> (values, datatype) | None``)."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, dtype in dtypes.items():
        values = frame[name].to_numpy().astype(dtype).reshape(-1, 1)
        datatype = "BYTES" if dtype == np.dtype(object) else grpcclient.np_to_triton_dtype(dtype)
        if override is not None:
            replaced = override(name, values)
            if replaced is False:
                continue
            if replaced is not None:
                values, datatype = replaced
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def _only(column: str, change: Callable) -> Callable:
    return lambda name, values: change(values) if name == column else None


def _bad_utf8(values):
    values = values.copy()
    values[3, 0] = b"\xff\xfe"
    return values, "BYTES"


def _huge_value(values):
    values = values.copy()
    values[5, 0] = "x" * (1 << 20)
    return values, "BYTES"


def _with(value):
    def change(values):
        values = values.copy()
        values[2, 0] = value
        return values, "FP32"

    return change


CASES = [
    # (id, model, version, override or row count, message)
    ("wrong-dtype", None, "", _only("user_id", lambda v: (v.astype(np.float32), "FP32")),
     r"inference input 'user_id' data-type is 'FP32', but model 'rankflow' expects 'INT64'"),
    ("wrong-shape", None, "", _only("bid", lambda v: (np.repeat(v, 2, axis=1), "FP32")),
     r"unexpected shape for input 'bid'.*\[-1,1\]"),
    ("missing-input", None, "", _only("device", lambda v: False),
     r"missing required input\(s\) \['device'\]"),
    ("unknown-input", None, "", "extra",
     r"expected 16 inputs but got 17 inputs for model 'rankflow'.*'coupon_code'"),
    ("batch-above-max", None, "", 1025,
     r"batch-size must be <= 1024"),
    ("infinite-value", None, "", _only("bid", _with(np.inf)),
     r"rankflow: input 'bid' has infinite values"),
    ("empty-batch", None, "", 0,
     r"input byte size mismatch for input '\w+' for model 'rankflow'. Expected \d+, got 0"),
    ("oversized-value", None, "", _only("surface", _huge_value),
     r"rankflow: input 'surface' row 5: a 1,048,576-byte value"),
    ("unknown-model", "rankflow_v2", "", None,
     r"unknown model: 'rankflow_v2'"),
    ("unknown-version", None, "7", None,
     r"unknown model: 'rankflow' version 7"),
    ("not-utf8", None, "", _only("device", _bad_utf8),
     r"rankflow: input 'device' row 3 is not UTF-8 text"),
]  # fmt: skip


@pytest.fixture(scope="module")
def rows(prepared):
    return pq.read_table(prepared["test"]).to_pandas()


@pytest.mark.parametrize(
    ("model", "version", "bad", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_request_fails_alone(triton, scorer, rows, model, version, bad, message):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    frame = rows.head(ROWS)
    if isinstance(bad, int):
        frame = (
            rows.head(bad) if bad <= len(rows) else rows.sample(bad, replace=True, random_state=0)
        )
        inputs = _inputs(frame, scorer.input_dtypes)
    elif bad == "extra":
        inputs = _inputs(frame, scorer.input_dtypes)
        extra = grpcclient.InferInput("coupon_code", [ROWS, 1], "INT64")
        extra.set_data_from_numpy(np.zeros((ROWS, 1), dtype=np.int64))
        inputs.append(extra)
    else:
        inputs = _inputs(frame, scorer.input_dtypes, override=bad)
    with pytest.raises(InferenceServerException, match=message):
        client.infer(model or "rankflow", inputs, model_version=version)

    # The server is still up, and the next good request gets exactly the in-process scores.
    assert client.is_server_live() and client.is_model_ready("rankflow")
    good = rows.head(ROWS)
    result = client.infer("rankflow", _inputs(good, scorer.input_dtypes))
    expected = scorer.score(good)
    for task in ("click", "conversion"):
        np.testing.assert_allclose(result.as_numpy(task).reshape(-1), expected[task], atol=1e-5)
    client.close()


def test_missing_values_and_unseen_categories_score_as_in_training(triton, scorer, rows):
    """Documented handling, not errors: NaN in a continuous input is a missing value, filled
    with the train median as the workflow did in training; a category never seen in training
    maps to the out-of-vocabulary index."""
    import tritonclient.grpc as grpcclient

    frame = rows.head(ROWS).copy()
    frame.loc[frame.index[1], "bid"] = np.nan
    frame.loc[frame.index[2], "surface"] = "a-surface-launched-after-training"
    frame.loc[frame.index[3], "ad_id"] = 10**12
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    result = client.infer("rankflow", _inputs(frame, scorer.input_dtypes))
    expected = scorer.score(frame)
    assert np.isfinite(result.as_numpy("click")).all()
    np.testing.assert_allclose(result.as_numpy("click").reshape(-1), expected["click"], atol=1e-5)
    client.close()
