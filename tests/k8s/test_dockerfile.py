"""The Dockerfile can't be built here; these checks keep it consistent with the lock, the package
version, the manifests and the KFP runtime it must carry."""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import os
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import rankflow
from rankflow.core.image import IMAGE, REPOSITORY

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BASE_REPOSITORY = "nvcr.io/nvidia/merlin/merlin-tensorflow"
# The Python of the Merlin 23.08 images (Ubuntu 22.04); the venv's is 3.11.
IMAGE_PYTHON = "3.10"
IMAGE_PYTHON_FULL = "3.10.12"
# What kfp needs at runtime but the image keeps from its base, because the lock's pin can't be
# installed on IMAGE_PYTHON (checked below, so the list can't silently grow stale).
KEPT_FROM_BASE = {"python-dateutil", "pycparser"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\"';]+)$")


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            result.append((instruction.upper(), " ".join(args.split())))
    return result


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _makefile_bootstrap() -> dict[str, str]:
    """The pip/setuptools/wheel pins the Makefile bootstraps the venv with."""
    text = (ROOT / "Makefile").read_text()
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"\"(pip|setuptools|wheel)==([^\"]+)\"", text)
    }


INSTRUCTIONS = _instructions(DOCKERFILE.read_text())
RUNS = [args for instruction, args in INSTRUCTIONS if instruction == "RUN"]
PIP_INSTALLS = [
    shlex.split(command)
    for run in RUNS
    for command in re.split(r"&&|;", run)
    if re.search(r"\bpip install\b", command)
]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for words in PIP_INSTALLS:
        for word in words:
            match = PIN.match(word)
            if match:
                name = canonicalize_name(match[1])
                assert name not in pins, f"{name} installed twice"
                pins[name] = match[2]
    return pins


def test_base_image_is_the_merlin_release_of_the_lock():
    (base,) = [args for instruction, args in INSTRUCTIONS if instruction == "FROM"]
    repository, _, tag = base.partition(":")
    assert repository == BASE_REPOSITORY
    lock = _lock()
    major, minor, _ = lock["merlin-core"].split(".")
    assert tag == f"{int(major)}.{int(minor):02d}", "FROM tag and the lock's merlin-core disagree"
    for sibling in ("nvtabular", "merlin-systems", "merlin-dataloader"):
        assert lock[sibling].split(".")[:2] == [major, minor], sibling
    assert "latest" not in tag and "nightly" not in tag


def test_every_pin_is_the_lock_pin():
    lock, bootstrap = _lock(), _makefile_bootstrap()
    assert set(bootstrap) == {"pip", "setuptools", "wheel"}
    pins = _pins()
    assert pins
    for name, version in pins.items():
        expected = lock.get(name, bootstrap.get(name))
        assert expected is not None, f"{name} is neither in requirements.lock nor the Makefile"
        assert version == expected, f"{name}=={version} but the lock has {expected}"
    for name in ("kfp", "kfp-pipeline-spec", "kfp-server-api", "kfp-kubernetes", "protobuf"):
        assert name in pins, name
    assert pins["merlin-models"] == lock["merlin-models"]


def test_every_pip_install_uses_no_deps_and_no_unpinned_requirement():
    assert PIP_INSTALLS
    for words in PIP_INSTALLS:
        assert "--no-deps" in words, " ".join(words)
        targets = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
        assert targets, " ".join(words)
        for target in targets:
            assert PIN.match(target) or target == ".", f"unpinned: {target}"


def _runtime_closure(roots: list[str]) -> set[str]:
    """Distributions the roots need at runtime on IMAGE_PYTHON, from the venv's metadata."""
    environment = {"python_version": IMAGE_PYTHON, "python_full_version": IMAGE_PYTHON_FULL}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in md.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment | {"extra": ""}):
                continue
            todo.append(requirement.name)
    return seen


