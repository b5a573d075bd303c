"""The endpoint as a plain Triton ensemble, built with merlin-systems.

raw feature columns -> ``<name>_transform`` (merlin-systems' NVTabular workflow model, python
backend) -> ``<name>_ranker`` (the SavedModel: TensorFlow backend, or a python-backend model
running its serving signature where the Triton has no TensorFlow backend) -> one score per task.

merlin-systems 23.8 exports only its executor layout: a python ``executor_model`` that calls the
sub-models through BLS (slower per request than a plain ensemble: bench/serving_layouts.py), with
unbatched ``dims: [-1]`` tensors, heads named ``<task>/binary_output`` and the version ignored
for the executor and the workflow model. So merlin-systems exports, and the configs it returns
are rewritten as ``ModelConfig`` messages into a batched ensemble with the same contract as the
cpu flavour: inputs ``dims: [1]`` named and typed like the raw columns, outputs ``<task>`` FP32
``dims: [1]``.

Imports merlin, NVTabular and TensorFlow lazily: import from function bodies only where needed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.artifacts import atomic_dir, input_dtypes, load_workflow
from rankflow.core.contract import EndpointContract, write_manifest
from rankflow.core.errors import ConfigError, ExportError, MissingArtifactError
from rankflow.core.spec import DatasetSpec
from rankflow.core.tasks import task_heads
from serving.repository import ExportConfig, seal_versions, write_config

logger = logging.getLogger(__name__)

#: Backends that can serve the ranker step: Triton's TensorFlow backend (NGC images) or the
#: python backend running ``serving/ranker_model.py`` (the pytriton Triton here has no TF backend).
RANKER_BACKENDS = ("tensorflow", "python")
#: Prefix of the ensemble-internal tensors between the transform and the ranker step.
FEATURE_TENSOR_PREFIX = "features/"
SAVEDMODEL_DIR = "model.savedmodel"
SIGNATURE = "serving_default"


def transform_model_name(endpoint: str) -> str:
    return f"{endpoint}_transform"


def ranker_model_name(endpoint: str) -> str:
    return f"{endpoint}_ranker"


@dataclass
class EnsembleArtifacts:
    """The loaded and cross-checked pieces of an ensemble, before anything is written.

    ``workflow`` is the fitted workflow with the targets removed and its outputs cast to what the
    ranker consumes; ``graph`` the merlin-systems ensemble of it and the SavedModel.
    """

    tasks: tuple[str, ...]
    kinds: dict[str, str]  # task -> "binary" | "regression"
    drop: tuple[str, ...]  # raw label columns removed from the workflow
    workflow: Any  # nvtabular.Workflow
    model_dir: Path
    features: dict[str, Any]  # ranker input name -> tf.TensorSpec
    heads: dict[str, str]  # task -> SavedModel output name
    outputs: dict[str, Any]  # SavedModel output name -> tf.TensorSpec
    graph: Any  # merlin.systems.dag.Ensemble

    @property
    def raw_dtypes(self) -> dict[str, np.dtype]:
        return input_dtypes(self.workflow)

    def contract(self, config: ExportConfig) -> EndpointContract:
        return EndpointContract.build(
            config.model_name,
            self.raw_dtypes,
            self.tasks,
            max_batch_size=config.max_batch_size,
            kinds=self.kinds,
        )


def load_signature(model_dir: Path):
    """The SavedModel's loaded object and ``serving_default`` signature; no Python custom objects
    are involved, exactly as Triton's TensorFlow backend loads it."""
    import tensorflow as tf

    if not Path(model_dir).is_dir():
        raise MissingArtifactError(f"no saved ranker at {model_dir}")
    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as err:
        raise ExportError(f"cannot load the SavedModel at {model_dir}: {err}") from err
    if SIGNATURE not in loaded.signatures:
        raise ExportError(
            f"the SavedModel at {model_dir} has no '{SIGNATURE}' signature "
            f"(it has {sorted(loaded.signatures)})"
        )
    return loaded, loaded.signatures[SIGNATURE]


