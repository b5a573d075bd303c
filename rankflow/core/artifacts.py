"""Writing and loading the pipeline's artifacts, always through their sha256 seals.

An artifact directory is written whole or not at all (:func:`atomic_dir`) and sealed; the fitted
NVTabular workflow (a pickle) and the ranker's SavedModel (Keras deserialises layer configs) are
loaded only after their manifest checks out. The training step, the evaluation step and both
serving flavours load them through here, so the checks and the "drop the targets" rule exist once.

Heavy imports (NVTabular, Merlin, TensorFlow) stay inside the functions.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.core import integrity
from rankflow.core.errors import ExportError, MissingArtifactError
from rankflow.core.tasks import task_of

if TYPE_CHECKING:
    import nvtabular as nvt

logger = logging.getLogger(__name__)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a scratch directory that becomes ``final`` only if the block completes.

    A step that fails (or is killed) half-way leaves no half-written artifact at ``final``: the
    scratch directory sits beside it, so the closing rename is atomic on the same filesystem.
    The sha256 manifest (:mod:`rankflow.core.integrity`) is written before publishing, so every
    loader can check the artifact is the one written here.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A writer that was killed (SIGKILL, OOM, node loss) could not clean up its scratch: the
    # next writer of the same artifact does.
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    scratch.mkdir()
    try:
        yield scratch
        integrity.seal(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    scratch.rename(final)


def _verified_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise MissingArtifactError(f"no {what} at {path}")
    integrity.verify(path)
    return path


def load_workflow(workflow_dir: Path, *, drop: Sequence[str] = ()) -> nvt.Workflow:
    """The fitted NVTabular workflow at ``workflow_dir``, without the input columns ``drop``.

    Serving drops the targets: a request carries features only. The manifest is checked first:
    the workflow is a pickle, and loading it runs code, so only the one rankflow wrote.
    """
    import nvtabular as nvt

    _verified_dir(workflow_dir, "fitted workflow")
    try:
        workflow = nvt.Workflow.load(str(workflow_dir))
    except Exception as err:
        raise ExportError(f"cannot load the fitted workflow at {workflow_dir}: {err}") from err
    present = [c for c in drop if c in workflow.input_schema.column_names]
    return workflow.remove_inputs(present) if present else workflow


def input_dtypes(workflow: nvt.Workflow) -> dict[str, np.dtype]:
    """Raw input column -> the numpy dtype the workflow reads it as."""
    return {c.name: np.dtype(c.dtype.to_numpy) for c in workflow.input_schema}


def save_ranker(model: Any, model_dir: Path, *, files: Mapping[str, str] | None = None) -> Path:
    """Save the ranker as a SavedModel at ``model_dir``: whole and sealed, or not at all.

    ``files`` (name -> text) are written beside it, under the same seal.
    """
    with atomic_dir(model_dir) as scratch:
        model.save(str(scratch))
        for name, text in (files or {}).items():
            (scratch / name).write_text(text)
    return Path(model_dir)


def load_ranker(model_dir: Path) -> Any:  # -> tf.keras.Model
    """Reload a saved ranker with its Merlin layers and input names intact.

    Its sha256 manifest is checked first: Keras deserialises layer configs on load.
    """
    import merlin.models.tf  # noqa: F401  -- registers the Merlin layers; without it inputs lose names
    import tensorflow as tf

    import rankflow.core.layers  # noqa: F401  -- registers rankflow's own layers

    _verified_dir(model_dir, "saved ranker")
    return tf.keras.models.load_model(str(model_dir))


def split_loader(path: Path, *, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """The batches of a processed split: Merlin's dataloader over cudf on the GPU path, the
    split's arrays in memory on the CPU (:mod:`rankflow.core.batches` says why). Both yield the
    same ``(inputs, targets)`` tensors, ragged lists as ``<col>__values`` / ``<col>__offsets``.
    """
    from rankflow.core.device import gpu_available

    if not gpu_available():
        from rankflow.core.batches import in_memory_loader

        return in_memory_loader(path, batch_size=batch_size, shuffle=shuffle, seed=seed)
    import merlin.models.tf as mm
    from merlin.io import Dataset

    return mm.Loader(Dataset(str(path), engine="parquet"), batch_size=batch_size, shuffle=shuffle)


def predict(
    model: Any, data_path: Path, *, batch_size: int = 8192, stride: int = 1
) -> dict[str, np.ndarray]:
    """Scores per task for every row of a processed split, in file order. With ``stride`` > 1
    only every stride-th batch is scored (an even sample through the file); the other rows are
    NaN."""
    from rankflow.core.tasks import target_columns

    loader = split_loader(data_path, batch_size=batch_size, shuffle=False)
    outputs: dict[str, list[np.ndarray]] = {}
    for index, (inputs, _targets) in enumerate(loader):
        if index % stride:
            rows = int(next(iter(inputs.values())).shape[0])
            for parts in outputs.values():
                parts.append(np.full(rows, np.nan, dtype=parts[0].dtype))
            continue
        result = model(inputs, training=False)
        if not isinstance(result, Mapping):
            result = {target_columns(loader.input_schema)[0]: result}
        for name, value in result.items():
            outputs.setdefault(task_of(name), []).append(np.asarray(value).reshape(-1))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}
