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


#: Probabilities are kept this far from 0 and 1 before their logit is taken.
_PROBABILITY_EPS = 1e-6


def _task_output_base() -> type:
    from merlin.models.tf.core.base import Block

    return Block


@tf.keras.utils.register_keras_serializable(package="rankflow")
class TaskOutput(_task_output_base()):  # type: ignore[misc]
    """The ``post`` block of one task head: how it trains and what it serves.

    Training (and validation): the task's sample weight is the product of ``weight_columns``
    (the row weight, the ``given`` task's label: a conversion trains on clicks only), and a
    regression target is standardised -- after ``log1p`` when asked -- so its loss is on the same
    scale whatever the unit.

    Serving: a binary probability goes through beta calibration,
    ``sigmoid(scale * logit(p) - curvature * (log p + log(1 - p)) + shift)`` -- Platt scaling when
    ``curvature`` is 0, or absent (``beta`` off: rankers saved before it have none); a regression
    prediction goes back to the target's own unit (de-standardised, ``expm1`` after ``log1p``),
    then ``scale * y + shift``. The calibration weights are fitted on the validation split after
    training (identity until then), so online scores are calibrated by the SavedModel itself.
    """

    def __init__(
        self,
        kind: str,
        weight_columns: tuple[str, ...] = (),
        target_mean: float = 0.0,
        target_std: float = 1.0,
        transform: str | None = None,
        beta: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.weight_columns = tuple(weight_columns)
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.transform = transform
        self.scale = self.add_weight(
            name="calibration_scale", shape=(), initializer="ones", trainable=False
        )
        self.shift = self.add_weight(
            name="calibration_shift", shape=(), initializer="zeros", trainable=False
        )
        # Off by default: rankers saved before beta calibration have no such weight in their
        # checkpoint, and their configs (without "beta") must still load.
        self.beta = bool(beta)
        self.curvature = (
            self.add_weight(
                name="calibration_curvature", shape=(), initializer="zeros", trainable=False
            )
            if self.beta
            else None
        )

    def call(
        self,
        inputs: tf.Tensor,
        features: Any = None,
        targets: Any = None,
        training: bool = False,
        testing: bool = False,
        target_name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if training or testing:
            from merlin.models.tf.core.prediction import Prediction

            weight = None
            for column in self.weight_columns:
                # Keras traces training calls without targets when it saves: no weight then.
                for source in (targets, features):
                    if isinstance(source, dict) and column in source:
                        value = tf.cast(tf.reshape(source[column], (-1, 1)), tf.float32)
                        weight = value if weight is None else weight * value
                        break
            target = targets[target_name] if isinstance(targets, dict) else targets
            if self.kind == "regression" and target is not None:
                target = tf.cast(target, tf.float32)
                if self.transform == "log1p":
                    target = tf.math.log1p(tf.maximum(target, 0.0))
                target = (target - self.target_mean) / self.target_std
            return Prediction(inputs, target, sample_weight=weight)
        return self.serve(inputs)

    def serve(self, inputs: tf.Tensor) -> tf.Tensor:
        """The served value of a raw head output (also what calibration is fitted on, with
        identity calibration weights)."""
        if self.kind == "binary":
            p = tf.clip_by_value(inputs, _PROBABILITY_EPS, 1.0 - _PROBABILITY_EPS)
            log_p, log_q = tf.math.log(p), tf.math.log1p(-p)
            logit = self.scale * (log_p - log_q) + self.shift
            if self.curvature is not None:
                logit -= self.curvature * (log_p + log_q)
            return tf.sigmoid(logit)
        value = inputs * self.target_std + self.target_mean
        if self.transform == "log1p":
            value = tf.math.expm1(value)
        return self.scale * value + self.shift

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kind": self.kind,
            "weight_columns": list(self.weight_columns),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "transform": self.transform,
            "beta": self.beta,
        }
