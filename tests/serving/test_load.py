"""Sustained load on the real Triton: zero failed requests, latency percentiles recorded."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from serving.load import LoadConfig, LoadRun, run_load

#: The issue's bar: 60 s at concurrency 8. Bounded in requests too.
DURATION_S = 60.0
CONCURRENCY = 8


def test_sixty_seconds_at_concurrency_eight_fail_nothing(triton, prepared, record_figures):
    rows = pq.read_table(prepared["test"]).to_pandas().head(64)
    report = run_load(
        LoadConfig(
            triton.grpc_url,
            concurrency=CONCURRENCY,
            duration_s=DURATION_S,
            max_requests=200_000,
        ),
        rows,
    )
    record_figures("sustained_load", report.to_dict())
    assert (report.failed, report.errors) == (0, {})
    assert report.wall_s >= DURATION_S
    assert report.ok >= 10 * DURATION_S  # far below what it does; proves it kept going
    assert report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]


def test_load_reports_failures_instead_of_stopping(prepared):
    """Nothing listens on the port: every request fails with the client's clear message,
    counted, and the run still ends on its budget."""
    from serving.triton import TritonPorts

    rows = pq.read_table(prepared["test"]).to_pandas().head(4)
    port = TritonPorts.free().grpc
    report = run_load(
        LoadConfig(f"127.0.0.1:{port}", concurrency=2, duration_s=30, max_requests=10), rows
    )
    assert (report.ok, report.failed) == (0, 10)
    (message,) = report.errors
    assert message.startswith(f"cannot reach Triton at 127.0.0.1:{port}")
    with pytest.raises(ValueError, match="concurrency"):
        LoadConfig("x:1", concurrency=0)
    dead = LoadRun(LoadConfig(f"127.0.0.1:{port}", concurrency=1, max_requests=3), rows)
    with pytest.raises(TimeoutError, match="0 requests succeeded"), dead:
        dead.wait_for(1, timeout_s=5)
