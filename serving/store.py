"""A versioned Triton model store: numbered versions, one pinned serving version, rollback.

Layout (a Triton model repository, so a server points ``--model-repository`` at it)::

    <store>/<model>/config.pbtxt          # version_policy pinned to the serving version
    <store>/<model>/<N>/...               # what the exporter wrote for that model, version N
    <store>/<model>/<N>/exported.pbtxt    # the exporter's config of version N (rollback source)
    <store>/<endpoint>/rollout.json       # the endpoint's model set and deploy history

An exported repository may hold several models (an ensemble and its steps); they are published
and pinned together under one version number, the endpoint last, so a server that re-reads the
store never pairs a new step with an old endpoint. Every write is staged beside its target and
renamed into place: a killed deploy leaves the store serving what it served before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankflow.core import integrity
from rankflow.core.contract import EndpointContract, check_format, read_manifest
from rankflow.core.errors import ConfigError, IntegrityError, StoreError
from rankflow.core.io import atomic_write_text

logger = logging.getLogger(__name__)

EXPORTED_CONFIG = "exported.pbtxt"
ROLLOUT = "rollout.json"
#: The store's writer lock: one deploy, rollback or prune at a time (see ModelStore.locked).
LOCK_FILE = ".rankflow.lock"


@dataclass(frozen=True)
class Rollout:
    """The endpoint's model set and its deploy history (versions activated, newest last)."""

    endpoint: str
    models: tuple[str, ...]
    history: tuple[int, ...] = ()
    events: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    @property
    def serving(self) -> int | None:
        return self.history[-1] if self.history else None


def _read_config(path: Path) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (OSError, text_format.ParseError) as err:
        raise StoreError(f"unreadable Triton model config {path}: {err}") from err


def _verified(version_dir: Path) -> Path:
    try:
        integrity.verify(version_dir)
    except IntegrityError as err:
        raise StoreError(str(err)) from err
    return version_dir


