"""Small I/O helpers shared by every step."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes ``final`` only if the block completes.

    A step that fails (or is killed) half-way leaves no half-written artifact at ``final``: the
    scratch directory sits beside it, so the closing rename is atomic on the same filesystem.
    The sha256 manifest (:mod:`rankflow.integrity`) is written before publishing, so every
    loader can check the artifact is the one written here.
    """
    from rankflow import integrity

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A writer that was killed (SIGKILL, OOM, node loss) could not clean up its scratch: the
    # next writer of the same artifact does.
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    scratch.mkdir()
    try:
        yield scratch
        integrity.seal(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    scratch.rename(final)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``path`` whole or not at all: a scratch file beside it, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        scratch.write_text(text)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return path


def persist_metrics(*artifacts) -> None:  # kfp.dsl.Metrics / ClassificationMetrics
    """Write each metrics artifact's values to its path as JSON.

    KFP keeps metrics in artifact metadata and writes no file; kfp.local's cache treats an
    output whose file is missing as a miss, so a step with metrics would never be reused by
    ``rankflow run --resume``. The file also lets anyone read the values without MLMD.
    """
    import json

    for artifact in artifacts:
        atomic_write_text(artifact.path, json.dumps(artifact.metadata, indent=2, default=str))


def harden_pyarrow() -> None:
    """Refuse pickled Arrow extension types before any parquet from outside is read.

    pyarrow 12 unpickles ``arrow.py_extension_type`` metadata when it reads a file: a crafted
    parquet runs code (CVE-2023-47248, fixed in pyarrow 14.0.1). ``pyarrow_hotfix`` turns that
    into an error; importing it once protects the whole process.
    """
    import pyarrow_hotfix  # noqa: F401


def parquet_parts(directory: str | Path) -> list[Path]:
    """The ``*.parquet`` files of a directory in part order (``part_2`` before ``part_10``).

    Merlin output directories also hold ``schema.pbtxt`` and metadata files that a plain
    parquet dataset reader would trip over.
    """

    def key(path: Path) -> tuple[int, str]:
        digits = "".join(ch for ch in path.stem if ch.isdigit())
        return (int(digits) if digits else -1, path.name)

    parts = sorted(Path(directory).glob("*.parquet"), key=key)
    if not parts:
        raise FileNotFoundError(f"no parquet files in {directory}")
    return parts