def _cast_op(have: Mapping[str, np.dtype], want: Mapping[str, np.dtype]):
    """A fitted NVTabular op casting every column from ``have`` to ``want``.

    ``ReduceDtypeSize`` with its ranges given rather than fitted: a stock op (pickled by
    reference, so the saved workflow loads in any image with NVTabular, unlike a lambda pickled
    by value for one Python version) that casts floats to its one ``float_dtype`` and ints to the
    first of int8..int64 holding the column's range -- so the full range of the wanted int dtype
    selects that dtype. It covers all columns in one node: selecting the workflow's output twice
    (cast and kept columns) would make the executor run the whole workflow twice per request.
    """
    from nvtabular import ops

    floats = {want[c] for c in want if want[c].kind == "f"}
    if len(floats) > 1:
        raise ExportError(
            f"the ranker takes float inputs of several dtypes ({sorted(d.name for d in floats)}); "
            "the export casts all float features to one"
        )
    op = ops.ReduceDtypeSize(float_dtype=floats.pop() if floats else np.float32)
    ranges: dict[str, tuple[float, float]] = {}
    for column, dtype in want.items():
        if dtype == have[column] and dtype.kind not in "if":
            ranges[column] = (0, 0)  # neither int nor float: left as it is
        elif dtype.kind == "f" and have[column].kind == "f":
            ranges[column] = (0.0, 0.0)
        elif dtype.kind == "i" and have[column].kind in "iu":
            info = np.iinfo(dtype)
            ranges[column] = (int(info.min), int(info.max))
        else:
            raise ExportError(
                f"the workflow output '{column}' is {have[column].name}; it can't be cast to "
                f"the ranker's {dtype.name} input"
            )
    op.ranges = ranges
    op.fitted = True
    return op


def serving_workflow(workflow_dir: Path, *, targets: Sequence[str], features: Mapping[str, Any]):
    """The fitted workflow without targets, its outputs cast to the ranker's input dtypes.

    NVTabular's ``Normalize`` emits float64 where the ranker was trained on float32 (the
    dataloader casts); an ensemble passes tensors through as typed, so the cast belongs in the
    transform step.
    """
    import nvtabular as nvt

    workflow = load_workflow(workflow_dir, drop=targets)
    schema = workflow.output_schema
    produced, consumed = set(schema.column_names), set(features)
    if produced != consumed:
        raise ExportError(
            "the workflow's outputs and the ranker's inputs differ: "
            f"only produced {sorted(produced - consumed)}, only consumed "
            f"{sorted(consumed - produced)}"
        )
    lists = [c.name for c in schema if c.is_list]
    if lists:
        raise ExportError(f"list feature columns are not supported by the export: {lists}")
    have = {c.name: np.dtype(c.dtype.to_numpy) for c in schema}
    want = {name: np.dtype(spec.dtype.as_numpy_dtype) for name, spec in features.items()}
    casts = {
        c: f"{have[c].name} -> {want[c].name}" for c in schema.column_names if have[c] != want[c]
    }
    if not casts:
        return workflow
    logger.info("casting workflow outputs to the ranker's input dtypes: %s", casts)
    node = workflow.output_node >> _cast_op(have, {c: want[c] for c in schema.column_names})
    return nvt.Workflow(node).fit_schema(workflow.input_schema)


def load_ensemble_artifacts(
    tasks: Sequence[str],
    *,
    workflow_dir: Path,
    model_dir: Path,
    drop: Sequence[str] | None = None,
    kinds: Mapping[str, str] | None = None,
) -> EnsembleArtifacts:
    """Load the workflow and the SavedModel and check they fit together; writes nothing.

    ``drop``: the raw label columns to remove from the workflow (default: the task names);
    ``kinds``: each task's output kind (default binary).
    """
    tasks = tuple(tasks)
    drop = tuple(drop) if drop is not None else tasks
    _loaded, signature = load_signature(model_dir)
    features = dict(signature.structured_input_signature[1])
    outputs = dict(signature.structured_outputs)
    heads = task_heads(tasks, outputs)
    for task, head in heads.items():
        spec = outputs[head]
        if (
            spec.dtype.name != "float32"
            or spec.shape.rank not in (1, 2)
            or (spec.shape.rank == 2 and spec.shape[1] != 1)
        ):
            raise ExportError(
                f"task '{task}': SavedModel output '{head}' is {spec.dtype.name} "
                f"{spec.shape}; the endpoint serves one float32 score per row"
            )
    for name, spec in features.items():
        if spec.shape.rank != 1:
            raise ExportError(
                f"ranker input '{name}' has shape {spec.shape}; the export supports one "
                "scalar feature per row (shape [batch])"
            )
    workflow = serving_workflow(workflow_dir, targets=drop, features=features)
    graph = _merlin_graph(workflow, model_dir)
    return EnsembleArtifacts(
        tasks=tasks,
        kinds={t: (kinds or {}).get(t, "binary") for t in tasks},
        drop=drop,
        workflow=workflow,
        model_dir=Path(model_dir),
        features=features,
        heads=heads,
        outputs=outputs,
        graph=graph,
    )