def test_the_kfp_runtime_is_complete():
    """kfp's whole requirement closure comes from the lock, so the executor runs on exactly the
    protobuf-6 stack the tests run on."""
    closure = _runtime_closure(["kfp", "kfp-kubernetes"])
    missing = closure - set(_pins())
    assert missing == KEPT_FROM_BASE, f"not installed from the lock: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(KEPT_FROM_BASE))
def test_what_is_kept_from_the_base_really_cannot_be_installed(name):
    lock = _lock()
    dist = md.distribution(name)
    assert dist.version == lock[name]
    requires_python = SpecifierSet(dist.metadata.get("Requires-Python") or "")
    assert not requires_python.contains(IMAGE_PYTHON_FULL)


def test_every_pinned_package_supports_the_image_python():
    lock = _lock()
    for name in _pins():
        if name in _makefile_bootstrap():
            continue
        dist = md.distribution(name)
        assert dist.version == lock[name], f"the venv's {name} is not the lock's"
        requires_python = SpecifierSet(dist.metadata.get("Requires-Python") or "")
        assert requires_python.contains(IMAGE_PYTHON_FULL), f"{name} needs Python {requires_python}"


def test_the_project_is_installed_without_dependencies_or_isolation():
    (project,) = [words for words in PIP_INSTALLS if "." in words]
    assert {"--no-deps", "--no-build-isolation"} <= set(project)
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"
    ]
    assert SpecifierSet(requires_python).contains(IMAGE_PYTHON_FULL)
    assert "--ignore-requires-python" not in project


def _copies() -> dict[str, str]:
    """COPY/ADD source -> where it lands, relative to the WORKDIR (Docker's rules: a directory's
    contents go to the destination, a file goes into a destination ending in "/")."""
    copies = {}
    for instruction, args in INSTRUCTIONS:
        if instruction in {"COPY", "ADD"}:
            *sources, destination = [w for w in args.split() if not w.startswith("--")]
            for source in sources:
                source = source.rstrip("/")
                if (ROOT / source).is_dir() or not destination.endswith(("/", ".")):
                    target = destination
                else:
                    target = f"{destination}/{Path(source).name}"
                copies[source] = os.path.normpath(target)
    return copies


def test_the_packages_pyproject_builds_are_copied_and_not_dockerignored():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    packages = [p.rstrip("*") for p in find["include"]]
    copies = _copies()
    for needed in ("pyproject.toml", pyproject["project"]["readme"], *packages):
        # Each lands where `pip install .` in the WORKDIR finds it.
        assert copies.get(needed) == needed, f"COPY {needed} {copies.get(needed)}"
    for package in packages:
        assert (ROOT / package / "__init__.py").is_file(), package
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copies:
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    for kept_out in (".venv", ".git", "runs", "tests"):
        assert kept_out in ignored, kept_out


def test_final_user_is_the_manifests_non_root_uid():
    users = [args for instruction, args in INSTRUCTIONS if instruction == "USER"]
    assert users and INSTRUCTIONS[-1][0] == "USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    deployment = yaml.safe_load((ROOT / "k8s/serving/base/deployment.yaml").read_text())
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_version_label_env_and_image_tag_agree():
    labels = dict(
        re.findall(r"([\w.]+)=\"([^\"]*)\"", " ".join(a for i, a in INSTRUCTIONS if i == "LABEL"))
    )
    assert labels["org.opencontainers.image.version"] == rankflow.__version__
    assert IMAGE.rpartition(":") == (REPOSITORY, ":", rankflow.__version__)
    assert "latest" not in IMAGE
    env = " ".join(args for instruction, args in INSTRUCTIONS if instruction == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env.split()


def test_the_image_build_checks_our_top_level_names_are_ours():
    """components, pipelines and serving are top-level names (pyproject.toml): the build fails
    if anything else in the base image claims one (rankflow.packaging)."""
    runs = [args for instruction, args in INSTRUCTIONS if instruction == "RUN"]
    (install,) = [r for r in runs if "--no-build-isolation ." in r]
    assert install.rstrip().endswith("python3 -m rankflow.packaging")
