"""Build a Triton model repository for the ranker: NVTabular transform + model in one endpoint.

Two flavours with the same endpoint contract (raw feature columns in, ``dims: [1]``, named and
typed as the workflow's inputs; one FP32 ``dims: [1]`` score per task out, named by task):

- ``cpu``: one python-backend model running transform and SavedModel together, for the Triton
  here (python backend and ensembles, no TensorFlow backend); the fastest layout measured on
  it (``bench/serving_layouts.py``).
- ``gpu``: a plain Triton ensemble built with merlin-systems (``serving/ensemble.py``): its
  NVTabular workflow model, then the SavedModel on the TensorFlow backend (NGC Merlin images).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rankflow.io import atomic_dir
from rankflow.spec import DatasetSpec

logger = logging.getLogger(__name__)

MODEL_NAME = "rankflow"
FLAVOURS = ("cpu", "gpu")

_TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "uint8": "TYPE_UINT8",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "object": "TYPE_STRING",
}


def triton_type(dtype: np.dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _TRITON_TYPES:
        raise ValueError(f"no Triton type for input dtype {name}")
    return _TRITON_TYPES[name]


class ExportError(RuntimeError):
    """The workflow and the model can't be exported as an endpoint; the message says why."""


@dataclass(frozen=True)
class ExportConfig:
    model_name: str = MODEL_NAME
    version: int = 1
    max_batch_size: int = 1024
    instances: int = 1
    max_queue_delay_us: int = 0


def _config_pbtxt(config: ExportConfig, inputs: dict[str, np.dtype], tasks: tuple[str, ...]) -> str:
    lines = [
        f'name: "{config.model_name}"',
        'backend: "python"',
        f"max_batch_size: {config.max_batch_size}",
    ]
    lines += [
        f'input {{ name: "{name}" data_type: {triton_type(dtype)} dims: [ 1 ] }}'
        for name, dtype in inputs.items()
    ]
    lines += [f'output {{ name: "{task}" data_type: TYPE_FP32 dims: [ 1 ] }}' for task in tasks]
    lines.append(f"instance_group [ {{ kind: KIND_CPU count: {config.instances} }} ]")
    # Requests that queue while the model is busy reach it together and are scored in one call;
    # no delay is added to wait for more.
    lines.append(
        f"dynamic_batching {{ max_queue_delay_microseconds: {config.max_queue_delay_us} }}"
    )
    return "\n".join(lines) + "\n"


def _compile_bytecode(source: Path) -> None:
    """Write ``model.py``'s bytecode now, checked against the source by hash.

    Triton's python stub imports ``model.py`` and would write ``__pycache__`` into the version
    directory, which must match its sealed manifest; with the bytecode already there (and in
    the manifest) the import reads it instead. Hash-checked, so copies into the store stay
    valid whatever their timestamps. The export step runs on the serving image's Python.
    """
    import importlib.util
    import py_compile

    py_compile.compile(
        str(source),
        cfile=importlib.util.cache_from_source(str(source)),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )


def seal_versions(repository: Path) -> None:
    """Seal every ``<model>/<version>`` directory: Triton loads (and the store publishes) a
    version directory on its own, so each carries its own manifest besides the repository's.
    Python backend modules get their bytecode first (see ``_compile_bytecode``)."""
    from rankflow import integrity

    for config in sorted(Path(repository).glob("*/config.pbtxt")):
        for version in sorted(config.parent.iterdir()):
            if version.is_dir() and version.name.isdigit():
                for module in sorted(version.glob("*.py")):
                    _compile_bytecode(module)
                integrity.seal(version)


def export_cpu_repository(
    spec: DatasetSpec,
    *,
    workflow_dir: Path,
    model_dir: Path,
    repository: Path,
    config: ExportConfig,
) -> Path:
    """Write ``repository/<model>/{config.pbtxt, <version>/...}`` for the python backend.

    The whole repository appears at once or not at all.
    """
    from serving.scorer import RankerScorer

    tasks = spec.target_columns
    # Loading both here proves the artifacts work before anything is published.
    scorer = RankerScorer(workflow_dir, model_dir, targets=tasks)
    with atomic_dir(repository) as scratch:
        model = scratch / config.model_name
        version = model / str(config.version)
        version.mkdir(parents=True)
        shutil.copytree(workflow_dir, version / "workflow")
        shutil.copytree(model_dir, version / "ranker")
        shutil.copyfile(Path(__file__).with_name("python_model.py"), version / "model.py")
        (version / "rankflow.json").write_text(
            json.dumps(
                {
                    "tasks": list(tasks),
                    "inputs": {c: np.dtype(d).name for c, d in scorer.input_dtypes.items()},
                },
                indent=2,
            )
        )
        (model / "config.pbtxt").write_text(_config_pbtxt(config, scorer.input_dtypes, tasks))
        seal_versions(scratch)
    logger.info("exported %s v%d to %s", config.model_name, config.version, repository)
    return repository


def export_gpu_repository(
    spec: DatasetSpec,
    *,
    workflow_dir: Path,
    model_dir: Path,
    repository: Path,
    config: ExportConfig,
) -> Path:
    """Write the merlin-systems ensemble for a Triton with the TensorFlow backend.

    ``repository/<model>`` is a plain ensemble of ``<model>_transform`` (merlin-systems' NVTabular
    workflow model, python backend) and ``<model>_ranker`` (``tensorflow_savedmodel``), all at
    ``config.version``. The workflow and the SavedModel are loaded and checked against each other
    first; the whole repository appears at once or not at all.
    """
    from serving.ensemble import load_ensemble_artifacts, write_ensemble

    artifacts = load_ensemble_artifacts(
        spec.target_columns, workflow_dir=workflow_dir, model_dir=model_dir
    )
    with atomic_dir(repository) as scratch:
        write_ensemble(artifacts, scratch, config, ranker_backend="tensorflow")
        seal_versions(scratch)
    logger.info(
        "exported %s v%d (gpu flavour, ensemble) to %s",
        config.model_name,
        config.version,
        repository,
    )
    return repository


def export_repository(
    spec: DatasetSpec,
    *,
    workflow_dir: Path,
    model_dir: Path,
    repository: Path,
    config: ExportConfig,
    flavour: str,
) -> Path:
    """Export the ``flavour`` (one of ``FLAVOURS``) of the endpoint; see the module docstring."""
    exporters = {"cpu": export_cpu_repository, "gpu": export_gpu_repository}
    if flavour not in exporters:
        raise ValueError(f"unknown serving flavour {flavour!r}: choose one of {list(FLAVOURS)}")
    return exporters[flavour](
        spec, workflow_dir=workflow_dir, model_dir=model_dir, repository=repository, config=config
    )
