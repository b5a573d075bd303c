"""Gated rollout: publish a validated repository into the model store and switch Triton to it.

Triton runs in explicit model-control mode. A deploy publishes version N, pins the store's
configs to N and asks every serving replica to (re)load the endpoint: Triton keeps the old
version answering until N is ready, then retires it, so clients see no failed request. If a
replica can't load N, it keeps serving the previous version; the store is pinned back and the
replicas that had already switched reload the previous version.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rankflow.core import integrity
from rankflow.core.contract import contract_changes
from rankflow.core.errors import DeployError, ExportError, IntegrityError, StoreError
from rankflow.core.io import atomic_write_text
from serving.store import ModelStore, repository_contract

logger = logging.getLogger(__name__)

#: Written by ``rankflow serve`` into the store it serves, so a local deploy can find it.
SERVER_FILE = ".triton.json"


@dataclass(frozen=True)
class DeployConfig:
    #: Local model store; on a cluster, the model-store PVC's mount path (see ClusterProfile).
    model_store: str = "runs/model-store"
    #: Triton HTTP (model-control) endpoint; "" = the local ``rankflow serve`` if running.
    #: A DNS name resolving to several addresses (a headless Service) reaches every replica.
    triton_url: str = ""
    load_timeout_s: float = 300.0
    keep_versions: int = 5
    #: How long a deploy or rollback waits for another writer's store lock.
    lock_timeout_s: float = 600.0
    #: Serve a candidate whose contract breaks the serving version's clients anyway.
    allow_contract_change: bool = False


@dataclass(frozen=True)
class JudgedAgainst:
    """The version that served when a candidate was judged (``None``: none served). A deploy
    given one is a compare-and-swap: it publishes only while that version still serves."""

    version: int | None


@dataclass(frozen=True)
class DeployResult:
    endpoint: str
    version: int
    previous: int | None
    model_store: str
    servers: tuple[str, ...]  # HTTP URLs now serving ``version``; empty = published only
    grpc_url: str | None  # the local server's gRPC address, when there is one

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass(frozen=True)
class LocalServer:
    pid: int
    http_url: str
    grpc_url: str
    metrics_url: str


def write_server_file(store: Path, server: LocalServer) -> Path:
    return atomic_write_text(Path(store) / SERVER_FILE, json.dumps(asdict(server), indent=2) + "\n")


def local_server(store: str | Path) -> LocalServer | None:
    """The ``rankflow serve`` Triton serving ``store``, if it is running and live."""
    path = Path(store) / SERVER_FILE
    if not path.is_file():
        return None
    try:
        server = LocalServer(**json.loads(path.read_text()))
        os.kill(server.pid, 0)
    except (ValueError, TypeError, ProcessLookupError, PermissionError):
        logger.info("stale %s (server gone); publishing only", path)
        return None
    return server if _live(server.http_url) else None


def _live(http_url: str) -> bool:
    import tritonclient.http as http

    client = http.InferenceServerClient(http_url, connection_timeout=2.0, network_timeout=5.0)
    try:
        return bool(client.is_server_live())
    except Exception:  # refused, reset, timeout: not a server we can deploy to
        return False
    finally:
        client.close()


def replicas(url: str) -> tuple[str, ...]:
    """``host:port`` -> one ``address:port`` per address the name resolves to."""
    host, sep, port = url.rpartition(":")
    if not sep or not port.isdigit():
        raise DeployError(f"Triton URL must be host:port, got {url!r}")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DeployError(f"cannot resolve Triton host {host!r}: {err}") from err
    addresses = sorted({info[4][0] for info in infos})
    return tuple(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses)


def _load(
    servers: Sequence[str],
    models: Sequence[str],
    endpoint: str,
    version: int,
    timeout: float,
    *,
    switched: list[str],
) -> None:
    """Load ``models`` (endpoint last) on every server, appending each success to ``switched``."""
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    for url in servers:
        client = http.InferenceServerClient(url, connection_timeout=10.0, network_timeout=timeout)
        try:
            for model in models:
                client.load_model(model)
            if not client.is_model_ready(endpoint, str(version)):
                raise DeployError(f"{url}: {endpoint} version {version} loaded but not ready")
        except InferenceServerException as err:
            raise DeployError(f"{url}: loading {endpoint} version {version} failed: {err}") from err
        finally:
            client.close()
        switched.append(url)
        logger.info("%s now serves %s version %d", url, endpoint, version)


def _servers(store: Path, triton_url: str) -> tuple[tuple[str, ...], str | None]:
    if triton_url:
        return replicas(triton_url), None
    server = local_server(store)
    if server is None:
        return (), None
    return (server.http_url,), server.grpc_url


def _switch(
    store: ModelStore,
    endpoint: str,
    version: int,
    *,
    action: str,
    config: DeployConfig,
) -> DeployResult:
    """Pin ``version`` and load it everywhere; on any failure, pin and reload the previous one."""
    previous = store.serving_version(endpoint)
    rollout = store.rollout(endpoint)
    assert rollout is not None  # published before any switch
    servers, grpc_url = _servers(store.root, config.triton_url)
    store.unpin(endpoint, version)
    switched: list[str] = []
    try:
        _load(servers, rollout.models, endpoint, version, config.load_timeout_s, switched=switched)
    except DeployError:
        store.unpin(endpoint, previous)
        # A failed load leaves that server on its previous version; only the replicas that
        # already switched must be sent back.
        if previous is not None and switched:
            try:
                _load(
                    switched, rollout.models, endpoint, previous, config.load_timeout_s, switched=[]
                )
            except DeployError:
                logger.exception("could not reload %s version %s", endpoint, previous)
        raise
    store.pin(endpoint, version, action=action)
    return DeployResult(
        endpoint=endpoint,
        version=version,
        previous=previous,
        model_store=str(store.root),
        servers=servers,
        grpc_url=grpc_url if servers else None,
    )


def deploy(
    repository: str | Path,
    endpoint: str,
    *,
    config: DeployConfig,
    judged_against: JudgedAgainst | None = None,
) -> DeployResult:
    """Publish ``repository`` as the next version of ``endpoint`` and serve it, holding the
    store's writer lock throughout; with ``judged_against``, only if that version still serves."""
    store = ModelStore(config.model_store, keep=config.keep_versions)
    try:
        # The repository holds pickles and python code Triton will run: only the one exported.
        # Checked before the lock, which creates the store: a refused repository leaves no trace.
        integrity.verify(repository)
    except (OSError, IntegrityError) as err:
        raise DeployError(f"cannot publish {repository} as {endpoint!r}: {err}") from err
    try:
        with store.locked(timeout_s=config.lock_timeout_s):
            if judged_against is not None:
                serving = store.serving_version(endpoint)
                if serving != judged_against.version:
                    raise DeployError(
                        f"{endpoint!r} now serves {_named(serving)}; this candidate was judged "
                        f"against {_named(judged_against.version)}: judge it again against "
                        f"{_named(serving)} (nothing was published)"
                    )
            _check_contract(store, Path(repository), endpoint, config)
            return _deploy_locked(store, Path(repository), endpoint, config)
    except (StoreError, ExportError) as err:
        raise DeployError(str(err)) from err


