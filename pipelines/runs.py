"""Run history: every local run in a directory of its own, ``runs/latest`` pointing at the newest.

``runs/<run-id>/`` (run id: start time + a short hash of the arguments, e.g.
``20261201-211230-3fa2c1``) holds ``run.json`` (arguments, status, the failure if any),
``summary.json`` once the run finished, the log, the report, the plots and every artifact. Runs are
never deleted, except by :meth:`RunHistory.prune` (``rankflow runs --keep N``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rankflow.core.errors import ConfigError, MissingArtifactError
from rankflow.core.io import atomic_write_text

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
SUMMARY = "summary.json"
LATEST = "latest"


def run_id(arguments: Mapping[str, Any], started: float) -> str:
    """``<UTC time>-<6 hex of the arguments>``: sorts by time, tells configurations apart."""
    digest = hashlib.sha256(json.dumps(dict(arguments), sort_keys=True, default=str).encode())
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}-{digest.hexdigest()[:6]}"


@dataclass(frozen=True)
class RunInfo:
    """One line of ``rankflow runs``."""

    id: str
    path: Path
    started: str
    status: str  # running | succeeded | failed
    arguments: Mapping[str, Any]
    summary: Mapping[str, Any] | None
    failure: Mapping[str, Any] | None

    @property
    def data(self) -> str:
        source = self.arguments.get("data_source", "synthetic")
        if source == "synthetic":
            rows = self.arguments.get("synthetic_rows")
            return f"synthetic {rows:,}" if isinstance(rows, int) else "synthetic"
        return str(source)

    @property
    def architecture(self) -> str:
        if self.summary is not None:
            return str(self.summary["model"]["architecture"])
        return str(self.arguments.get("architecture", "-"))

    def line(self) -> str:
        if self.summary is not None:
            aucs = " ".join(f"{task}={headline(m)}" for task, m in self.summary["metrics"].items())
            blessed = "yes" if self.summary["blessed"] else "no"
            version = self.summary["serving"]["version"]
            deployed = f"v{version}" if version is not None else "-"
        else:
            aucs, blessed, deployed = "-", "-", "-"
        status = self.status
        if self.failure is not None:
            status = f"failed at {self.failure['step']}"
        return (
            f"{self.id:<22} {status:<24} {self.data:<24} {self.architecture:<13} "
            f"{aucs:<32} {blessed:<7} {deployed}"
        )


HEADER = (
    f"{'RUN':<22} {'STATUS':<24} {'DATA':<24} {'ARCHITECTURE':<13} {'AUC':<32} "
    f"{'BLESSED':<7} DEPLOYED"
)


class RunHistory:
    """The run directories under ``root`` (``runs/`` by default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def latest_link(self) -> Path:
        return self.root / LATEST

    def create(self, arguments: Mapping[str, Any]) -> Path:
        """A new run directory for ``arguments``; ``latest`` points to it from now on."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._keep_legacy_latest()
        started = time.time()
        base = run_id(arguments, started)
        name, n = base, 1
        while (self.root / name).exists():  # two runs in one second with the same arguments
            n += 1
            name = f"{base}-{n}"
        run_dir = self.root / name
        run_dir.mkdir()
        self.write(
            run_dir,
            {
                "id": name,
                "started": _iso(started),
                "status": "running",
                "arguments": dict(arguments),
            },
        )
        self._point_latest(run_dir)
        return run_dir

    def latest(self) -> Path:
        """The newest run's directory (what ``--resume`` continues)."""
        link = self.latest_link
        if not link.exists():
            raise MissingArtifactError(
                f"no earlier run under {self.root} to resume: run without --resume first"
            )
        return link.resolve()

    @staticmethod
    def write(run_dir: Path, record: Mapping[str, Any]) -> None:
        atomic_write_text(
            Path(run_dir) / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n"
        )

    @staticmethod
    def update(run_dir: Path, **fields: Any) -> None:
        record = json.loads((Path(run_dir) / RUN_FILE).read_text())
        record.update(fields)
        RunHistory.write(run_dir, record)

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if path.is_symlink() or not (path / RUN_FILE).is_file():
                continue  # latest, the model store, anything that is not a run
            try:
                record = json.loads((path / RUN_FILE).read_text())
                summary_path = path / SUMMARY
                summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
            except ValueError as err:
                logger.warning("skipping %s: unreadable run record (%s)", path, err)
                continue
            found.append(
                RunInfo(
                    id=record.get("id", path.name),
                    path=path,
                    started=record.get("started", ""),
                    status=record.get("status", "unknown"),
                    arguments=record.get("arguments", {}),
                    summary=summary,
                    failure=record.get("failure"),
                )
            )
        return sorted(found, key=lambda r: (r.started, r.id))

    def prune(self, keep: int) -> list[str]:
        """Delete every run but the newest ``keep``; returns the ids removed."""
        if keep < 1:
            raise ConfigError(f"--keep must be >= 1 (the newest run is kept), got {keep}")
        runs = self.runs()
        removed = []
        for run in runs[: max(0, len(runs) - keep)]:
            shutil.rmtree(run.path)
            removed.append(run.id)
        if removed and not self.latest_link.exists():
            self._point_latest(runs[-1].path)
        return removed

    def _point_latest(self, run_dir: Path) -> None:
        link = self.latest_link
        scratch = self.root / f".{LATEST}.{os.getpid()}"
        scratch.unlink(missing_ok=True)
        scratch.symlink_to(run_dir.name)
        os.replace(scratch, link)

    def _keep_legacy_latest(self) -> None:
        """Before run history, every run was written into ``runs/latest`` itself: keep that run
        under a name of its own rather than replace it."""
        link = self.latest_link
        if link.is_dir() and not link.is_symlink():
            mtime = link.stat().st_mtime
            target = self.root / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(mtime))}-legacy"
            link.rename(target)
            if not (target / RUN_FILE).is_file():
                status = "succeeded" if (target / SUMMARY).is_file() else "unknown"
                self.write(
                    target,
                    {"id": target.name, "started": _iso(mtime), "status": status, "arguments": {}},
                )
            logger.warning("kept the run that was in %s as %s", link, target)


def _iso(seconds: float) -> str:
    """UTC, to the microsecond: runs started in the same second still sort in order."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds")


def format_runs(runs: Sequence[RunInfo]) -> str:
    if not runs:
        return "no runs yet: `make run` starts one"
    return "\n".join([HEADER, *(r.line() for r in runs)])


def headline(metrics: dict[str, Any]) -> str:
    """A task's headline number: AUC for a binary task, R² for a regression task."""
    if metrics.get("kind") == "regression":
        return f"R2:{metrics['r2']:.3f}"
    return f"{metrics['auc']:.4f}"
