"""Triton python-backend model: raw feature columns in, one score per task out.

Copied into the model repository as ``<model>/<version>/model.py``; the version directory also
holds the fitted workflow, the SavedModel and ``rankflow.json``. Runs inside Triton's python stub,
which provides ``triton_python_backend_utils``.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from rankflow.core.errors import ScoringError
from serving.scorer import RankerScorer

#: A categorical value longer than this is not a category (a pasted document, an attack).
MAX_VALUE_BYTES = 4096


def _column(name: str, values: np.ndarray) -> np.ndarray:
    values = values.reshape(-1)
    if values.dtype.kind not in ("O", "S"):
        return values
    # Triton hands BYTES tensors over as bytes objects.
    sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    if len(sizes) and sizes.max() > MAX_VALUE_BYTES:
        row = int(sizes.argmax())
        raise ScoringError(
            f"input '{name}' row {row}: a {sizes[row]:,}-byte value (at most "
            f"{MAX_VALUE_BYTES:,} bytes per categorical value)"
        )
    try:
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    except UnicodeDecodeError as err:
        row = next(i for i, v in enumerate(values) if isinstance(v, bytes) and not _utf8(v))
        raise ScoringError(f"input '{name}' row {row} is not UTF-8 text: {err}") from err


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


class TritonPythonModel:
    def initialize(self, args):
        from rankflow.core import integrity

        version_dir = Path(args["model_repository"]) / args["model_version"]
        # Refuse a version whose files are not the ones exported (the workflow is a pickle).
        integrity.verify(version_dir)
        meta = json.loads((version_dir / "rankflow.json").read_text())
        self.tasks = meta["tasks"]
        # "drop": the raw label columns (0.2+); before, the task names were the target columns.
        self.scorer = RankerScorer(
            version_dir / "workflow", version_dir / "ranker", targets=meta.get("drop", self.tasks)
        )

    def _columns(self, request) -> dict:
        columns = {}
        for name in self.scorer.input_dtypes:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ScoringError(f"missing input '{name}'")
            columns[name] = _column(name, tensor.as_numpy())
        return self.scorer.prepare(columns)

    def _response(self, scores: dict, start: int, stop: int):
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(t, scores[t][start:stop].reshape(-1, 1)) for t in self.tasks]
        )

    @staticmethod
    def _error(err: Exception):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"rankflow: {err}"))

    def execute(self, requests):
        # One bad request must not take the model (or the requests batched with it) down:
        # each is checked on its own, the good ones are scored together in one model call.
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._columns(request)))
            except Exception as err:
                responses[i] = self._error(err)
        if len(good) > 1 and self.scorer.rows_independent:
            try:
                merged = {
                    name: np.concatenate([columns[name] for _, columns in good])
                    for name in self.scorer.input_dtypes
                }
                scores = self.scorer.score_prepared(merged)
                start = 0
                for i, columns in good:
                    stop = start + len(next(iter(columns.values())))
                    responses[i] = self._response(scores, start, stop)
                    start = stop
                good = []
            except Exception:  # score them one by one below, so the error lands where it belongs
                pass
        for i, columns in good:
            try:
                scores = self.scorer.score_prepared(columns)
                responses[i] = self._response(scores, 0, len(scores[self.tasks[0]]))
            except Exception as err:
                responses[i] = self._error(err)
        return responses
