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

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                columns = {}
                for name in self.scorer.input_dtypes:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise ValueError(f"missing input '{name}'")
                    columns[name] = _column(tensor.as_numpy())
                scores = self.scorer.score_columns(columns)
                outputs = [pb_utils.Tensor(t, scores[t].reshape(-1, 1)) for t in self.tasks]
                responses.append(pb_utils.InferenceResponse(outputs))
            except Exception as err:  # one bad request must not take the model down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"rankflow: {err}"))
                )
        return responses
