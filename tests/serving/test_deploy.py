"""Versioned model store and gated rollout on a real Triton, with a client loop running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rankflow.cli import main
from rankflow.core import integrity
from serving.deploy import (
    DeployConfig,
    DeployError,
    JudgedAgainst,
    LocalServer,
    deploy,
    local_server,
    replicas,
    rollback,
)
from serving.export import seal_versions
from serving.load import LoadConfig, LoadRun
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


#: One deploy in its own process, judged against "nothing serves": prints "ready" once imported,
#: then its result or its error.
RACER = """
import sys
from serving.deploy import DeployConfig, DeployError, JudgedAgainst, deploy
print("ready", flush=True)
try:
    result = deploy(sys.argv[1], "rankflow", config=DeployConfig(model_store=sys.argv[2]),
                    judged_against=JudgedAgainst(None))
except DeployError as err:
    print(f"error: {err}", flush=True)
    sys.exit(3)
print(f"deployed {result.version}", flush=True)
"""


def test_two_concurrent_deploys_leave_one_winner_and_a_clear_error(repository, tmp_path):
    """Both judged against an empty endpoint, both waiting on the store lock when it frees: one
    publishes version 1, the other sees it serving and publishes nothing."""
    root = tmp_path / "s"
    store = ModelStore(root)
    with store.locked():
        racers = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, str(repository), str(root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        assert [r.stdout.readline().strip() for r in racers] == ["ready", "ready"]
        time.sleep(1.0)  # both are inside deploy(), at the lock
    outcomes = sorted((r.wait(timeout=120), r.stdout.read().strip()) for r in racers)
    assert outcomes[0] == (0, "deployed 1"), outcomes
    assert outcomes[1] == (
        3,
        "error: 'rankflow' now serves version 1; this candidate was judged against no version: "
        "judge it again against version 1 (nothing was published)",
    ), outcomes
    assert store.versions("rankflow") == [1] and store.serving_version("rankflow") == 1
    # Judged against the version that serves: published and served.
    result = deploy(
        repository,
        "rankflow",
        config=DeployConfig(model_store=str(root)),
        judged_against=JudgedAgainst(1),
    )
    assert (result.version, result.previous) == (2, 1)


def test_a_deploy_waits_for_the_store_lock_and_names_its_holder(repository, tmp_path):
    root = tmp_path / "s"
    config = DeployConfig(model_store=str(root), lock_timeout_s=0.5)
    held = rf"locked by another writer \(pid {os.getpid()} "
    with ModelStore(root).locked(), pytest.raises(DeployError, match=held):
        deploy(repository, "rankflow", config=config)
    assert ModelStore(root).versions("rankflow") == []  # nothing half-written
    assert deploy(repository, "rankflow", config=config).version == 1  # and free again


def _with_contract(repository: Path, target: Path, edit) -> Path:
    """A copy of ``repository`` whose recorded endpoint contract ``edit`` changed, resealed."""
    shutil.copytree(repository, target)
    manifest = target / "rankflow" / "1" / "rankflow.json"
    raw = json.loads(manifest.read_text())
    edit(raw["contract"])
    manifest.write_text(json.dumps(raw, indent=2))
    seal_versions(target)
    integrity.seal(target)
    return target


def test_a_contract_breaking_candidate_is_refused_and_a_compatible_one_deployed(
    repository, tmp_path
):
    """Version 1 serves; a candidate renaming an output and requiring a new input is refused,
    naming both changes, and version 1 keeps serving; allow_contract_change serves it anyway.
    A candidate with an added output and an added optional input is deployed."""
    root = tmp_path / "s"
    config = DeployConfig(model_store=str(root))
    deploy(repository, "rankflow", config=config)

    def breaking(contract):
        contract["outputs"][0]["name"] = "ctr"
        contract["inputs"].append({"name": "age", "dtype": "int64", "dims": [1], "required": True})

    def compatible(contract):
        contract["outputs"].append(
            {"name": "extra", "kind": "regression", "dtype": "float32", "dims": [1]}
        )
        optional = {"name": "weekday", "dtype": "int64", "dims": [1], "required": False}
        contract["inputs"].append(optional)

    first = json.loads((repository / "rankflow" / "1" / "rankflow.json").read_text())
    renamed = first["contract"]["outputs"][0]["name"]
    candidate = _with_contract(repository, tmp_path / "breaking", breaking)
    with pytest.raises(DeployError) as refused:
        deploy(candidate, "rankflow", config=config)
    assert str(refused.value) == (
        f"the candidate breaks the contract of 'rankflow' version 1: output '{renamed}' removed; "
        "required input 'age' added. Version 1 keeps serving; deploy under another endpoint "
        "name, or set allow_contract_change if every client has moved"
    )
    store = ModelStore(root)
    assert (store.versions("rankflow"), store.serving_version("rankflow")) == ([1], 1)
    allowed = DeployConfig(model_store=str(root), allow_contract_change=True)
    assert deploy(candidate, "rankflow", config=allowed).version == 2
    # Against version 2's contract (which has 'ctr' and 'age'), a candidate adding to it is fine.
    grown = _with_contract(candidate, tmp_path / "compatible", compatible)
    assert deploy(grown, "rankflow", config=config).version == 3
    assert [o.name for o in store.contract("rankflow").outputs][-1] == "extra"


def test_tampered_repository_or_store_version_is_refused(repository, tmp_path):
    """Fitted workflows are pickles and the version holds python code: a changed file anywhere
    stops the deploy before the store changes, and stops a rollback or `rankflow serve`."""
    config = DeployConfig(model_store=str(tmp_path / "s"))
    tampered = tmp_path / "tampered"
    shutil.copytree(repository, tampered)
    (tampered / "rankflow" / "1" / "workflow" / "workflow.pkl").write_bytes(b"cos\nsystem\n")
    with pytest.raises(DeployError, match=r"changed \['rankflow/1/workflow/workflow.pkl'\]"):
        deploy(tampered, "rankflow", config=config)
    assert not (tmp_path / "s").exists()

    deploy(repository, "rankflow", config=config)
    deploy(repository, "rankflow", config=config)
    store = ModelStore(tmp_path / "s")
    names = sorted(p.name for p in (store.root / "rankflow" / "2").iterdir())
    assert {"_SHA256SUMS", "__pycache__", "exported.pbtxt", "model.py"} <= set(names)
    (store.root / "rankflow" / "1" / "model.py").write_text("import os; os.system('id')\n")
    with pytest.raises(DeployError, match=r"changed \['model.py'\]"):
        rollback("rankflow", config=config)
    assert store.serving_version("rankflow") == 2
    (store.root / "rankflow" / "2" / "evil.pkl").write_bytes(b"x")
    assert main(["serve", "--store", str(store.root), "--ready-timeout", "5"]) == 1


def test_replicas_resolve_and_refuse_bad_urls():
    assert replicas("localhost:8000")[0].endswith(":8000")
    with pytest.raises(DeployError, match="host:port"):
        replicas("localhost")
    with pytest.raises(DeployError, match="cannot resolve"):
        replicas("no-such-host.invalid:8000")


def _ready_versions(http_url: str, versions=(1, 2, 3)) -> list[int]:
    import tritonclient.http as http

    client = http.InferenceServerClient(http_url)
    try:
        return [v for v in versions if client.is_model_ready("rankflow", str(v))]
    finally:
        client.close()


class ServeProcess:
    """``rankflow serve`` as `make serve` runs it: a subprocess, stopped with SIGTERM."""

    def __init__(self, store: Path, extra: tuple[str, ...] = ()) -> None:
        self.store = store
        ports = TritonPorts.free()
        self.log = store.parent / f"serve-{ports.grpc}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rankflow.cli", "serve", "--store", str(store)]
            + ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc)]
            + ["--metrics-port", str(ports.metrics), *extra],
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


@pytest.mark.slow
def test_rollout_and_rollback_under_load_lose_no_request(
    repository, prepared, tmp_path, capsys, record_figures
):
    """`rankflow serve` on v1; v2 rolls out, a broken v3 is refused, `rankflow rollback` brings
    v1 back -- all under gRPC load at concurrency 8: zero failed requests."""
    root = tmp_path / "store"
    config = DeployConfig(model_store=str(root))
    assert deploy(repository, "rankflow", config=config).version == 1
    broken = tmp_path / "broken"
    shutil.copytree(repository, broken)
    shutil.rmtree(broken / "rankflow" / "1" / "ranker")  # loads the workflow, then fails
    # A genuine but broken export (resealed), not a tampered one: Triton must fail to load it.
    seal_versions(broken)
    integrity.seal(broken)
    rows = pq.read_table(prepared["test"]).to_pandas().head(16)

    serve = ServeProcess(root)
    with serve as server:
        assert _ready_versions(server.http_url) == [1]
        load = LoadRun(LoadConfig(server.grpc_url, concurrency=8, duration_s=900), rows)
        with load:
            load.wait_for(20)
            result = deploy(repository, "rankflow", config=config)  # finds the local server
            assert (result.version, result.previous) == (2, 1)
            assert result.servers == (server.http_url,)
            assert result.grpc_url == server.grpc_url
            assert _ready_versions(server.http_url) == [2]  # v1 retired once v2 was ready
            load.wait_for(20)

            with pytest.raises(
                DeployError, match=r"(?s)version 3 failed.*no saved ranker.*still serving version 2"
            ):
                deploy(broken, "rankflow", config=config)
            assert _ready_versions(server.http_url) == [2]
            assert _config_version(ModelStore(root), "rankflow") == [2]
            load.wait_for(20)

            assert main(["rollback", "--store", str(root)]) == 0
            back = json.loads(capsys.readouterr().out)
            assert (back["version"], back["previous"]) == (1, 2)
            assert _ready_versions(server.http_url) == [1]
            load.wait_for(20)
        assert load.report is not None
        record_figures("rollout_under_load", load.report.to_dict())
        assert (load.report.failed, load.report.errors) == (0, {})
        assert load.report.ok >= 80
        assert main(["query", "--url", server.grpc_url, "--input", str(prepared["test"])]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 10
    assert serve.code == 0
    assert not (root / ".triton.json").exists()
    # A restarted server comes back on the pinned version.
    with ServeProcess(root) as server:
        assert _ready_versions(server.http_url) == [1]


def test_triton_killed_under_load_is_restarted_on_the_serving_version(
    repository, prepared, tmp_path, record_figures
):
    """kill -9 of Triton while 8 callers score: the clients get a clear "cannot reach" error,
    `rankflow serve` restarts Triton on the version that was serving, and the store is as it
    was."""
    root = tmp_path / "store"
    config = DeployConfig(model_store=str(root))
    deploy(repository, "rankflow", config=config)
    deploy(repository, "rankflow", config=config)
    rollout_before = (root / "rankflow" / "rollout.json").read_text()
    rows = pq.read_table(prepared["test"]).to_pandas().head(16)
    with ServeProcess(root) as server:
        load = LoadRun(LoadConfig(server.grpc_url, concurrency=8, duration_s=600), rows)
        with load:
            load.wait_for(20)
            os.kill(server.pid, signal.SIGKILL)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                again = local_server(root)
                if again is not None and again.pid != server.pid:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("rankflow serve did not restart Triton in 240 s")
            assert again.grpc_url == server.grpc_url  # same ports: clients just retry
            load.wait_for(20)
            assert _ready_versions(again.http_url) == [2]
        report = load.report
        assert report is not None
        record_figures("triton_killed_under_load", report.to_dict())
        assert report.failed > 0
        assert all(
            "cannot reach Triton" in message or "failed on" in message for message in report.errors
        ), report.errors
        # Failures only while Triton was down, then requests succeed again.
        assert report.ok >= 40
    assert (root / "rankflow" / "rollout.json").read_text() == rollout_before
    assert not list(root.rglob("*.partial-*"))


def test_serve_gives_up_on_a_crash_loop(repository, tmp_path):
    root = tmp_path / "store"
    deploy(repository, "rankflow", config=DeployConfig(model_store=str(root)))
    serve = ServeProcess(root, extra=("--max-restarts", "0"))
    with serve as server:
        os.kill(server.pid, signal.SIGKILL)
        assert serve.process.wait(timeout=60) == 1
    assert "died 1 times in 300 s: not restarting it" in serve.log.read_text()
    assert not (root / ".triton.json").exists()
