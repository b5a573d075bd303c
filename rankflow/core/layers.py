"""Custom Keras layers of the ranker. Imports TensorFlow: import lazily, from function bodies."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="rankflow")
class CrossNetwork(tf.keras.layers.Layer):
    """A DCN-v2 cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    Ours rather than ``mm.CrossBlock``, whose weights don't survive a SavedModel round trip in
    merlin-models 23.12 (the reloaded model scores differently; see the training tests).
    """

    def __init__(self, depth: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth = depth

    def build(self, input_shape: tf.TensorShape) -> None:
        width = int(input_shape[-1])
        self.cross = [tf.keras.layers.Dense(width, name=f"cross_{i}") for i in range(self.depth)]
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = inputs
        for layer in self.cross:
            x = inputs * layer(x) + x
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "depth": self.depth}
