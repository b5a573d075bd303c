"""Triton python-backend model serving the ranker's SavedModel through its serving signature.

The stand-in for Triton's TensorFlow backend where the server has none: copied as
``<name>_ranker/<version>/model.py`` beside ``model.savedmodel``, with the same config as the
TensorFlow-backend model but ``backend: "python"``, so the ensemble around it is unchanged. Like the
TensorFlow backend it needs no Python custom objects: only TensorFlow and the SavedModel.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.savedmodel"
        self._model = tf.saved_model.load(str(path))  # keeps the signature's variables alive
        self._signature = self._model.signatures["serving_default"]
        specs = self._signature.structured_input_signature[1]
        self._inputs = {i["name"]: specs[i["name"]] for i in config["input"]}
        self._outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                features = {}
                for name, spec in self._inputs.items():
                    values = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    shape = [-1, *spec.shape.as_list()[1:]]
                    features[name] = tf.constant(values.reshape(shape), dtype=spec.dtype)
                outputs = self._signature(**features)
                responses.append(
                    pb_utils.InferenceResponse(
                        [pb_utils.Tensor(n, np.asarray(outputs[n])) for n in self._outputs]
                    )
                )
            except Exception as err:  # one bad request must not take the model down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"ranker: {err}"))
                )
        return responses
