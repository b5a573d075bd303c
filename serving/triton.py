"""A real Triton Inference Server process, run from the binary inside the nvidia-pytriton wheel.

That Triton has the python backend and ensembles but no TensorFlow backend. It is started directly
against a model repository, on loopback ports, in explicit model-control mode; a misconfigured
server hangs in loading instead of exiting, so readiness is awaited with a timeout that also
watches the process.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from rankflow.core.errors import TritonError

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
#: Each server names its python-backend regions with a prefix of its own, so that stopping one
#: never removes the regions of another Triton on the same host (a rollout runs two at once).
SHM_PREFIX = "rankflow_triton_"
#: Where the NGC Triton/Merlin images install the server (with its TensorFlow backend).
SYSTEM_TRITON = Path("/opt/tritonserver")


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> TritonPorts:
        """Three currently free loopback ports."""
        sockets = [socket.socket() for _ in range(3)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            http, grpc, metrics = (s.getsockname()[1] for s in sockets)
        finally:
            for s in sockets:
                s.close()
        return cls(http=http, grpc=grpc, metrics=metrics)


@dataclass(frozen=True)
class TritonConfig:
    """How to run the server. ``models`` are loaded at start-up (explicit control mode)."""

    model_repository: Path
    ports: TritonPorts = field(default_factory=TritonPorts.free)
    models: tuple[str, ...] = ()
    ready_timeout_s: float = 120.0
    log_verbose: int = 0


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def _has_pytriton() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytriton") is not None


def _binary() -> Path:
    """The nvidia-pytriton wheel's server if installed (local), else the image's own."""
    if _has_pytriton():
        return _pytriton_root() / "bin" / "tritonserver"
    if (SYSTEM_TRITON / "bin" / "tritonserver").is_file():
        return SYSTEM_TRITON / "bin" / "tritonserver"
    raise TritonError(
        f"no Triton server: install nvidia-pytriton or run in an image with {SYSTEM_TRITON}"
    )


def _backend_directory(scratch: Path) -> Path:
    """A backend dir whose python backend has the stub built for the running Python."""
    if not _has_pytriton():
        # The image's server ships its backends, stub built for the image's Python.
        return SYSTEM_TRITON / "backends"
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"nvidia-pytriton ships no python backend stub for Python {version}")
    python = scratch / "backends" / "python"
    python.mkdir(parents=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        (python / source.name).symlink_to(source)
    return scratch / "backends"


def _environment() -> dict[str, str]:
    # The stub is a separate process that embeds this interpreter: it needs the venv's python
    # first on PATH and libpython plus the wheel's bundled libraries on the loader path.
    env = dict(os.environ)
    if not _has_pytriton():
        return env
    libs = _pytriton_root().parent.parent / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def shm_regions(prefix: str = SHM_PREFIX) -> set[str]:
    """The python-backend shared-memory regions whose names start with ``prefix``."""
    return set(glob.glob(str(SHM_DIR / f"{prefix}*")))


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.split("/")[2]))
    return members


def end_group(pgid: int, timeout_s: float = 30.0) -> None:
    """SIGKILL every process left in group ``pgid`` and wait until none is alive."""
    deadline = time.monotonic() + timeout_s
    while members := group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TritonError(f"processes {members} of Triton's group {pgid} survive SIGKILL")
        time.sleep(0.05)


class TritonServer:
    """``with TritonServer(config) as server:`` -- started, ready, then stopped cleanly."""

    def __init__(self, config: TritonConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None
        #: Set by :meth:`start`: the name prefix of this run's shared-memory regions.
        self.shm_prefix: str | None = None
        self.log_path: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.config.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.config.ports.http}"

    def command(self, backend_directory: Path) -> Sequence[str]:
        ports = self.config.ports
        command = [
            str(_binary()),
            f"--model-repository={self.config.model_repository}",
            f"--backend-directory={backend_directory}",
            "--model-control-mode=explicit",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--allow-http=true",
            "--allow-grpc=true",
            "--allow-metrics=true",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={ports.http}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-port={ports.metrics}",
            f"--log-verbose={self.config.log_verbose}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        command += [f"--load-model={name}" for name in self.config.models]
        return command

    def start(self, *, wait: bool = True) -> TritonServer:
        """Launch the server; with ``wait=False`` return at once (call :meth:`wait_ready` later, and
        :meth:`stop` in any case) so the caller can work while Triton loads its models."""
        if self._process is not None:
            raise TritonError("this Triton server is already running")
        if not Path(self.config.model_repository).is_dir():
            raise TritonError(f"model repository not found: {self.config.model_repository}")
        self._scratch = Path(tempfile.mkdtemp(prefix="rankflow-triton-"))
        self.shm_prefix = f"{SHM_PREFIX}{uuid.uuid4().hex[:16]}_"
        self.log_path = self._scratch / "tritonserver.log"
        command = self.command(_backend_directory(self._scratch))
        logger.info("starting Triton: gRPC %s, HTTP %s", self.grpc_url, self.http_url)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(),
                start_new_session=True,
            )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()
                raise
        return self

    def _is_ready(self) -> bool:
        import tritonclient.http as http

        client = http.InferenceServerClient(self.http_url, connection_timeout=2.0)
        try:
            if not (client.is_server_live() and client.is_server_ready()):
                return False
            return all(client.is_model_ready(name) for name in self.config.models)
        except Exception:  # not up yet: connection refused, reset, 503
            return False
        finally:
            client.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise TritonError(
                    f"Triton exited with code {code} while starting:\n{self.log_tail()}"
                )
            if self._is_ready():
                logger.info("Triton ready with models %s", list(self.config.models))
                return
            time.sleep(0.25)
        raise TritonError(
            f"Triton not ready after {self.config.ready_timeout_s:.0f}s "
            f"(models {list(self.config.models)}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; then end whatever is left of the server's process
        group and remove our python-backend shared-memory regions.

        Triton runs in a session of its own, and its python-backend stubs are in it. A Triton
        that was killed (or crashed) leaves its stubs running, orphaned, and they ignore
        SIGTERM: the group is always killed as a whole, whatever state the server is in.
        """
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning("Triton ignored SIGTERM for %.0fs; killing it", timeout_s)
            end_group(process.pid)
            process.wait()
        if self.shm_prefix:
            # Left only when a stub died hard; the prefix is this server's alone.
            for region in shm_regions(self.shm_prefix):
                Path(region).unlink(missing_ok=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
