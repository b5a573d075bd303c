"""No credential is ever committed: every tracked file is scanned for secret-shaped text."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA |ENCRYPTED )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "assigned secret": re.compile(
        r"(?i)(password|passwd|secret_access_key|api_key|auth_token)\b\s*[:=]\s*"
        r"[\"']?(?!\$\{|<|\{\{)[^\s\"',)]{8,}"
    ),
}


def scan(text: str) -> list[str]:
    return [name for name, pattern in PATTERNS.items() if pattern.search(text)]


@pytest.mark.parametrize(
    "leak",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "token: ghp_" + "a" * 36,
        'password: "hunter2hunter2"',
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    ],
)
def test_the_scanner_catches_secret_shaped_text(leak):
    assert scan(leak)


def _tracked() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [ROOT / name for name in listed.split("\0") if name]


def test_no_tracked_file_holds_a_credential():
    files = _tracked()
    assert len(files) > 50
    leaks = {}
    for path in files:
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary (plots)
        found = scan(text)
        if found:
            leaks[str(path.relative_to(ROOT))] = found
    assert leaks == {}


def test_no_manifest_carries_a_secret_object():
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc.get("kind") != "Secret", path
