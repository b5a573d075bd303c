"""Every import of rankflow's own packages resolves from the file layout alone: a module path is
a file under the repository root, and a name imported from it is defined there. This is how ruff,
type checkers and the tests find them (no package-dir mapping, no install needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
OURS = ("rankflow", "components", "pipelines", "serving", "bench", "security", "tests")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defined(path: Path) -> set[str]:
    """Names bound at module level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elements = target.elts if isinstance(target, ast.Tuple) else [target]
                names |= {t.id for t in elements if isinstance(t, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If):  # TYPE_CHECKING blocks
            for inner in node.body:
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    names |= {(a.asname or a.name).split(".")[0] for a in inner.names}
    return names


def _sources() -> list[Path]:
    files = []
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "fixtures/store-" not in path.as_posix():  # frozen exports of past releases
                files.append(path)
    return files


def test_every_own_import_resolves_from_the_tree():
    unresolved = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, name in modules:
                if module.split(".")[0] not in OURS:
                    continue
                target = _module_file(module)
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if target is None:
                    unresolved.append(f"{where}: no file for {module}")
                elif (
                    name is not None
                    and _module_file(f"{module}.{name}") is None
                    and name not in _defined(target)
                ):
                    unresolved.append(f"{where}: {module} defines no {name}")
    assert unresolved == []