def _merlin_graph(workflow, model_dir: Path):
    """merlin-systems' ensemble: the raw columns through the workflow into the SavedModel."""
    from merlin.systems.dag import Ensemble
    from merlin.systems.dag.ops.tensorflow import PredictTensorflow
    from merlin.systems.dag.ops.workflow import TransformWorkflow

    try:
        predict = PredictTensorflow(str(model_dir))
        graph = workflow.input_schema.column_names >> TransformWorkflow(workflow) >> predict
        return Ensemble(graph, workflow.input_schema)
    except Exception as err:
        raise ExportError(
            f"merlin-systems can't chain the workflow into the SavedModel at {model_dir}: {err}"
        ) from err


def _merlin_export(graph, staging: Path, *, name: str, version: int):
    """merlin-systems' own export (executor layout); returns its (transform, ranker) configs."""
    from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime

    try:
        _executor, nodes = TritonExecutorRuntime().export(
            graph, str(staging), version=version, name=name
        )
    except Exception as err:
        raise ExportError(f"merlin-systems failed to export the ensemble: {err}") from err
    transform = [c for c in nodes if c.backend == "python"]
    ranker = [c for c in nodes if c.platform == "tensorflow_savedmodel"]
    if len(transform) != 1 or len(ranker) != 1:
        raise ExportError(
            "merlin-systems exported unexpected models: "
            f"{[(c.name, c.backend, c.platform) for c in nodes]}"
        )
    return transform[0], ranker[0]


def _version_dir(model_dir: Path) -> Path:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if len(versions) != 1:
        raise ExportError(f"expected one version directory in {model_dir}, found {versions}")
    return versions[0]


def _set_dims(tensor, dims: Sequence[int], reshape: Sequence[int] | None = None) -> None:
    del tensor.dims[:]
    tensor.dims.extend(dims)
    tensor.ClearField("reshape")
    if reshape is not None:
        tensor.reshape.SetInParent()
        tensor.reshape.shape.extend(reshape)


def _batched_dims(spec) -> tuple[list[int], list[int] | None]:
    """Triton dims (and reshape) of a batched tensor for a signature's ``[batch, ...]`` spec:
    ``[batch]`` is ``dims [1]`` reshaped to ``[]``, Triton's way to serve a rank-1 tensor."""
    shape: list[int] = [-1 if d is None else d for d in spec.shape.as_list()[1:]]
    scalar: list[int] = []
    return (shape, None) if shape else ([1], scalar)


def _instances(model, *, kind: str, count: int) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    del model.instance_group[:]
    model.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(kind), count=count)