def _version_dirs(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def repository_models(repository: Path, endpoint: str) -> tuple[str, ...]:
    """The models of an exported repository, ``endpoint`` last; checks each has one version."""
    repository = Path(repository)
    if not (repository / endpoint / "config.pbtxt").is_file():
        raise StoreError(f"{repository} has no model {endpoint!r} (no {endpoint}/config.pbtxt)")
    models = sorted(
        p.name for p in repository.iterdir() if p.is_dir() and (p / "config.pbtxt").is_file()
    )
    for name in models:
        config = _read_config(repository / name / "config.pbtxt")
        if config.name and config.name != name:
            raise StoreError(f"{repository}/{name}/config.pbtxt names the model {config.name!r}")
        if len(_version_dirs(repository / name)) != 1:
            raise StoreError(f"{repository}/{name} must hold exactly one version directory")
    return tuple(m for m in models if m != endpoint) + (endpoint,)


def repository_contract(repository: Path, endpoint: str) -> EndpointContract:
    """The endpoint contract an exported (not yet published) repository records."""
    model_dir = Path(repository) / endpoint
    (version,) = _version_dirs(model_dir)
    config = _read_config(model_dir / "config.pbtxt")
    return read_manifest(model_dir / str(version), config=config).contract


class ModelStore:
    """Publish exported repositories as numbered versions; pin, roll forward and back."""

    def __init__(self, root: str | Path, *, keep: int = 5) -> None:
        if keep < 2:
            raise ConfigError("keep at least 2 versions, or there is nothing to roll back to")
        self.root = Path(root)
        self.keep = keep

    # -- reading ---------------------------------------------------------------------------
    def rollout(self, endpoint: str) -> Rollout | None:
        path = self.root / endpoint / ROLLOUT
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
            return Rollout(
                endpoint=endpoint,
                models=tuple(state["models"]),
                history=tuple(int(v) for v in state["history"]),
                events=tuple(state.get("events", ())),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise StoreError(f"corrupt rollout state {path}: {err}") from err

    def serving_version(self, endpoint: str) -> int | None:
        rollout = self.rollout(endpoint)
        return None if rollout is None else rollout.serving

    def versions(self, model: str) -> list[int]:
        directory = self.root / model
        return _version_dirs(directory) if directory.is_dir() else []

    def endpoints(self) -> list[str]:
        """Endpoints with a serving version: what a restarted server should load."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if (p / ROLLOUT).is_file() and self.serving_version(p.name) is not None
        )

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, *, timeout_s: float = 600.0, poll_s: float = 0.2) -> Iterator[None]:
        """Hold the store's writer lock: an exclusive ``flock`` on ``<store>/.rankflow.lock``.

        Two runs deploying at once otherwise race on version numbers and on the rollout state,
        and "check what serves, then deploy" is a check-then-act race. flock is advisory and
        released by the kernel when its holder dies, so a killed deploy never wedges the store;
        on a cluster the store is a ReadWriteMany volume, and Linux's NFS client turns flock
        into an NFS byte-range lock the server arbitrates.
        The holder's pid and purpose are written into the file for the error a waiter sees.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        handle = path.open("a+")
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "unknown"
                        raise StoreError(
                            f"the model store {self.root} is locked by another writer ({holder}) "
                            f"for over {timeout_s:.0f} s: let it finish or stop it; the lock goes "
                            "with its process"
                        ) from None
                    time.sleep(poll_s)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # releases the lock

    def publish(self, repository: str | Path, endpoint: str) -> int:
        """Copy the repository's models in as the next version; nothing serves it yet."""
        repository = Path(repository)
        models = repository_models(repository, endpoint)
        previous = self.rollout(endpoint)
        if previous is not None and set(previous.models) != set(models):
            raise StoreError(
                f"{endpoint!r} is served as models {list(previous.models)}; the new repository "
                f"has {list(models)}: publish it under another endpoint name"
            )
        version = 1 + max((v for m in models for v in self.versions(m)), default=0)
        staged: list[tuple[Path, Path]] = []
        try:
            (endpoint_version,) = _version_dirs(repository / endpoint)
            self._servable(repository / endpoint, endpoint_version, f"{repository}/{endpoint}")
            for model in models:
                source = repository / model
                (exported,) = _version_dirs(source)
                _verified(source / str(exported))
                target = self.root / model / str(version)
                scratch = target.with_name(f".{version}.partial-{uuid.uuid4().hex[:8]}")
                shutil.copytree(source / str(exported), scratch)
                shutil.copyfile(source / "config.pbtxt", scratch / EXPORTED_CONFIG)
                # Resealed with the exported config in it: Triton loads this directory.
                integrity.seal(scratch)
                staged.append((scratch, target))
            for scratch, target in staged:
                scratch.rename(target)
        except BaseException:
            # The version number was free: whatever of it exists is ours to remove.
            for scratch, target in staged:
                shutil.rmtree(scratch, ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
            raise
        if previous is None:
            self._save(Rollout(endpoint=endpoint, models=models))
        logger.info("published %s version %d into %s", endpoint, version, self.root)
        return version

    def pin(self, endpoint: str, version: int, *, action: str) -> Rollout:
        """Make ``version`` the one the store serves: configs pinned, history updated."""
        rollout = self.rollout(endpoint)
        if rollout is None:
            raise StoreError(f"no endpoint {endpoint!r} in the model store {self.root}")
        self._pin_configs(rollout.models, version)
        if action == "rollback":
            history = rollout.history[:-1]
            if not history or history[-1] != version:
                history = history + (version,)
        else:
            history = rollout.history + (version,)
        event = {"action": action, "version": version, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        updated = Rollout(endpoint, rollout.models, history, rollout.events + (event,))
        self._save(updated)
        return updated

    def unpin(self, endpoint: str, version: int | None) -> None:
        """Restore the configs to ``version`` (or remove them) without touching the history."""
        rollout = self.rollout(endpoint)
        if rollout is None:
            return
        if version is None:
            for model in rollout.models:
                (self.root / model / "config.pbtxt").unlink(missing_ok=True)
        else:
            self._pin_configs(rollout.models, version)

    def verify(self, endpoint: str, version: int) -> None:
        """Check every model of ``endpoint`` at ``version`` against its sha256 manifest, and that
        this release can serve it (its serving format)."""
        rollout = self.rollout(endpoint)
        if rollout is None:
            raise StoreError(f"no endpoint {endpoint!r} in the model store {self.root}")
        for model in rollout.models:
            _verified(self.root / model / str(version))
        self._servable(self.root / endpoint, version, f"version {version} of {endpoint!r}")

    def contract(self, endpoint: str, version: int | None = None) -> EndpointContract:
        """What ``endpoint`` at ``version`` (default: the serving one) takes and returns."""
        return self.manifest(endpoint, version).contract

    def manifest(self, endpoint: str, version: int | None = None):  # -> ServingManifest
        """The ``rankflow.json`` of ``endpoint`` at ``version`` (default: the serving one)."""
        if version is None:
            version = self.serving_version(endpoint)
            if version is None:
                raise StoreError(f"{endpoint!r} serves no version in the model store {self.root}")
        directory = self.root / endpoint / str(version)
        if not directory.is_dir():
            raise StoreError(f"version {version} of {endpoint!r} is not in the store {self.root}")
        return self._manifest(directory, directory / EXPORTED_CONFIG)

    @staticmethod
    def _manifest(version_dir: Path, config_path: Path):  # -> ServingManifest
        return read_manifest(version_dir, config=_read_config(config_path))

    def _servable(self, model_dir: Path, version: int, where: str) -> None:
        config = model_dir / str(version) / EXPORTED_CONFIG
        if not config.is_file():  # an exported repository, not yet in the store
            config = model_dir / "config.pbtxt"
        check_format(self._manifest(model_dir / str(version), config), where)

    def previous_version(self, endpoint: str) -> int:
        rollout = self.rollout(endpoint)
        if rollout is None or len(rollout.history) < 2:
            raise StoreError(f"{endpoint!r} has no earlier deployed version to roll back to")
        version = rollout.history[-2]
        missing = [m for m in rollout.models if version not in self.versions(m)]
        if missing:
            raise StoreError(f"version {version} of {missing} was pruned from the store")
        return version

    def prune(self, endpoint: str) -> list[int]:
        """Remove versions beyond the newest ``keep``, never one in the recent history."""
        rollout = self.rollout(endpoint)
        if rollout is None:
            return []
        protected = set(rollout.history[-self.keep :])
        removed: list[int] = []
        for version in self.versions(rollout.endpoint)[: -self.keep]:
            if version in protected:
                continue
            for model in rollout.models:
                shutil.rmtree(self.root / model / str(version), ignore_errors=True)
            removed.append(version)
        return removed

    def _pin_configs(self, models: tuple[str, ...], version: int) -> None:
        from google.protobuf import text_format

        configs = {}
        for model in models:
            exported = self.root / model / str(version) / EXPORTED_CONFIG
            if not exported.is_file():
                raise StoreError(f"version {version} of {model!r} is not in the store {self.root}")
            config = _read_config(exported)
            config.version_policy.specific.versions[:] = [version]
            # An ensemble names its steps' versions as exported; in the store the whole set
            # carries one number, so its steps are pinned along.
            for step in config.ensemble_scheduling.step:
                if step.model_name in models:
                    step.model_version = version
            configs[model] = text_format.MessageToString(config)
        # Steps before the endpoint, so the endpoint never points at a step that isn't there.
        for model in models:
            atomic_write_text(self.root / model / "config.pbtxt", configs[model])

    def _save(self, rollout: Rollout) -> None:
        directory = self.root / rollout.endpoint
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "endpoint": rollout.endpoint,
            "models": list(rollout.models),
            "history": list(rollout.history),
            "serving": rollout.serving,
            "events": list(rollout.events),
        }
        atomic_write_text(directory / ROLLOUT, json.dumps(state, indent=2) + "\n")
