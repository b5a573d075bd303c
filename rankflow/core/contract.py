"""The endpoint contract: what a served model takes and what it returns, described once.

An :class:`EndpointContract` is built from the fitted workflow's raw inputs and the tasks, and
every place that spells the endpoint out renders it: the cpu flavour's python-model config, the gpu
flavour's ensemble config (and its transform step's inputs), the ``rankflow.json`` manifest of
every exported version, the client's view of a store version. Inputs are raw feature columns, one
value per row (``dims [1]``), except that a list column is ``dims [L]`` (padded) beside its
``<name>__length`` (``dims [1]``, INT32); outputs are one FP32 score per row and task, named by
the task.

What a store version needs from the installed rankflow is part of the serving contract too: its
``model.py`` runs inside Triton with today's code (a rollback runs today's code on yesterday's
artifacts). ``SERVING_FORMAT`` names that interface; the store refuses a version whose format
this release can't serve, in one line, instead of letting it fail inside Triton. Format 1:

- ``serving.scorer.RankerScorer(workflow_dir, model_dir, *, targets)`` with ``input_dtypes``,
  ``prepare``, ``rows_independent`` and ``score_prepared`` (a version with list inputs, exported
  by 0.4+, also calls ``lists``, ``concat`` and ``rows``);
- ``rankflow.integrity.verify`` (0.1.0's model.py) and ``rankflow.core.integrity.verify``;
- the version directory's ``workflow/``, ``ranker/`` and ``rankflow.json`` (``tasks``).

tests/serving/test_store_compat.py serves every committed store version (tests/fixtures/) with the
current code. Bump ``SERVING_FORMAT`` only with a change that breaks that interface, and keep a
format in ``READABLE_FORMATS`` for as long as the code still serves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankflow.core.errors import ExportError, StoreError

#: The endpoint name when none is given.
DEFAULT_ENDPOINT = "rankflow"
#: Written into every exported version directory.
MANIFEST = "rankflow.json"
#: The serving interface this release exports (see the module docstring).
SERVING_FORMAT = 1
#: Formats of store versions this release can serve. 0.1.0 wrote no format: that is format 1.
READABLE_FORMATS = (1,)
#: A list input ``c`` travels as ``c`` (``[rows, L]``, padded) and ``c + LENGTH_SUFFIX``
#: (``[rows, 1]`` INT32, how many of the row's values are real): Triton refuses a request whose
#: inputs differ in their first dimension, so a ragged list can't travel as itself.
LENGTH_SUFFIX = "__length"
#: Output kinds: a binary task's score is a probability; a regression task's a value in its
#: target's own unit.
OUTPUT_KINDS = ("binary", "regression")

#: numpy dtype name -> Triton data type. "object" columns are UTF-8 strings (BYTES on the wire).
TRITON_TYPES = {
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
_NUMPY_TYPES = {v: k for k, v in TRITON_TYPES.items()}


def triton_type(dtype: np.dtype | str) -> str:
    name = np.dtype(dtype).name
    if name not in TRITON_TYPES:
        raise ExportError(f"no Triton type for input dtype {name}")
    return TRITON_TYPES[name]


@dataclass(frozen=True)
class InputSpec:
    """One raw feature column. ``dtype`` is the numpy name ("object" = UTF-8 string)."""

    name: str
    dtype: str
    dims: tuple[int, ...] = (1,)
    required: bool = True

    @property
    def triton_type(self) -> str:
        return triton_type(self.dtype)


@dataclass(frozen=True)
class OutputSpec:
    """One task's score per row."""

    name: str
    kind: str = "binary"
    dtype: str = "float32"
    dims: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ExportError(f"output '{self.name}': unknown kind {self.kind!r} ({OUTPUT_KINDS})")