def write_ensemble(
    artifacts: EnsembleArtifacts,
    root: Path,
    config: ExportConfig,
    *,
    ranker_backend: str,
    instance_kind: str = "KIND_AUTO",
) -> dict[str, Any]:
    """Write the endpoint ensemble and its two models under ``root``; returns name -> config.

    ``root`` should be a scratch directory published atomically by the caller.
    """
    from tritonclient.grpc import model_config_pb2 as mc

    if ranker_backend not in RANKER_BACKENDS:
        raise ConfigError(
            f"ranker_backend must be one of {RANKER_BACKENDS}, got {ranker_backend!r}"
        )
    endpoint = config.model_name
    names = {"transform": transform_model_name(endpoint), "ranker": ranker_model_name(endpoint)}
    staging = root / ".merlin-export"
    merlin_transform, merlin_ranker = _merlin_export(
        artifacts.graph, staging, name=endpoint, version=config.version
    )

    # Transform: merlin-systems' workflow model as exported, batched. Its model.py returns 1-D
    # columns; reshape [] lets Triton report them as [batch, 1].
    transform = mc.ModelConfig()
    transform.CopyFrom(merlin_transform)
    transform.name = names["transform"]
    transform.max_batch_size = config.max_batch_size
    for tensor in transform.input:
        _set_dims(tensor, [1])
    for tensor in transform.output:
        _set_dims(tensor, [1], reshape=[])
    _instances(transform, kind=instance_kind, count=config.instances)
    # merlin-systems writes the workflow model to version 1 whatever the version asked.
    source = _version_dir(staging / merlin_transform.name)
    (root / transform.name).mkdir()
    source.rename(root / transform.name / str(config.version))

    # Ranker: the SavedModel as merlin-systems copies it, batched: the signature takes [batch]
    # tensors (reshape []) and returns [batch, 1] per head.
    ranker = mc.ModelConfig()
    ranker.CopyFrom(merlin_ranker)
    ranker.name = names["ranker"]
    ranker.max_batch_size = config.max_batch_size
    for tensor in ranker.input:
        _set_dims(tensor, *_batched_dims(artifacts.features[tensor.name]))
    for tensor in ranker.output:
        _set_dims(tensor, *_batched_dims(artifacts.outputs[tensor.name]))
    _instances(ranker, kind=instance_kind, count=config.instances)
    version = root / ranker.name / str(config.version)
    version.mkdir(parents=True)
    (staging / merlin_ranker.name / str(config.version) / SAVEDMODEL_DIR).rename(
        version / SAVEDMODEL_DIR
    )
    if ranker_backend == "python":
        ranker.ClearField("platform")
        ranker.backend = "python"
        for key in ("TF_GRAPH_TAG", "TF_SIGNATURE_DEF"):
            ranker.parameters.pop(key, None)
        shutil.copyfile(Path(__file__).with_name("ranker_model.py"), version / "model.py")

    # The endpoint: a plain ensemble, raw columns in, one score per task out.
    contract = artifacts.contract(config)
    ensemble = contract.model_config(platform="ensemble")
    step = ensemble.ensemble_scheduling.step.add(
        model_name=transform.name, model_version=config.version
    )
    for tensor in transform.input:
        step.input_map[tensor.name] = tensor.name
    for tensor in transform.output:
        step.output_map[tensor.name] = FEATURE_TENSOR_PREFIX + tensor.name
    step = ensemble.ensemble_scheduling.step.add(
        model_name=ranker.name, model_version=config.version
    )
    for tensor in ranker.input:
        step.input_map[tensor.name] = FEATURE_TENSOR_PREFIX + tensor.name
    for task, head in artifacts.heads.items():
        step.output_map[head] = task
    version = root / endpoint / str(config.version)
    version.mkdir(parents=True)
    # Triton needs the ensemble's version directory; the manifest keeps it through object stores.
    write_manifest(
        version,
        contract,
        layout="ensemble",
        drop=artifacts.drop,
        ranker_backend=ranker_backend,
        **config.manifest_fields(),
    )
    shutil.rmtree(staging)

    configs = {c.name: c for c in (ensemble, transform, ranker)}
    problems = ensemble_problems(ensemble, configs)
    if problems:
        raise ExportError(f"inconsistent ensemble {endpoint}: " + "; ".join(problems))
    for name, message in configs.items():
        write_config(root / name / "config.pbtxt", message)
    return configs


def ensemble_problems(ensemble, models: Mapping[str, Any]) -> list[str]:
    """Why Triton would refuse ``ensemble`` over ``models`` (name -> ModelConfig), if it would:
    every tensor a step consumes is produced before it with the same type, every model input is
    fed, every endpoint output produced."""
    types = {t.name: t.data_type for t in ensemble.input}
    problems = []
    for step in ensemble.ensemble_scheduling.step:
        model = models.get(step.model_name)
        if model is None:
            problems.append(f"step model '{step.model_name}' is not in the repository")
            continue
        if model.max_batch_size < ensemble.max_batch_size:
            problems.append(f"'{model.name}' batches up to {model.max_batch_size} only")
        inputs = {t.name: t.data_type for t in model.input}
        outputs = {t.name: t.data_type for t in model.output}
        unfed = sorted(set(inputs) - set(step.input_map))
        if unfed:
            problems.append(f"'{model.name}' inputs {unfed} are not mapped")
        for name, tensor in step.input_map.items():
            if name not in inputs:
                problems.append(f"'{model.name}' has no input '{name}'")
            elif tensor not in types:
                problems.append(f"'{model.name}' consumes '{tensor}', produced by no earlier step")
            elif types[tensor] != inputs[name]:
                problems.append(f"'{model.name}' input '{name}' type differs from '{tensor}'")
        for name, tensor in step.output_map.items():
            if name not in outputs:
                problems.append(f"'{model.name}' has no output '{name}'")
            elif tensor in types:
                problems.append(f"tensor '{tensor}' is produced twice")
            else:
                types[tensor] = outputs[name]
    for tensor in ensemble.output:
        if tensor.name not in types:
            problems.append(f"endpoint output '{tensor.name}' is produced by no step")
        elif types[tensor.name] != tensor.data_type:
            problems.append(f"endpoint output '{tensor.name}' type differs from its producer")
    return problems


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
    artifacts = load_ensemble_artifacts(
        spec.task_names,
        workflow_dir=workflow_dir,
        model_dir=model_dir,
        drop=spec.label_columns,
        kinds={t.name: t.kind for t in spec.tasks},
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