def _check_contract(
    store: ModelStore, repository: Path, endpoint: str, config: DeployConfig
) -> None:
    """Refuse a candidate that would break the serving version's clients (see
    :func:`rankflow.core.contract.contract_changes`)."""
    serving = store.serving_version(endpoint)
    if serving is None:
        return
    changes = contract_changes(store.contract(endpoint), repository_contract(repository, endpoint))
    if changes.compatible:
        logger.info("%s: compatible contract changes: %s", endpoint, "; ".join(changes.compatible))
    if not changes.breaking:
        return
    if config.allow_contract_change:
        logger.warning("%s: breaking contract changes allowed: %s", endpoint, changes.breaking)
        return
    raise DeployError(
        f"the candidate breaks the contract of {endpoint!r} version {serving}: "
        f"{'; '.join(changes.breaking)}. Version {serving} keeps serving; deploy under another "
        "endpoint name, or set allow_contract_change if every client has moved"
    )


def _named(version: int | None) -> str:
    return "no version" if version is None else f"version {version}"


def _deploy_locked(
    store: ModelStore, repository: Path, endpoint: str, config: DeployConfig
) -> DeployResult:
    try:
        version = store.publish(repository, endpoint)
    except (StoreError, OSError, IntegrityError) as err:
        raise DeployError(f"cannot publish {repository} as {endpoint!r}: {err}") from err
    try:
        result = _switch(store, endpoint, version, action="deploy", config=config)
    except DeployError as err:
        # The failed version stays on disk for inspection but is never pinned again.
        raise DeployError(
            f"{err}; still serving version {store.serving_version(endpoint)}"
        ) from err
    removed = store.prune(endpoint)
    if removed:
        logger.info("pruned versions %s of %s", removed, endpoint)
    return result


def rollback(endpoint: str, *, config: DeployConfig) -> DeployResult:
    """Serve the version deployed before the current one again."""
    store = ModelStore(config.model_store, keep=config.keep_versions)
    try:
        with store.locked(timeout_s=config.lock_timeout_s):
            version = store.previous_version(endpoint)
            store.verify(endpoint, version)
            return _switch(store, endpoint, version, action="rollback", config=config)
    except StoreError as err:
        raise DeployError(str(err)) from err
