"""``rankflow serve``: a long-lived local Triton on the model store, found by local deploys."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rankflow.core.errors import StoreError, TritonError
from serving.deploy import SERVER_FILE, LocalServer, write_server_file
from serving.store import ModelStore
from serving.triton import TritonConfig, TritonPorts, TritonServer

logger = logging.getLogger(__name__)

DEFAULT_PORTS = TritonPorts(http=8000, grpc=8001, metrics=8002)


def serving_models(store: ModelStore) -> tuple[str, ...]:
    """Every model of every endpoint that has a serving version, steps before endpoints."""
    models: list[str] = []
    for endpoint in store.endpoints():
        rollout = store.rollout(endpoint)
        assert rollout is not None  # endpoints() lists only endpoints with a rollout
        models += [m for m in rollout.models if m not in models]
    return tuple(models)


def start_server(store_root: Path, ports: TritonPorts, *, ready_timeout_s: float) -> TritonServer:
    """Start Triton on the store with its serving versions loaded; advertise it to deploys.

    Every serving version is checked against its sha256 manifest first (``StoreError``).
    """
    store = ModelStore(store_root)
    for endpoint in store.endpoints():
        version = store.serving_version(endpoint)
        assert version is not None  # endpoints() lists only endpoints with a serving version
        store.verify(endpoint, version)
        # A deploy that was cut off may have left the configs pinned to a version it never
        # finished loading: start on the last version that served.
        store.unpin(endpoint, version)
    store_root.mkdir(parents=True, exist_ok=True)
    server = TritonServer(
        TritonConfig(
            store_root.resolve(),
            ports=ports,
            models=serving_models(store),
            ready_timeout_s=ready_timeout_s,
        )
    ).start()
    assert server.pid is not None
    write_server_file(
        store_root,
        LocalServer(
            pid=server.pid,
            http_url=server.http_url,
            grpc_url=server.grpc_url,
            metrics_url=f"127.0.0.1:{ports.metrics}",
        ),
    )
    return server


@dataclass(frozen=True)
class RestartPolicy:
    """Restart Triton when it dies, unless it died ``max_restarts`` times within ``window_s``
    (a crash loop: then exit non-zero and let the next supervisor, or a person, look)."""

    max_restarts: int = 5
    window_s: float = 300.0


def serve(
    store_root: Path,
    ports: TritonPorts = DEFAULT_PORTS,
    *,
    ready_timeout_s: float,
    restarts: RestartPolicy | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM. A Triton that dies is restarted on the store's serving
    versions (the last ones that served) per ``restarts`` (default :class:`RestartPolicy`);
    non-zero exit when it can't be."""
    policy = restarts or RestartPolicy()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = start_server(store_root, ports, ready_timeout_s=ready_timeout_s)
    except TritonError:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    logger.info(
        "serving %s: gRPC %s, HTTP %s (model control), metrics 127.0.0.1:%d -- Ctrl-C stops",
        list(server.config.models) or "no models yet (deploy one)",
        server.grpc_url,
        server.http_url,
        ports.metrics,
    )
    deaths: list[float] = []
    try:
        while not stop.wait(0.5):
            if server.running:
                continue
            logger.error("Triton exited unexpectedly:\n%s", server.log_tail())
            server.stop()
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < policy.window_s] + [now]
            if len(deaths) > policy.max_restarts:
                logger.error(
                    "Triton died %d times in %.0f s: not restarting it",
                    len(deaths),
                    policy.window_s,
                )
                return 1
            logger.warning("restarting Triton (%d/%d)", len(deaths), policy.max_restarts)
            try:
                server = start_server(store_root, ports, ready_timeout_s=ready_timeout_s)
            except (TritonError, StoreError) as err:
                logger.error("could not restart Triton: %s", err)
                return 1
        return 0
    finally:
        (store_root / SERVER_FILE).unlink(missing_ok=True)
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
