"""Artifact integrity: a sha256 manifest sealed into every artifact, checked before it is loaded.

Fitted NVTabular workflows and merlin-systems ensembles are pickles and the serving repository
holds python code, so loading a tampered artifact runs the tamperer's code. Every directory the
pipeline writes carries ``_SHA256SUMS`` (``sha256sum`` format: ``cd <dir> && sha256sum -c
_SHA256SUMS`` checks it by hand); every KFP artifact also records its digest in its metadata
(``sha256``: of the file, or of a directory's manifest), so swapping a directory *and* its
manifest is caught too. Loaders refuse an artifact whose files, manifest or digest disagree.

The leading underscore keeps the manifest out of parquet dataset discovery (pyarrow and Dask
skip ``_``-prefixed files).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from rankflow.core.errors import IntegrityError

logger = logging.getLogger(__name__)

MANIFEST = "_SHA256SUMS"
METADATA_KEY = "sha256"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every regular file under ``directory`` (POSIX relative paths), the manifest excepted."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            relative = (Path(root) / name).relative_to(directory).as_posix()
            if relative != MANIFEST:
                found.append(relative)
    return sorted(found)


def _manifest_text(directory: Path) -> str:
    return "".join(f"{sha256_file(directory / f)}  {f}\n" for f in _files(directory))


def seal(directory: str | Path) -> str:
    """Write ``directory``'s manifest; returns the artifact digest (the manifest's sha256).

    Symlinks are refused: a manifest could not vouch for where they point.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IntegrityError(f"cannot seal {directory}: not a directory")
    links = [p for p in directory.rglob("*") if p.is_symlink()]
    if links:
        raise IntegrityError(f"cannot seal {directory}: it holds symlinks {links[:3]}")
    from rankflow.core.io import atomic_write_text

    text = _manifest_text(directory)
    atomic_write_text(directory / MANIFEST, text)
    return hashlib.sha256(text.encode()).hexdigest()


def _parse(directory: Path) -> dict[str, str]:
    path = directory / MANIFEST
    if not path.is_file():
        raise IntegrityError(
            f"{directory} has no {MANIFEST}: not written by rankflow (or stripped of its "
            "manifest); refusing to load it"
        )
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise IntegrityError(f"{path}: line {number} is not '<sha256>  <file>'")
        entries[name] = digest
    return entries


def verify(directory: str | Path, *, expected: str | None = None) -> str:
    """Check every file of ``directory`` against its manifest (and the manifest against
    ``expected``, the digest recorded when it was sealed). Returns the digest.

    Raises :class:`IntegrityError` naming the changed, missing and unexpected files.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IntegrityError(f"artifact {directory} is missing (or not a directory)")
    entries = _parse(directory)
    digest = sha256_file(directory / MANIFEST)
    if expected is not None and digest != expected:
        raise IntegrityError(
            f"{directory}: manifest digest {digest[:12]} is not the {expected[:12]} recorded "
            "when the artifact was written; refusing to load it"
        )
    present = _files(directory)
    changed = [f for f in present if f in entries and sha256_file(directory / f) != entries[f]]
    missing = sorted(set(entries) - set(present))
    unexpected = sorted(set(present) - set(entries))
    links = [p for p in directory.rglob("*") if p.is_symlink()]
    if changed or missing or unexpected or links:
        problems = []
        if changed:
            problems.append(f"changed {changed[:5]}")
        if missing:
            problems.append(f"missing {missing[:5]}")
        if unexpected:
            problems.append(f"not in the manifest {unexpected[:5]}")
        if links:
            problems.append(f"symlinks {[str(p) for p in links[:3]]}")
        raise IntegrityError(
            f"{directory} does not match its {MANIFEST}: {'; '.join(problems)}; refusing to load it"
        )
    logger.debug("verified %d files of %s", len(present), directory)
    return digest


def digest(path: str | Path) -> str:
    """The artifact digest of ``path``: a file's sha256, or a sealed directory's manifest's.

    A directory's files are not hashed again here: ``seal`` just did, and ``verify`` does
    wherever the artifact is loaded.
    """
    path = Path(path)
    if path.is_dir():
        _parse(path)  # sealed, and the manifest well-formed
        return sha256_file(path / MANIFEST)
    if not path.is_file():
        raise IntegrityError(f"artifact {path} is missing")
    return sha256_file(path)


def check(path: str | Path, expected: str | None) -> Path:
    """``path`` after checking it against the digest its producer recorded.

    ``expected`` None means the producer recorded none (an artifact imported from outside the
    pipeline): a directory must still match its own manifest.
    """
    path = Path(path)
    if path.is_dir():
        verify(path, expected=expected)
    elif expected is not None:
        actual = digest(path)
        if actual != expected:
            raise IntegrityError(
                f"{path}: sha256 {actual[:12]} is not the {expected[:12]} recorded when it was "
                "written; refusing to use it"
            )
    elif not path.exists():
        raise IntegrityError(f"artifact {path} is missing")
    return path


def record(artifact) -> str:  # artifact: kfp.dsl.Artifact
    """Record a KFP output artifact's digest in its metadata."""
    value = digest(artifact.path)
    artifact.metadata[METADATA_KEY] = value
    return value


def checked(artifact) -> Path:  # artifact: kfp.dsl.Artifact
    """A KFP input artifact's path, after checking it against the digest its producer recorded."""
    return check(artifact.path, artifact.metadata.get(METADATA_KEY))
