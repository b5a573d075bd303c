"""One exception root: every exception class rankflow defines derives from RankflowError, and
its exit code says bad input (2) or failure (1)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from rankflow.core import errors

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rankflow", "components", "pipelines", "serving", "bench", "security")
#: Modules that import the heavy stack at import time, by design: the Triton models (run inside
#: Triton's python stub) and the Keras layers. Read, not imported.
HEAVY_AT_IMPORT = {"serving/python_model.py", "serving/ranker_model.py", "rankflow/core/layers.py"}


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in HEAVY_AT_IMPORT or path.name == "__main__.py":
                continue
            names.append(relative.removesuffix(".py").removesuffix("/__init__").replace("/", "."))
    return names


def test_every_exception_class_derives_from_rankflow_error():
    defined = []
    for name in _modules():
        module = importlib.import_module(name)  # module level imports are light (fast tier)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                defined.append(cls)
    assert len(defined) >= 15
    stray = [
        f"{c.__module__}.{c.__name__}" for c in defined if not issubclass(c, errors.RankflowError)
    ]
    assert stray == []


def test_modules_heavy_at_import_define_no_exceptions_of_their_own():
    for relative in HEAVY_AT_IMPORT:
        tree = ast.parse((ROOT / relative).read_text())
        assert not [
            n.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef) and n.name.endswith(("Error", "Exception"))
        ]


@pytest.mark.parametrize(
    ("cls", "code", "builtin"),
    [
        (errors.SpecError, 2, ValueError),
        (errors.DataValidationError, 2, ValueError),
        (errors.ConfigError, 2, ValueError),
        (errors.UsageError, 2, ValueError),
        (errors.ScoringError, 2, ValueError),
        (errors.MissingArtifactError, 2, FileNotFoundError),
        (errors.ClientInputError, 2, RuntimeError),
        (errors.IntegrityError, 1, RuntimeError),
        (errors.ExportError, 1, RuntimeError),
        (errors.TritonError, 1, RuntimeError),
        (errors.StoreError, 1, RuntimeError),
        (errors.DeployError, 1, RuntimeError),
        (errors.ClientError, 1, RuntimeError),
    ],
)
def test_exit_codes_and_the_builtins_they_still_are(cls, code, builtin):
    err = cls("what is wrong; how to fix it")
    assert isinstance(err, errors.RankflowError) and isinstance(err, builtin)
    assert err.exit_code == code


def test_old_import_paths_still_name_the_same_classes():
    """Users catch these by the names and modules they had."""
    from components.data.validate import DataValidationError
    from rankflow.core.integrity import IntegrityError
    from rankflow.core.spec import SpecError
    from serving.client import ClientError
    from serving.deploy import DeployError
    from serving.export import ExportError
    from serving.scorer import ScoringError
    from serving.store import StoreError
    from serving.triton import TritonError

    assert (DataValidationError, IntegrityError, SpecError, ClientError, DeployError) == (
        errors.DataValidationError,
        errors.IntegrityError,
        errors.SpecError,
        errors.ClientError,
        errors.DeployError,
    )
    assert (ExportError, ScoringError, StoreError, TritonError) == (
        errors.ExportError,
        errors.ScoringError,
        errors.StoreError,
        errors.TritonError,
    )
