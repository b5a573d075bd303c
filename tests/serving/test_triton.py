"""The local Triton launcher against a real tritonserver from the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from serving.triton import TritonConfig, TritonError, TritonServer, group_members, shm_regions

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 64
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ 1 ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""

ADD_ONE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x + 1)]))
        return out
"""


def _model(repo: Path, name: str, initialize: str = "") -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    source = ADD_ONE
    if initialize:
        source += "\n    def initialize(self, args):\n" + textwrap.indent(initialize, " " * 8)
    (repo / name / "1" / "model.py").write_text(source)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serves_a_python_model_and_stops_cleanly(tmp_path):
    import tritonclient.grpc as grpcclient

    _model(tmp_path, "add_one")
    server = TritonServer(TritonConfig(tmp_path, models=("add_one",)))
    with server:
        assert server.running
        assert shm_regions(server.shm_prefix), "the stub's regions carry this server's prefix"
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = grpcclient.InferInput("x", [3, 1], "FP32")
        x.set_data_from_numpy(np.array([[1], [2], [3]], dtype=np.float32))
        result = client.infer("add_one", [x]).as_numpy("y")
        np.testing.assert_array_equal(result, [[2], [3], [4]])
        assert server.grpc_url.startswith("127.0.0.1:")
    assert not server.running
    assert shm_regions(server.shm_prefix) == set()
    assert _port_free(server.config.ports.grpc) and _port_free(server.config.ports.http)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_triton_leaves_no_stub_and_no_shared_memory(tmp_path):
    """kill -9 of the server: its python-backend stubs (own processes, in Triton's session)
    survive it and ignore SIGTERM; stop() ends the whole group and removes their regions."""
    _model(tmp_path, "add_one")
    server = TritonServer(TritonConfig(tmp_path, models=("add_one",))).start()
    pgid = server.pid
    assert pgid is not None
    try:
        stubs = [pid for pid in group_members(pgid) if pid != pgid]
        assert stubs, "the python model runs in a stub process of Triton's group"
        assert shm_regions(server.shm_prefix), "the stub talks over shared memory"
        os.kill(pgid, signal.SIGKILL)
        time.sleep(2)
        assert not _alive(pgid)
        assert [pid for pid in stubs if _alive(pid)] == stubs  # what used to leak
    finally:
        server.stop()
    assert [pid for pid in stubs if _alive(pid)] == []
    assert group_members(pgid) == []
    assert shm_regions(server.shm_prefix) == set()
    assert not server.running


def test_stopping_one_server_leaves_the_regions_of_another(tmp_path):
    """Two Tritons on one host (a rollout runs two): the one that started first and stops first
    must not remove the regions of the other, which is still serving."""
    import tritonclient.grpc as grpcclient

    _model(tmp_path, "add_one")
    first = TritonServer(TritonConfig(tmp_path, models=("add_one",))).start()
    try:
        second = TritonServer(TritonConfig(tmp_path, models=("add_one",))).start()
    except BaseException:
        first.stop()
        raise
    try:
        assert first.shm_prefix != second.shm_prefix
        theirs = shm_regions(second.shm_prefix)
        assert theirs
        first.stop()
        assert shm_regions(second.shm_prefix) == theirs
        client = grpcclient.InferenceServerClient(second.grpc_url)
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[41]], dtype=np.float32))
        assert client.infer("add_one", [x]).as_numpy("y").tolist() == [[42.0]]
    finally:
        first.stop()
        second.stop()
    assert shm_regions(second.shm_prefix) == set()


def test_a_model_that_fails_to_load_is_reported_with_the_log(tmp_path):
    _model(tmp_path, "broken", initialize='raise RuntimeError("weights are corrupt")\n')
    server = TritonServer(TritonConfig(tmp_path, models=("broken",), ready_timeout_s=60))
    with pytest.raises(TritonError, match="weights are corrupt"):
        server.start()
    assert not server.running


def test_a_server_hanging_in_loading_times_out(tmp_path):
    _model(tmp_path, "slow", initialize="import time\ntime.sleep(600)\n")
    server = TritonServer(TritonConfig(tmp_path, models=("slow",), ready_timeout_s=4))
    with pytest.raises(TritonError, match="not ready after 4s"):
        server.start()
    assert not server.running


def test_missing_repository(tmp_path):
    with pytest.raises(TritonError, match="model repository not found"):
        TritonServer(TritonConfig(tmp_path / "absent")).start()


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_local_server_listens_on_loopback_only_in_explicit_mode(triton):
    """The local Triton is reachable from this machine only, and loads only what it is told."""
    import tritonclient.http as http

    # 127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} spell them.
    loopback = {
        "0100007F",
        "0000000000000000FFFF00000100007F",
        "00000000000000000000000001000000",
    }
    ports = triton.config.ports
    for port in (ports.http, ports.grpc, ports.metrics):
        addresses = _listening(port)
        assert addresses and addresses <= loopback, (port, addresses)
    client = http.InferenceServerClient(triton.http_url)
    try:
        index = client.get_model_repository_index()
        assert [(m["name"], m.get("state")) for m in index] == [("rankflow", "READY")]
        # Explicit model control: the server accepts load/unload requests (the deploy path).
        client.load_model("rankflow")
        assert client.is_model_ready("rankflow")
    finally:
        client.close()
