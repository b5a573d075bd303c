"""Known vulnerabilities of requirements.lock, written to SECURITY.md.

    python -m security.audit [--pip-audit PATH]   # `make audit`

Runs pip-audit (its own venv: it is a tool, not a dependency) on the lock exactly as pinned
(``--no-deps --disable-pip``; PyPI's advisory data, the one vulnerability service reachable
here) and renders every finding with the reason its pin stays, from ``security/accepted.yaml``.
Pins the stack requires (TensorFlow 2.12 for merlin-models, numpy < 2 for pytriton, ...) are
not upgraded silently: a finding without a reason is listed as **unreviewed**. The report
records the lock's sha256, so a test can tell when it no longer describes the lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
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


def render(dependencies: list[dict[str, Any]], accepted: dict[str, str], digest: str) -> str:
    findings = [
        (dep["name"], dep["version"], vuln) for dep in dependencies for vuln in dep.get("vulns", [])
    ]
    skipped = [dep["name"] for dep in dependencies if dep.get("skip_reason")]
    lines = [
        "# Security",
        "",
        "Known vulnerabilities of the pinned dependencies (`requirements.lock`), from "
        "`make audit` (pip-audit, PyPI advisory data) on "
        f"{time.strftime('%Y-%m-%d')}. {LOCK_MARKER}{digest}` (a test fails when the lock "
        "changes and this report does not).",
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
        "or served (`rankflow/integrity.py`, RELIABILITY.md).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m security.audit", description=__doc__)
    parser.add_argument("--pip-audit", type=Path, required=True, help="the pip-audit executable")
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    accepted = {
        str(k).lower(): str(v) for k, v in (yaml.safe_load(ACCEPTED.read_text()) or {}).items()
    }
    dependencies = run_pip_audit(args.pip_audit, args.lock)
    args.out.write_text(render(dependencies, accepted, lock_digest(args.lock)))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