@dataclass(frozen=True)
class EndpointContract:
    """What the endpoint ``name`` takes and returns."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    max_batch_size: int = 1024

    def __post_init__(self) -> None:
        for what, names in (
            ("input", [i.name for i in self.inputs]),
            ("output", [o.name for o in self.outputs]),
        ):
            if len(set(names)) != len(names):
                raise ExportError(f"endpoint '{self.name}' names an {what} twice: {names}")
        if not self.outputs:
            raise ExportError(f"endpoint '{self.name}' has no outputs")

    @classmethod
    def build(
        cls,
        name: str,
        input_dtypes: Mapping[str, np.dtype | str],
        tasks: Sequence[str],
        *,
        max_batch_size: int,
        kinds: Mapping[str, str] | None = None,
        lists: Mapping[str, int] | None = None,
    ) -> EndpointContract:
        """The contract of a ranker over raw columns ``input_dtypes`` scoring ``tasks`` (each of
        ``kinds[task]``, binary when not given); ``lists`` maps each list column to its width
        (the spec's ``lists_max_length``), see ``LENGTH_SUFFIX``."""
        lists = lists or {}
        specs: list[InputSpec] = []
        for column, dtype in input_dtypes.items():
            if column in lists:
                specs.append(InputSpec(column, np.dtype(dtype).name, (lists[column],)))
                specs.append(InputSpec(column + LENGTH_SUFFIX, "int32"))
            else:
                specs.append(InputSpec(column, np.dtype(dtype).name))
        inputs = tuple(specs)
        for spec in inputs:
            triton_type(spec.dtype)  # refuse a dtype Triton can't carry now, not at load
        kinds = kinds or {}
        outputs = tuple(OutputSpec(t, kinds.get(t, "binary")) for t in tasks)
        return cls(name, inputs, outputs, max_batch_size)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def input_dtypes(self) -> dict[str, np.dtype]:
        return {i.name: np.dtype(i.dtype) for i in self.inputs}

    @property
    def lists(self) -> dict[str, int]:
        """List input -> its width (values per row on the wire)."""
        names = {i.name for i in self.inputs}
        return {
            i.name: int(i.dims[0])
            for i in self.inputs
            if i.name + LENGTH_SUFFIX in names and len(i.dims) == 1
        }

    # -- Triton configs ------------------------------------------------------------------------
    def model_config(self, **fields: Any) -> Any:  # -> tritonclient ModelConfig
        """A Triton ``ModelConfig`` with this contract's name, batch size, inputs and outputs;
        ``fields`` sets the rest (``backend="python"``, ``platform="ensemble"``, ...)."""
        from tritonclient.grpc import model_config_pb2 as mc

        config = mc.ModelConfig(name=self.name, max_batch_size=self.max_batch_size, **fields)
        for spec in self.inputs:
            config.input.add(
                name=spec.name,
                data_type=mc.DataType.Value(spec.triton_type),
                dims=list(spec.dims),
                optional=not spec.required,
            )
        for output in self.outputs:
            config.output.add(
                name=output.name,
                data_type=mc.DataType.Value(triton_type(output.dtype)),
                dims=list(output.dims),
            )
        return config

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_batch_size": self.max_batch_size,
            "inputs": [
                {"name": i.name, "dtype": i.dtype, "dims": list(i.dims), "required": i.required}
                for i in self.inputs
            ],
            "outputs": [
                {"name": o.name, "kind": o.kind, "dtype": o.dtype, "dims": list(o.dims)}
                for o in self.outputs
            ],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EndpointContract:
        return cls(
            name=raw["name"],
            max_batch_size=int(raw["max_batch_size"]),
            inputs=tuple(
                InputSpec(i["name"], i["dtype"], tuple(i["dims"]), bool(i["required"]))
                for i in raw["inputs"]
            ),
            outputs=tuple(
                OutputSpec(o["name"], o["kind"], o["dtype"], tuple(o["dims"]))
                for o in raw["outputs"]
            ),
        )

    @classmethod
    def from_model_config(
        cls, config: Any, *, kinds: Mapping[str, str] | None = None
    ) -> EndpointContract:
        """The contract a Triton ``ModelConfig`` spells; a config can't say an output's kind:
        ``kinds`` does (binary otherwise, as every 0.1.0 output was)."""
        from tritonclient.grpc import model_config_pb2 as mc

        def numpy_type(tensor: Any) -> str:
            return _NUMPY_TYPES[mc.DataType.Name(tensor.data_type)]

        return cls(
            name=config.name,
            max_batch_size=config.max_batch_size,
            inputs=tuple(
                InputSpec(t.name, numpy_type(t), tuple(t.dims), not t.optional)
                for t in config.input
            ),
            outputs=tuple(
                OutputSpec(
                    t.name, (kinds or {}).get(t.name, "binary"), numpy_type(t), tuple(t.dims)
                )
                for t in config.output
            ),
        )


@dataclass(frozen=True)
class ContractChanges:
    """How a candidate's contract differs from the serving one, for the clients of the latter."""

    breaking: tuple[str, ...] = ()
    compatible: tuple[str, ...] = ()


def _shape(spec: InputSpec | OutputSpec) -> str:
    return f"{spec.dtype}{list(spec.dims)}"


def contract_changes(old: EndpointContract, new: EndpointContract) -> ContractChanges:
    """Compatible: an added output, an added optional input, an input made optional, a larger
    batch. Breaking: a removed (or renamed) output, any retyped input or output (dtype, dims,
    kind), an added or newly required input, a removed input (Triton refuses a request that
    still sends it), a smaller batch."""
    breaking: list[str] = []
    compatible: list[str] = []
    old_outputs, new_outputs = {o.name: o for o in old.outputs}, {o.name: o for o in new.outputs}
    for name, was in old_outputs.items():
        now = new_outputs.get(name)
        if now is None:
            breaking.append(f"output '{name}' removed")
        elif (_shape(was), was.kind) != (_shape(now), now.kind):
            breaking.append(
                f"output '{name}' retyped: {was.kind} {_shape(was)} -> {now.kind} {_shape(now)}"
            )
    compatible += [f"output '{name}' added" for name in new_outputs if name not in old_outputs]
    old_inputs, new_inputs = {i.name: i for i in old.inputs}, {i.name: i for i in new.inputs}
    for name, before in old_inputs.items():
        after = new_inputs.get(name)
        if after is None:
            breaking.append(f"input '{name}' removed (requests that send it are refused)")
        elif _shape(before) != _shape(after):
            breaking.append(f"input '{name}' retyped: {_shape(before)} -> {_shape(after)}")
        elif before.required != after.required:
            (breaking if after.required else compatible).append(
                f"input '{name}' now {'required' if after.required else 'optional'}"
            )
    for name, added in new_inputs.items():
        if name not in old_inputs:
            (breaking if added.required else compatible).append(
                f"{'required' if added.required else 'optional'} input '{name}' added"
            )
    if new.max_batch_size != old.max_batch_size:
        (breaking if new.max_batch_size < old.max_batch_size else compatible).append(
            f"max batch size {old.max_batch_size} -> {new.max_batch_size}"
        )
    return ContractChanges(tuple(breaking), tuple(compatible))


@dataclass(frozen=True)
class ServingManifest:
    """``rankflow.json`` of an exported version: how to serve it and what it promises."""

    contract: EndpointContract
    #: "python" (one python-backend model) or "ensemble" (merlin-systems steps).
    layout: str
    format: int = SERVING_FORMAT
    release: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Raw label columns (task targets, the row weight) removed from the workflow for serving;
    #: None (versions before 0.2): the task names themselves.
    drop: tuple[str, ...] | None = None

    def to_json(self) -> str:
        payload = {
            "format": self.format,
            "release": self.release,
            "layout": self.layout,
            # What model.py reads: the heads to answer with, in order.
            "tasks": list(self.contract.tasks),
            # ... and the raw columns the fitted workflow reads that a request doesn't carry.
            "drop": list(self.drop) if self.drop is not None else list(self.contract.tasks),
            "contract": self.contract.to_dict(),
            **self.extra,
        }
        return json.dumps(payload, indent=2) + "\n"


def write_manifest(
    version_dir: Path,
    contract: EndpointContract,
    *,
    layout: str,
    drop: Sequence[str] | None = None,
    **extra: Any,
) -> Path:
    """Write ``version_dir/rankflow.json`` for a freshly exported version."""
    from rankflow import __version__

    path = Path(version_dir) / MANIFEST
    manifest = ServingManifest(
        contract,
        layout,
        release=__version__,
        extra=extra,
        drop=tuple(drop) if drop is not None else None,
    )
    path.write_text(manifest.to_json())
    return path


def read_manifest(version_dir: Path, *, config: Any | None = None) -> ServingManifest:
    """The manifest of an exported version; ``config`` (its endpoint ``ModelConfig``) supplies
    what versions written before the contract was recorded (0.1.0) lack."""
    path = Path(version_dir) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"unreadable {path}: {err}") from err
    if "contract" in raw:
        contract = EndpointContract.from_dict(raw["contract"])
    elif config is not None:
        # 0.1.0: tasks and input dtypes only; the endpoint config has the rest.
        contract = EndpointContract.from_model_config(config)
    else:
        raise StoreError(f"{path} records no contract; pass the version's endpoint config")
    extra = {
        k: v
        for k, v in raw.items()
        if k not in ("format", "release", "layout", "tasks", "contract", "inputs", "drop")
    }
    return ServingManifest(
        contract=contract,
        layout=raw.get("layout", "python"),
        format=int(raw.get("format", 1)),
        release=raw.get("release"),
        extra=extra,
        drop=tuple(raw["drop"]) if "drop" in raw else None,
    )


def check_format(manifest: ServingManifest, where: str) -> None:
    """Refuse a version this release can't serve, naming it and the fix."""
    if manifest.format not in READABLE_FORMATS:
        from rankflow import __version__

        raise StoreError(
            f"{where} was exported in serving format {manifest.format} "
            f"(release {manifest.release or 'unknown'}); rankflow {__version__} serves formats "
            f"{list(READABLE_FORMATS)}: serve it with that release, or deploy a version "
            "exported by this one"
        )
