"""Triton python-backend model: raw feature columns in, one score per task out.

Copied into the model repository as ``<model>/<version>/model.py``; the version directory also
holds the fitted workflow, the SavedModel and ``rankflow.json``. Runs inside Triton's python stub,
which provides ``triton_python_backend_utils``.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from serving.scorer import RankerScorer


def _column(values: np.ndarray) -> np.ndarray:
    values = values.reshape(-1)
    if values.dtype.kind in ("O", "S"):
        # Triton hands BYTES tensors over as bytes objects.
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    return values


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta = json.loads((version_dir / "rankflow.json").read_text())
        self.tasks = meta["tasks"]
        self.scorer = RankerScorer(
            version_dir / "workflow", version_dir / "ranker", targets=self.tasks
        )

    def _columns(self, request) -> dict:
        columns = {}
        for name in self.scorer.input_dtypes:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input '{name}'")
            columns[name] = _column(tensor.as_numpy())
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
