"""A content fingerprint of the data step's inputs: what its cache key must depend on.

KFP keys a cached step on its inputs, and a path is just a string: a scheduled run reading a
fixed ``data_source`` would reuse the first run's data step forever. The pipeline runs this
fingerprint first, never cached, and hands it to the data step as a parameter: same bytes, same
key (a cache hit); changed bytes, a new key (the data step runs again).

Every file under the source counts with its relative path, size and modification time, and a
SHA-256 of its bytes: all of them up to :data:`WHOLE_FILE_BYTES`, else :data:`SAMPLES` blocks
spread over the file. A change of equal size inside an unsampled region of a huge file with its
mtime restored would go unseen: name the snapshot (``data_snapshot``) when the source can
change that way, or when listing it is costly. The spec file is always hashed whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Files up to this size are hashed whole.
WHOLE_FILE_BYTES = 64 * 1024 * 1024
#: Larger files: this many blocks of BLOCK_BYTES, evenly spaced from the first to the last.
SAMPLES = 16
BLOCK_BYTES = 1024 * 1024


def _file_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                digest.update(block)
        else:
            step = (size - BLOCK_BYTES) / (SAMPLES - 1)
            for i in range(SAMPLES):
                handle.seek(int(i * step))
                digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.is_file())


def _listing(source: Path) -> list[dict[str, object]]:
    files = []
    for path in _files(source):
        stat = path.stat()
        files.append(
            {
                "path": str(path.relative_to(source)) if path != source else path.name,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "sha256": _file_digest(path, stat.st_size),
            }
        )
    return files


def fingerprint(data_source: str, *, spec_path: str | None, snapshot: str | None) -> str:
    """A SHA-256 hex digest naming the bytes the data step will read (see the module doc).

    ``"synthetic"`` is its own fingerprint (the generator's parameters are the data step's own);
    ``snapshot`` replaces the listing of the source. A missing or unreadable source or spec is
    fingerprinted as such, never an error here: the data step, which runs next, says what is
    wrong with it.
    """
    entries: dict[str, object] = {}
    if spec_path:
        try:
            entries["spec"] = hashlib.sha256(Path(spec_path).read_bytes()).hexdigest()
        except OSError as err:
            entries["spec"] = f"unreadable: {err}"
    if snapshot:
        entries["snapshot"] = snapshot
    elif data_source == "synthetic":
        entries["source"] = "synthetic"
    else:
        try:
            entries["files"] = _listing(Path(data_source))
        except OSError as err:
            entries["files"] = f"unreadable: {err}"
        if not Path(data_source).exists():
            entries["files"] = f"missing: {data_source}"
    key = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    what = f"snapshot {snapshot!r}" if snapshot else f"{data_source}"
    logger.info("data fingerprint %s of %s", key[:16], what)
    return key
