"""The committed vulnerability report describes the committed lock."""

from __future__ import annotations

import re

import pytest

from security.audit import LOCK_MARKER, REPORT, lock_digest, render

pytestmark = pytest.mark.fast


def test_report_is_for_the_current_lock():
    text = REPORT.read_text()
    match = re.search(re.escape(LOCK_MARKER) + r"([0-9a-f]{64})`", text)
    assert match, "SECURITY.md has no lock digest: run `make audit`"
    assert match.group(1) == lock_digest(), (
        "requirements.lock changed since SECURITY.md was written: run `make audit` and review"
    )
    assert "| **unreviewed** |" not in text, "an advisory needs a reason in security/accepted.yaml"


def test_render_lists_each_advisory_with_its_reason():
    dependencies = [
        {"name": "tensorflow-cpu", "version": "2.12.1", "vulns": [
            {"id": "PYSEC-1", "aliases": ["CVE-2024-1", "GHSA-x"], "fix_versions": ["2.13.0"]},
        ]},
        {"name": "numpy", "version": "1.26.4", "vulns": [{"id": "GHSA-y", "fix_versions": []}]},
        {"name": "rankflow", "skip_reason": "not on PyPI"},
        {"name": "six", "version": "1.17.0", "vulns": []},
    ]  # fmt: skip
    text = render(dependencies, {"tensorflow-cpu": "merlin-models needs TF < 2.13"}, "ab" * 32)
    assert "4 packages audited, 2 advisories in 2 packages; not auditable on PyPI: rankflow" in text
    row = "| tensorflow-cpu | 2.12.1 | PYSEC-1 (CVE-2024-1) | 2.13.0 | {} |"
    assert row.format("merlin-models needs TF < 2.13") in text
    assert "| numpy | 1.26.4 | GHSA-y | none yet | **unreviewed** |" in text
    assert LOCK_MARKER + "ab" * 32 + "`" in text
