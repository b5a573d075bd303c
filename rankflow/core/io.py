"""Small I/O helpers shared by every layer: atomic files, metrics files, safe parquet reads.

Sealed artifact directories are written with :func:`rankflow.core.artifacts.atomic_dir`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from rankflow.core.errors import MissingArtifactError


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
        raise MissingArtifactError(f"no parquet files in {directory}")
    return parts
