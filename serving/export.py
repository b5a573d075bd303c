"""Build a Triton model repository for the ranker: NVTabular transform + model in one endpoint.

Two flavours (``EXPORTERS``), both rendered from one :class:`EndpointContract`
(:mod:`rankflow.core.contract`: raw feature columns in, ``dims: [1]``, named and typed as the
workflow's inputs; one FP32 ``dims: [1]`` score per task out, named by task):

- ``cpu``: one python-backend model running transform and SavedModel together, for the Triton
  here (python backend and ensembles, no TensorFlow backend); the fastest layout measured on
  it (``bench/serving_layouts.py``).
- ``gpu``: a plain Triton ensemble built with merlin-systems (``serving/ensemble.py``): its
  NVTabular workflow model, then the SavedModel on the TensorFlow backend (NGC Merlin images).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from rankflow.core.artifacts import atomic_dir
from rankflow.core.contract import DEFAULT_ENDPOINT, EndpointContract, write_manifest
from rankflow.core.errors import ConfigError, ExportError
from rankflow.core.spec import DatasetSpec
from serving.ensemble import export_gpu_repository
from serving.repository import ExportConfig, seal_versions, write_config

logger = logging.getLogger(__name__)

__all__ = [
    "FLAVOURS",
    "MODEL_NAME",
    "ExportConfig",
    "ExportError",
    "export_cpu_repository",
    "export_gpu_repository",
    "export_repository",
    "seal_versions",
]

MODEL_NAME = DEFAULT_ENDPOINT


def cpu_model_config(contract: EndpointContract, config: ExportConfig):  # -> ModelConfig
    """The cpu flavour's one python-backend model: the contract, on CPU instances, batched."""
    from tritonclient.grpc import model_config_pb2 as mc

    model = contract.model_config(backend="python")
    model.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=config.instances)
    # Requests that queue while the model is busy reach it together and are scored in one call;
    # no delay is added to wait for more.
    model.dynamic_batching.SetInParent()
    model.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
    return model


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
    from rankflow.core.content import ENCODER_DIR, MANIFEST_KEY, content_fields, open_content
    from rankflow.core.integrity import MANIFEST, verify
    from rankflow.core.text import MODEL_ID, EncoderFiles
    from serving.scorer import RankerScorer

    fields = content_fields(spec) if spec.text_columns else None
    content = None
    if fields is not None:
        if config.content_table is None:
            raise ExportError(
                f"text inputs {list(spec.text_columns)} need the content step's table: pass "
                "ExportConfig(content_table=...)"
            )
        verify(config.content_table)
        content = open_content(config.content_table, fields)
    # Loading both here proves the artifacts work before anything is published.
    scorer = RankerScorer(workflow_dir, model_dir, targets=spec.label_columns, content=content)
    contract = EndpointContract.build(
        config.model_name,
        scorer.input_dtypes,
        spec.task_names,
        max_batch_size=config.max_batch_size,
        kinds={t.name: t.kind for t in spec.tasks},
        lists=dict.fromkeys(scorer.lists, spec.lists_max_length),
    )
    with atomic_dir(repository) as scratch:
        model = scratch / config.model_name
        version = model / str(config.version)
        version.mkdir(parents=True)
        shutil.copytree(workflow_dir, version / "workflow")
        shutil.copytree(model_dir, version / "ranker")
        shutil.copyfile(Path(__file__).with_name("python_model.py"), version / "model.py")
        if config.drift_reference is not None:
            config.drift_reference.save(version)
        extra = dict(config.manifest_fields())
        if content is not None and config.content_table is not None:
            # The version seals its own copy (the step's seal file stays behind).
            shutil.copytree(
                config.content_table,
                version / "content",
                ignore=shutil.ignore_patterns(MANIFEST),
            )
            if content.table is not None and content.table.model_id == MODEL_ID:
                EncoderFiles.installed().copy_to(version / "content" / ENCODER_DIR)
            extra[MANIFEST_KEY] = fields
        write_manifest(version, contract, layout="python", drop=spec.label_columns, **extra)
        write_config(model / "config.pbtxt", cpu_model_config(contract, config))
        seal_versions(scratch)
    logger.info("exported %s v%d to %s", config.model_name, config.version, repository)
    return repository


#: Serving flavour -> its exporter (same signature, same endpoint contract).
EXPORTERS: dict[str, Callable[..., Path]] = {
    "cpu": export_cpu_repository,
    "gpu": export_gpu_repository,
}
FLAVOURS = tuple(EXPORTERS)


def served_flavour(spec: DatasetSpec, flavour: str) -> str:
    """The flavour that serves ``spec`` when ``flavour`` is asked for.

    The gpu ensemble has no step that unpads lists or embeds text yet, so a spec with either is
    served by the cpu flavour's python-backend endpoint, which runs on any Triton, the gpu
    profile's included (its TensorFlow uses the GPU where the image's does): a default run on
    the cluster then still deploys, instead of failing at export.
    """
    if flavour not in EXPORTERS:
        raise ConfigError(f"unknown serving flavour {flavour!r}: choose one of {list(FLAVOURS)}")
    unserved = [*spec.text_columns, *spec.list_names] if flavour == "gpu" else []
    if unserved:
        logger.warning(
            "inputs %s are served by the cpu flavour (python backend): this release's gpu "
            "ensemble has no list or text step",
            unserved,
        )
        return "cpu"
    return flavour


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
    flavour = served_flavour(spec, flavour)
    return EXPORTERS[flavour](
        spec, workflow_dir=workflow_dir, model_dir=model_dir, repository=repository, config=config
    )
