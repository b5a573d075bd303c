"""Check that rankflow's top-level package names are rankflow's alone in this environment.

``components``, ``pipelines`` and ``serving`` install as top-level names, as they lie in the
tree: every import resolves from the file layout, and model-store versions import
``serving.scorer`` inside Triton. That is safe only where no other installed distribution
brings a module of the same name, which pip would silently overwrite or shadow. ``make lint``
runs this in the venv and the Dockerfile runs it in the image:

    python -m rankflow.packaging
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

#: What rankflow installs at the top level (pyproject.toml [tool.setuptools.packages.find]).
TOP_LEVEL = ("rankflow", "components", "pipelines", "serving")
DISTRIBUTION = "rankflow"


def _top_level(dist: md.Distribution) -> set[str]:
    listed = dist.read_text("top_level.txt")
    if listed is not None:
        return {line.strip() for line in listed.splitlines() if line.strip()}
    names = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        names.add(first.removesuffix(".py"))
    return names


def problems(path: list[str] | None = None) -> list[str]:
    """Why these names are not rankflow's alone here (or on ``path``, a list of directories
    instead of ``sys.path``); empty when they are."""
    found = []
    dists = md.distributions() if path is None else md.distributions(path=path)
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if name == DISTRIBUTION:
            continue
        clash = sorted(_top_level(dist) & set(TOP_LEVEL))
        if clash:
            found.append(f"distribution {dist.metadata['Name']} also installs {clash}")
    root = Path(__file__).resolve().parent.parent
    for module in TOP_LEVEL:
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or root not in origin.parents:
            found.append(f"'{module}' resolves to {origin}, not to rankflow's tree {root}")
    return found


def main() -> int:
    found = problems()
    for problem in found:
        sys.stderr.write(f"rankflow packaging: {problem}\n")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
