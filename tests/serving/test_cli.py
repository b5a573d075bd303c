"""`rankflow query` against the exported ranker on a real Triton."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from rankflow.cli import main
from serving.triton import TritonPorts


def test_query_prints_one_score_per_row_and_task(triton, scorer, prepared, capsys):
    code = main(
        ["query", "--url", triton.grpc_url, "--input", str(prepared["test"]), "--limit", "7"]
    )
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["row"] for r in records] == list(range(7))
    expected = scorer.score(pq.read_table(prepared["test"]).to_pandas().head(7))
    for task in ("click", "conversion"):
        np.testing.assert_allclose([r[task] for r in records], expected[task], atol=1e-5)


def test_query_errors_are_one_clear_line(prepared, capsys):
    url = f"127.0.0.1:{TritonPorts.free().grpc}"
    code = main(["query", "--url", url, "--input", str(prepared["test"]), "--timeout", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("rankflow query: cannot reach Triton at 127.0.0.1:")
