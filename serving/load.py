"""Sustained gRPC load on the endpoint: N callers for a bounded time, every outcome recorded.

Unlike the benchmark (which stops at the first error), a load run keeps going through failures
and reports them, so rollouts, rollbacks and server restarts can be judged by "how many requests
failed, and with what error" while they happen. Bounded in time *and* in requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from rankflow.core.errors import ClientError, ConfigError
from serving.client import ClientConfig, RankflowClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadConfig:
    url: str
    concurrency: int = 8
    duration_s: float = 60.0
    #: Upper bound on requests in all, whatever the duration (keeps a fast server bounded).
    max_requests: int = 1_000_000
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.duration_s <= 0:
            raise ConfigError(f"duration_s must be > 0, got {self.duration_s}")
        if self.max_requests < 1:
            raise ConfigError(f"max_requests must be >= 1, got {self.max_requests}")


@dataclass(frozen=True)
class LoadReport:
    concurrency: int
    rows_per_request: int
    wall_s: float
    ok: int
    failed: int
    #: Error message -> count (the client's own clear messages, not stack traces).
    errors: dict[str, int] = field(default_factory=dict)
    #: Seconds since the start of each failure: when the failures happened.
    failure_times_s: list[float] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    requests_per_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class LoadRun:
    """``concurrency`` caller threads scoring ``rows`` until stopped, the duration has passed
    or ``max_requests`` were sent. ``run_load`` for a blocking run; as a context manager, the
    load runs while the block does and :attr:`report` holds the outcome after it."""

    def __init__(self, config: LoadConfig, rows: pd.DataFrame) -> None:
        self.config = config
        self.rows = rows
        self.report: LoadReport | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._latencies: list[float] = []
        self._errors: Counter[str] = Counter()
        self._failure_times: list[float] = []
        self._start = 0.0
        self._threads = [
            threading.Thread(target=self._call, name=f"load-{i}", daemon=True)
            for i in range(config.concurrency)
        ]

    @property
    def ok(self) -> int:
        with self._lock:
            return len(self._latencies)

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.config.max_requests:
                return False
            if time.perf_counter() - self._start >= self.config.duration_s:
                return False
            self._issued += 1
            return True

    def _call(self) -> None:
        client = RankflowClient(ClientConfig(url=self.config.url, timeout_s=self.config.timeout_s))
        try:
            while self._take():
                began = time.perf_counter()
                try:
                    client.score(self.rows)
                except ClientError as err:
                    with self._lock:
                        self._errors[str(err)] += 1
                        self._failure_times.append(began - self._start)
                    # A server that is down fails fast: don't spin on it.
                    time.sleep(0.05)
                    continue
                with self._lock:
                    self._latencies.append(time.perf_counter() - began)
        finally:
            client.close()

    def start(self) -> LoadRun:
        self._start = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def wait_for(self, ok: int, *, timeout_s: float = 120.0) -> None:
        """Block until ``ok`` more requests than now have succeeded (the load is flowing)."""
        target, deadline = self.ok + ok, time.perf_counter() + timeout_s
        while self.ok < target:
            if time.perf_counter() > deadline or not any(t.is_alive() for t in self._threads):
                raise TimeoutError(f"load: {self.ok} requests succeeded, waited for {target}")
            time.sleep(0.05)

    def join(self) -> None:
        """Wait for the duration (or request budget) to run out."""
        for thread in self._threads:
            thread.join()

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.config.timeout_s + 5)
        wall = time.perf_counter() - self._start
        with self._lock:
            ms = np.asarray(self._latencies) * 1000.0
            latency = (
                {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
                | {"max": float(ms.max())}
                if len(ms)
                else {}
            )
            self.report = LoadReport(
                concurrency=self.config.concurrency,
                rows_per_request=len(self.rows),
                wall_s=wall,
                ok=len(ms),
                failed=sum(self._errors.values()),
                errors=dict(self._errors),
                failure_times_s=sorted(self._failure_times),
                latency_ms=latency,
                requests_per_s=len(ms) / wall if wall > 0 else 0.0,
            )
        logger.info(
            "load: %d ok, %d failed in %.1f s at concurrency %d; latency ms %s",
            self.report.ok,
            self.report.failed,
            wall,
            self.config.concurrency,
            {k: round(v, 2) for k, v in latency.items()},
        )
        return self.report

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_load(config: LoadConfig, rows: pd.DataFrame) -> LoadReport:
    """Score ``rows`` from ``config.concurrency`` threads for ``duration_s`` (or until
    ``max_requests``); every outcome is in the returned :class:`LoadReport`."""
    run = LoadRun(config, rows).start()
    run.join()
    return run.stop()
