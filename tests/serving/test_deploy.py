"""Versioned model store and gated rollout on a real Triton, with a client loop running."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tritonclient.http as http

from rankflow.cli import main
from serving.client import ClientConfig, ClientError, RankflowClient
from serving.deploy import (
    DeployConfig,
    DeployError,
    LocalServer,
    deploy,
    local_server,
    replicas,
)
from serving.store import ModelStore, StoreError
from serving.triton import TritonPorts


def _config_version(store: ModelStore, model: str) -> list[int]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    text = (store.root / model / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return list(config.version_policy.specific.versions)


def test_store_publishes_pins_rolls_back_and_prunes(repository, tmp_path):
    store = ModelStore(tmp_path / "store", keep=2)
    assert store.publish(repository, "rankflow") == 1
    assert store.serving_version("rankflow") is None
    assert store.endpoints() == []  # published, never pinned: a restarted server loads nothing
    store.pin("rankflow", 1, action="deploy")
    assert store.publish(repository, "rankflow") == 2
    store.pin("rankflow", 2, action="deploy")
    assert _config_version(store, "rankflow") == [2]
    assert store.endpoints() == ["rankflow"]
    assert store.previous_version("rankflow") == 1
    store.pin("rankflow", 1, action="rollback")
    assert _config_version(store, "rankflow") == [1]
    assert store.rollout("rankflow").history == (1,)
    with pytest.raises(StoreError, match="no earlier deployed version"):
        store.previous_version("rankflow")
    for _ in range(2):
        store.pin("rankflow", store.publish(repository, "rankflow"), action="deploy")
    assert store.rollout("rankflow").history == (1, 3, 4)
    assert store.prune("rankflow") == [1, 2]
    assert store.versions("rankflow") == [3, 4]
    # Versions published but never served (refused rollouts) don't push the served one out.
    store.pin("rankflow", 3, action="rollback")
    store.publish(repository, "rankflow")
    store.publish(repository, "rankflow")
    assert store.prune("rankflow") == [4]
    assert store.versions("rankflow") == [3, 5, 6]
    assert _config_version(store, "rankflow") == [3]
    # Each version keeps its exporter's config, the source of a rollback's pinned config.
    assert (store.root / "rankflow" / "3" / "exported.pbtxt").is_file()
    assert not list((store.root / "rankflow").glob(".*partial*"))


def test_store_refuses_a_repository_without_the_endpoint(repository, tmp_path):
    with pytest.raises(StoreError, match="has no model 'ranker'"):
        ModelStore(tmp_path / "store").publish(repository, "ranker")
    two_versions = tmp_path / "two"
    shutil.copytree(repository, two_versions)
    shutil.copytree(two_versions / "rankflow" / "1", two_versions / "rankflow" / "2")
    with pytest.raises(StoreError, match="exactly one version"):
        ModelStore(tmp_path / "store").publish(two_versions, "rankflow")
    assert not (tmp_path / "store" / "rankflow").exists()


def test_deploy_without_a_server_only_publishes(repository, tmp_path):
    result = deploy(repository, "rankflow", config=DeployConfig(model_store=str(tmp_path / "s")))
    assert (result.version, result.previous, result.servers) == (1, None, ())
    assert result.grpc_url is None
    assert local_server(tmp_path / "s") is None


def test_replicas_resolve_and_refuse_bad_urls():
    assert replicas("localhost:8000")[0].endswith(":8000")
    with pytest.raises(DeployError, match="host:port"):
        replicas("localhost")
    with pytest.raises(DeployError, match="cannot resolve"):
        replicas("no-such-host.invalid:8000")


class ClientLoop:
    """Scores the same rows back to back on its own thread; records every outcome."""

    def __init__(self, url: str, rows) -> None:
        self.client = RankflowClient(ClientConfig(url=url, timeout_s=30.0))
        self.rows = rows
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                scores = self.client.score(self.rows)
                assert len(scores["click"]) == len(self.rows)
                self.ok += 1
            except (ClientError, AssertionError) as err:
                self.failures.append(str(err))

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def wait_for(self, requests: int, timeout_s: float = 60.0) -> None:
        target = self.ok + requests
        deadline = time.monotonic() + timeout_s
        while self.ok < target and time.monotonic() < deadline and not self.failures:
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def _ready_versions(http_url: str, versions=(1, 2, 3)) -> list[int]:
    client = http.InferenceServerClient(http_url)
    try:
        return [v for v in versions if client.is_model_ready("rankflow", str(v))]
    finally:
        client.close()


class ServeProcess:
    """``rankflow serve`` as `make serve` runs it: a subprocess, stopped with SIGTERM."""

    def __init__(self, store: Path) -> None:
        self.store = store
        ports = TritonPorts.free()
        self.log = store.parent / f"serve-{ports.grpc}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rankflow.cli", "serve", "--store", str(store)]
            + ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc)]
            + ["--metrics-port", str(ports.metrics)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> LocalServer:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rankflow serve exited:\n{self.log.read_text()}")
            server = local_server(self.store)
            if server is not None:  # advertised only once Triton is ready
                return server
            time.sleep(0.5)
        raise AssertionError("rankflow serve did not come up in 240 s")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.code = self.process.wait(timeout=120)


def test_rollout_and_rollback_under_load_lose_no_request(repository, prepared, tmp_path, capsys):
    """`rankflow serve` on v1; v2 rolls out, a broken v3 is refused, `rankflow rollback` brings
    v1 back -- all while a client loop is scoring: zero failed requests."""
    root = tmp_path / "store"
    config = DeployConfig(model_store=str(root))
    assert deploy(repository, "rankflow", config=config).version == 1
    broken = tmp_path / "broken"
    shutil.copytree(repository, broken)
    shutil.rmtree(broken / "rankflow" / "1" / "ranker")  # loads the workflow, then fails
    rows = pq.read_table(prepared["test"]).to_pandas().head(16)

    serve = ServeProcess(root)
    with serve as server:
        assert _ready_versions(server.http_url) == [1]
        with ClientLoop(server.grpc_url, rows) as loop:
            loop.wait_for(5)
            result = deploy(repository, "rankflow", config=config)  # finds the local server
            assert (result.version, result.previous) == (2, 1)
            assert result.servers == (server.http_url,)
            assert result.grpc_url == server.grpc_url
            assert _ready_versions(server.http_url) == [2]  # v1 retired once v2 was ready
            loop.wait_for(5)

            with pytest.raises(
                DeployError, match=r"(?s)version 3 failed.*no saved ranker.*still serving version 2"
            ):
                deploy(broken, "rankflow", config=config)
            assert _ready_versions(server.http_url) == [2]
            assert _config_version(ModelStore(root), "rankflow") == [2]
            loop.wait_for(5)

            assert main(["rollback", "--store", str(root)]) == 0
            back = json.loads(capsys.readouterr().out)
            assert (back["version"], back["previous"]) == (1, 2)
            assert _ready_versions(server.http_url) == [1]
            loop.wait_for(5)
        assert loop.failures == []
        assert loop.ok >= 20
        assert main(["query", "--url", server.grpc_url, "--input", str(prepared["test"])]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 10
    assert serve.code == 0
    assert not (root / ".triton.json").exists()
    # A restarted server comes back on the pinned version.
    with ServeProcess(root) as server:
        assert _ready_versions(server.http_url) == [1]
