"""Serving: Triton gRPC latency and throughput against in-process transform + predict.

The ranker trained on the benchmark's own log is exported with ``export_cpu_repository`` (the cpu
flavour: one python model running the NVTabular workflow and the SavedModel) and served by the real
Triton binary through ``TritonServer``. For every batch size the same raw test rows are scored:

* ``in_process``: ``RankerScorer.score`` in this process (the floor: same transform, same model,
  no RPC, no serialisation);
* ``triton``: ``RankflowClient.score`` over gRPC at each concurrency, one thread and one gRPC
  client per concurrent caller, all released together by a barrier;
* ``perf_analyzer``: Triton's C++ load generator on the same rows, batch and concurrency, which
  also splits each request into Triton's server-side queue / compute input / infer / output.

Per (batch, concurrency): p50/p99 latency (ms) over the timed requests after warm-up, rows/s =
rows scored / wall time of the timed phase. At concurrency 1 the in-process and Triton requests
alternate, so the ratio p50(Triton) / p50(in-process) compares like with like under any background
load. Every response is checked against the in-process scores of the same rows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import numpy as np

from bench.common import Workspace, latency_stats, median, progress

logger = logging.getLogger(__name__)

#: Largest |Triton - in-process| score accepted as "the same prediction".
TOLERANCE = 1e-5


def _max_diff(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(got[t] - expected[t]).max()) for t in expected)


def _concurrent(clients, frame, expected, *, requests: int, warmup: int) -> dict[str, Any]:
    """``len(clients)`` threads, ``requests`` timed requests in all (after ``warmup`` each)."""
    concurrency = len(clients)
    per_thread = [
        requests // concurrency + (i < requests % concurrency) for i in range(concurrency)
    ]
    latencies: list[list[float]] = [[] for _ in clients]
    diffs = [0.0] * concurrency
    errors: list[BaseException] = []
    barrier = threading.Barrier(concurrency + 1)

    def caller(i: int) -> None:
        try:
            for _ in range(warmup):
                clients[i].score(frame)
            barrier.wait()
            for _ in range(per_thread[i]):
                start = time.perf_counter()
                got = clients[i].score(frame)
                latencies[i].append(time.perf_counter() - start)
                diffs[i] = max(diffs[i], _max_diff(got, expected))
        except BaseException as err:  # surfaced below, after the threads are joined
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"a serving benchmark request failed: {errors[0]}") from errors[0]
    flat = [s for per in latencies for s in per]
    return {
        **latency_stats(flat),
        "rows_per_s": len(flat) * len(frame) / wall,
        "max_abs_diff": max(diffs),
    }


def _alternating(client, scorer, frame, expected, *, requests: int, warmup: int, seed: int):
    """Concurrency 1: Triton and in-process requests interleaved in a seeded random order."""
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"triton": [], "in_process": []}
    diff = 0.0
    for i in range(warmup + requests):
        for name in rng.permutation(list(times)):
            start = time.perf_counter()
            got = client.score(frame) if name == "triton" else scorer.score(frame)
            elapsed = time.perf_counter() - start
            if name == "triton":
                diff = max(diff, _max_diff(got, expected))
            if i >= warmup:
                times[name].append(elapsed)
    out = {}
    for name, seconds in times.items():
        out[name] = {**latency_stats(seconds), "rows_per_s": len(frame) / median(seconds)}
    out["triton"]["max_abs_diff"] = diff
    return out


def bench_serving(
    workspace: Workspace,
    *,
    rows: int,
    batch_sizes: list[int],
    concurrencies: list[int],
    requests: int,
    warmup: int,
) -> dict[str, Any]:
    from rankflow.core.spec import DatasetSpec
    from serving.client import ClientConfig, RankflowClient, read_rows
    from serving.export import MODEL_NAME, ExportConfig, export_cpu_repository
    from serving.scorer import RankerScorer
    from serving.triton import TritonConfig, TritonServer

    prepared = workspace.prepared(rows)
    features = workspace.features(rows)
    model_dir = workspace.ranker(rows)
    spec = DatasetSpec.load(prepared["spec"])
    repository = workspace.root / "repository"
    export_cpu_repository(
        spec,
        workflow_dir=features["workflow"],
        model_dir=model_dir,
        repository=repository,
        config=ExportConfig(max_batch_size=max(1024, *batch_sizes)),
    )
    scorer = RankerScorer(features["workflow"], model_dir, targets=spec.label_columns)
    test = read_rows(prepared["test"])
    rng = np.random.default_rng(workspace.seed)
    pool = test.iloc[
        rng.choice(len(test), size=max(batch_sizes), replace=len(test) < max(batch_sizes))
    ]
    pool = pool.reset_index(drop=True)

    from bench import perf_analyzer

    try:
        perf_analyzer.binary()
        perf_data = perf_analyzer.write_input_data(
            {c: pool[c].to_numpy() for c in scorer.input_dtypes},
            workspace.root / "perf-input.json",
        )
        perf_error = None
    except perf_analyzer.PerfAnalyzerUnavailable as err:
        perf_data, perf_error = None, str(err)
        logger.warning("perf_analyzer not used: %s", err)

    results = []
    config = TritonConfig(repository, models=(MODEL_NAME,), ready_timeout_s=600)
    with TritonServer(config) as server:
        clients = [
            RankflowClient(ClientConfig(url=server.grpc_url, timeout_s=120))
            for _ in range(max(concurrencies))
        ]
        try:
            cells = [(b, c) for b in batch_sizes for c in concurrencies]
            in_process: dict[int, dict[str, Any]] = {}
            for batch, concurrency in progress(cells, desc="serving"):
                frame = pool.head(batch)
                expected = scorer.score(frame)
                if concurrency == 1:
                    both = _alternating(
                        clients[0],
                        scorer,
                        frame,
                        expected,
                        requests=requests,
                        warmup=warmup,
                        seed=workspace.seed + batch,
                    )
                    in_process[batch] = both["in_process"]
                    triton = both["triton"]
                else:
                    triton = _concurrent(
                        clients[:concurrency], frame, expected, requests=requests, warmup=warmup
                    )
                row = {"batch": batch, "concurrency": concurrency, **triton}
                row["correct"] = row["max_abs_diff"] <= TOLERANCE
                if perf_data is not None:
                    row["perf_analyzer"] = perf_analyzer.measure(
                        grpc_url=server.grpc_url,
                        model=MODEL_NAME,
                        input_data=perf_data,
                        batch=batch,
                        concurrency=concurrency,
                        requests=requests,
                        scratch=workspace.root,
                    )
                results.append(row)
                logger.info(
                    "serving batch %d x%d: p50 %.2f ms p99 %.2f ms %.0f rows/s",
                    batch,
                    concurrency,
                    row["p50_ms"],
                    row["p99_ms"],
                    row["rows_per_s"],
                )
        finally:
            for client in clients:
                client.close()
    for row in results:
        floor = in_process.get(row["batch"])
        if floor:
            row["x_in_process_p50"] = row["p50_ms"] / floor["p50_ms"]
            if row.get("perf_analyzer"):
                row["perf_analyzer"]["x_in_process_p50"] = (
                    row["perf_analyzer"]["p50_ms"] / floor["p50_ms"]
                )
    return {
        "rows": rows,
        "client": "python tritonclient.grpc (RankflowClient), one client per thread",
        "perf_analyzer": perf_error or "perf_analyzer 2.51 (C++ gRPC client), count windows",
        "requests_per_cell": requests,
        "warmup_per_client": warmup,
        "in_process": [{"batch": b, **v} for b, v in sorted(in_process.items())],
        "triton": results,
    }
