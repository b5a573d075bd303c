"""The layer contract (pyproject.toml [tool.importlinter]) holds, and `lint-imports` fails on a
violation planted in a copy of the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rankflow", "components", "pipelines", "serving", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install's finder.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    copy = tmp_path / "tree"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=ignore)
    return copy


def _plant(path: Path, line: str) -> None:
    """Add an import inside a function body: lazy imports are dependencies too."""
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}  # noqa\n")


def test_the_tree_keeps_its_contracts(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        (
            "serving/scorer.py",
            "from components.training import ranker",
            "serving is not allowed to import components",
        ),
        (
            "rankflow/core/artifacts.py",
            "import serving.store",
            "rankflow.core is not allowed to import serving",
        ),
        (
            "components/evaluation/evaluate.py",
            "from components.training.ranker import build_ranker",
            "components.evaluation is not allowed to import components.training",
        ),
        (
            "pipelines/local.py",
            "from rankflow import cli",
            "pipelines is not allowed to import rankflow.cli",
        ),
        (
            "serving/python_model.py",
            "from rankflow import integrity",
            "rankflow.integrity",
        ),
    ],
    ids=["serving-to-step", "core-to-serving", "step-to-step", "pipelines-to-cli", "compat-shim"],
)
def test_a_planted_violation_fails_the_check(tree, module, line, expected):
    _plant(tree / module, line)
    result = _lint(tree)
    assert result.returncode != 0
    assert "0 broken" not in result.stdout
    assert expected in " ".join(result.stdout.split()), result.stdout
