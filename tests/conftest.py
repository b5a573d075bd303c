"""Shared fixtures (one small real dataset, its features and a trained ranker per session), the
fast tier, the GPU skip, and the check that the suite leaves no process behind."""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import signal
import sys
import uuid
import warnings
from pathlib import Path

import pytest

# Quiet TF's C++ banner in test logs; set before any test imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")

SMALL_ROWS = 30_000
#: The synthetic log's label columns (every task's target): what serving drops from the workflow.
TARGETS = ("click", "conversion", "long_view", "dwell_seconds")

#: What the fast tier must not import: the heavy stack.
HEAVY = ("merlin", "nvtabular", "tensorflow", "keras", "tritonclient", "pytriton", "cudf")
#: Processes a test may start that must not outlive the suite.
SERVER_PROCESSES = ("tritonserver", "triton_python_backend_stub")
SESSION_VARIABLE = "RANKFLOW_TEST_SESSION"


class _RefuseHeavy(importlib.abc.MetaPathFinder):
    """Fails any import of the heavy stack: a fast test that needs it is not fast."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in HEAVY:
            raise ImportError(f"the fast tier imports no {name} (mark the test not fast)")
        return None


def pytest_addoption(parser):
    parser.addoption(
        "--fast-tier",
        action="store_true",
        help="run only the tests marked fast, refusing any import of Merlin, TF or Triton",
    )


def pytest_configure(config):
    # Every process the tests start inherits this: how the leftover check knows them. An xdist
    # worker keeps the controller's, so the controller's check sees every worker's servers.
    if not hasattr(config, "workerinput") or SESSION_VARIABLE not in os.environ:
        os.environ[SESSION_VARIABLE] = uuid.uuid4().hex
    if config.getoption("--fast-tier"):
        loaded = sorted(m for m in sys.modules if m.split(".", 1)[0] in HEAVY)
        if loaded:
            raise pytest.UsageError(f"the heavy stack is already imported: {loaded[:5]}")
        sys.meta_path.insert(0, _RefuseHeavy())
        config.option.markexpr = "fast"


def pytest_collection_modifyitems(config, items):
    # Modules holding a slow test run first: with `-n 2 --dist loadscope` (make test) a module
    # runs on one worker, and a several-minute module started last would be the run's tail.
    slow = {item.module.__name__ for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.module.__name__ not in slow)
    if not any("gpu" in item.keywords for item in items):
        return
    from rankflow.core.device import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with cudf")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def leftover_servers(session_id: str) -> list[tuple[int, str]]:
    """Live Triton servers and python-backend stubs started by this test session: they inherit
    its ``RANKFLOW_TEST_SESSION`` (a ``make serve`` running beside the tests does not)."""
    marker = f"{SESSION_VARIABLE}={session_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if (
            state != "Z"
            and marker in environment
            and any(name in command for name in SERVER_PROCESSES)
        ):
            found.append((int(entry.name), command.strip()[:120]))
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a Triton or one of its stubs outlived the tests (and end them)."""
    if hasattr(session.config, "workerinput"):
        return
    left = leftover_servers(os.environ[SESSION_VARIABLE])
    if not left:
        return
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  pid {pid}: {command}" for pid, command in left]
    message = "the tests left Triton processes running (killed now):\n" + "\n".join(lines)
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """A real synthetic log, validated and split: {'train','valid','test','spec'} -> path."""
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig

    root = tmp_path_factory.mktemp("prepared")
    outputs = {name: root / name for name in ("train", "valid", "test")}
    prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=SMALL_ROWS, seed=11, chunk_rows=10_000),
        split=SplitConfig(),
        outputs=outputs,
        spec_out=root / "spec.yaml",
    )
    return {**outputs, "spec": root / "spec.yaml"}


@pytest.fixture(scope="session")
def features(prepared, tmp_path_factory) -> dict[str, Path]:
    """NVTabular features of ``prepared``: {'train','valid','test','workflow'} -> path."""
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from rankflow.core.spec import DatasetSpec

    root = tmp_path_factory.mktemp("features")
    outputs = {name: root / name for name in ("train", "valid", "test")}
    run_feature_engineering(
        DatasetSpec.load(prepared["spec"]),
        {name: prepared[name] for name in outputs},
        workflow_dir=root / "workflow",
        outputs=outputs,
        config=FeatureConfig(),
    )
    return {**outputs, "workflow": root / "workflow"}


def _train(prepared, features, train: str, model_dir: Path, **config) -> Path:
    from components.training.ranker import RankerConfig, train_ranker
    from rankflow.core.spec import DatasetSpec

    spec = DatasetSpec.load(prepared["spec"])
    config_ = RankerConfig(**config)
    train_ranker(spec, features[train], features["valid"], model_dir=model_dir, config=config_)
    return model_dir


@pytest.fixture(scope="session")
def trained(prepared, features, tmp_path_factory) -> Path:
    """A ranker trained one epoch on ``features``; the SavedModel directory."""
    model_dir = tmp_path_factory.mktemp("ranker") / "model"
    return _train(prepared, features, "train", model_dir, epochs=1, batch_size=512)


#: The config of :func:`trained_on_valid`: the small valid split as train, one epoch.
VALID_TRAINED = {"epochs": 1, "batch_size": 1024, "architecture": "shared_bottom", "cross_depth": 1}


@pytest.fixture(scope="session")
def trained_on_valid(prepared, features, tmp_path_factory) -> Path:
    """A second, cheap ranker (``VALID_TRAINED`` on the valid split): another model than
    ``trained``, and the reference a retrain with the same seed must reproduce."""
    model_dir = tmp_path_factory.mktemp("ranker-valid") / "model"
    return _train(prepared, features, "valid", model_dir, **VALID_TRAINED)


@pytest.fixture
def artifact(tmp_path):
    """``artifact(dsl.Dataset, "name")`` -> a KFP artifact at a fresh path under ``tmp_path``, or
    at ``path`` for an input that already exists."""

    def make(cls, name: str, path: Path | None = None):
        return cls(name=name, uri=str(path or tmp_path / name))

    return make


def terminal_lines(text: str) -> list[str]:
    """What a terminal shows of ``text``: a progress bar redraws its line with carriage
    returns, so each line is what follows its last one; blank lines dropped."""
    shown = (line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n"))
    return [line for line in shown if line]


def pipeline_defaults(component) -> dict:
    """The pipeline's default for every parameter of ``component`` (the pipeline passes its
    parameters through under the same names), so tests call a component as a default run would."""
    from pipelines.ranking import ranking_pipeline

    params = ranking_pipeline.component_spec.inputs
    return {
        name: params[name].default for name in component.component_spec.inputs if name in params
    }
