"""The Merlin Models multi-task ranker: build, train, calibrate, save, reload, predict.

Output heads come from the schema's target tags -- ``BINARY_CLASSIFICATION`` or ``REGRESSION`` --
so the model follows whatever tasks the dataset spec declares. Each head's ``post`` block
(:class:`rankflow.core.layers.TaskOutput`) carries what the spec says about its task: the sample
weight (row weight, ``given`` task), the regression target's scale, and the calibration fitted on
the validation split after training.

The training budget follows the log's size (:func:`plan_budget`); training keeps the weights of
the epoch with the best validation criterion (:func:`validation_criterion`), not the last.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankflow.core.artifacts import save_ranker, split_loader
from rankflow.core.errors import ConfigError, DataValidationError
from rankflow.core.io import parquet_parts
from rankflow.core.spec import DatasetSpec

if TYPE_CHECKING:
    import merlin.models.tf as mm
    from merlin.schema import Schema

logger = logging.getLogger(__name__)

ARCHITECTURES = ("mmoe", "ple", "shared_bottom")
#: Written beside the SavedModel: the budget it trained with, its epochs, its calibration.
TRAINING_RECORD = "training.json"
#: Optimizer steps a default budget gives at least (epochs grow on small logs to reach them).
MIN_STEPS = 750
#: Epochs a default budget never exceeds.
MAX_EPOCHS = 30
#: Default batch size: about train rows / ROWS_PER_BATCH, a power of two within these bounds.
ROWS_PER_BATCH = 200
BATCH_BOUNDS = (256, 2048)
#: The default peak learning rate at batch 2048.
PEAK_LEARNING_RATE = 1e-2
#: Train rows scored for a regression head's calibrated mean (an even sample beyond this).
MEAN_SAMPLE_ROWS = 400_000
#: A given task's loss is divided by its row share to this power (see :func:`plan_heads`).
GIVEN_SHARE_POWER = 0.75


@dataclass(frozen=True)
class RankerConfig:
    """Architecture and training hyper-parameters of the ranker."""

    architecture: str = "mmoe"
    embedding_dim: int = 16
    cross_depth: int = 2
    num_experts: int = 4
    expert_mlp: tuple[int, ...] = (64,)
    tower_mlp: tuple[int, ...] = (32,)
    bottom_mlp: tuple[int, ...] = (128, 64)
    gate_mlp: tuple[int, ...] = (16,)
    ple_layers: int = 2
    dropout: float = 0.1
    #: Each pretrained vector (a text column's, tagged EMBEDDING) is projected to this many
    #: dimensions by a learned linear map before it meets the other features; None feeds it
    #: whole.
    content_dim: int | None = 16
    #: None: derived from the train split's size (:func:`plan_budget`).
    batch_size: int | None = None
    epochs: int | None = None
    patience: int = 2
    #: Peak Adam learning rate; None: PEAK_LEARNING_RATE at batch 2048, scaled with the batch
    #: size's square root.
    learning_rate: float | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.cross_depth < 0:
            raise ConfigError(f"cross_depth must be >= 0, got {self.cross_depth}")
        for name in (
            "embedding_dim",
            "num_experts",
            "batch_size",
            "epochs",
            "ple_layers",
            "patience",
            "content_dim",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("expert_mlp", "tower_mlp", "bottom_mlp", "gate_mlp"):
            sizes = getattr(self, name)
            if not sizes or any(s < 1 for s in sizes):
                raise ConfigError(f"{name} must be a non-empty list of positive sizes, got {sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")


def parse_sizes(text: str, *, name: str) -> tuple[int, ...]:
    """``"128,64"`` -> ``(128, 64)``; pipeline parameters carry layer sizes as strings."""
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError as err:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from err
    if not sizes:
        raise ConfigError(f"{name} must name at least one layer size, got {text!r}")
    return sizes


def format_sizes(sizes: tuple[int, ...]) -> str:
    """The inverse of ``parse_sizes``."""
    return ",".join(str(size) for size in sizes)


@dataclass(frozen=True)
class Head:
    """What one task head needs to know beyond its schema column (see ``TaskOutput``)."""

    task: str
    kind: str
    weight_columns: tuple[str, ...] = ()
    loss: str = "bce"
    #: Multiplies the task's loss: the spec's weight over its baseline loss (a constant
    #: predictor's) and the mean row weight, so every task's loss starts near 1 (times the share
    #: of rows it trains on) whatever its kind, unit or positive rate.
    loss_weight: float = 1.0
    target_mean: float = 0.0
    target_std: float = 1.0
    transform: str | None = None


@dataclass(frozen=True)
class Budget:
    """The training budget chosen for a log, recorded in the run summary."""

    train_rows: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    learning_rate: float
    #: "derived" from the row count, or "set" by the caller, per field.
    source: dict[str, str] = field(default_factory=dict)


def plan_budget(train_rows: int, config: RankerConfig) -> Budget:
    """Batch size and epochs for ``train_rows`` rows; explicit config values win.

    A 20,000-row log at batch 2048 and one epoch got 8 optimizer steps; here the batch shrinks
    with the log (rows / 200, 256 to 2048) and epochs grow until the run has MIN_STEPS steps
    (at most MAX_EPOCHS). Early stopping on the validation criterion ends it sooner.
    """
    if train_rows < 1:
        raise DataValidationError("the train split has no rows")
    source = {}
    if config.batch_size is not None:
        batch, source["batch_size"] = config.batch_size, "set"
    else:
        target = max(train_rows / ROWS_PER_BATCH, 1.0)
        batch = int(np.clip(2 ** round(math.log2(target)), *BATCH_BOUNDS))
        source["batch_size"] = "derived"
    steps = max(1, math.ceil(train_rows / batch))
    if config.epochs is not None:
        epochs, source["epochs"] = config.epochs, "set"
    else:
        epochs = int(np.clip(math.ceil(MIN_STEPS / steps), 1, MAX_EPOCHS))
        source["epochs"] = "derived"
    if config.learning_rate is not None:
        rate, source["learning_rate"] = config.learning_rate, "set"
    else:
        # Smaller batches take noisier steps: a smaller peak keeps them stable.
        rate = PEAK_LEARNING_RATE * math.sqrt(batch / BATCH_BOUNDS[1])
        source["learning_rate"] = "derived"
    return Budget(train_rows, batch, epochs, steps, rate, source)


def read_labels(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """``columns`` of a feature split, as float64 arrays."""
    import pyarrow.dataset as ds

    table = ds.dataset([str(p) for p in parquet_parts(path)], format="parquet").to_table(
        columns=columns
    )
    return {c: np.asarray(table.column(c).to_numpy(), dtype=np.float64) for c in columns}


def sample_weights(spec: DatasetSpec, labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Task -> its per-row weight: the row weight times the ``given`` task's label."""
    rows = len(next(iter(labels.values())))
    base = labels[spec.weight_column] if spec.weight_column else np.ones(rows)
    weights = {}
    for task in spec.tasks:
        weight = base.copy()
        if task.given is not None:
            weight = weight * labels[task.given]
        weights[task.name] = weight
    return weights


def label_columns(spec: DatasetSpec) -> list[str]:
    """The processed splits' label columns: every task (by name), then the row weight."""
    return [*spec.task_names] + ([spec.weight_column] if spec.weight_column else [])


def plan_heads(spec: DatasetSpec, labels: Mapping[str, np.ndarray]) -> dict[str, Head]:
    """Every task's head, its loss scaled by what the train split's ``labels`` say of it."""
    weights = sample_weights(spec, labels)
    base_mean = labels[spec.weight_column].mean() if spec.weight_column else 1.0
    heads = {}
    for task in spec.tasks:
        w, y = weights[task.name], labels[task.name]
        if not w.sum() > 0:
            raise DataValidationError(
                f"task '{task.name}' has no train row to learn from"
                + (f" (no positive of '{task.given}' in train)" if task.given else "")
            )
        weight_columns = tuple(
            c
            for c in ((spec.weight_column,) if spec.weight_column else ())
            + ((task.given,) if task.given else ())
        )
        # A given task trains on its share of the rows (a conversion on the clicks). Its loss,
        # averaged over every row, is that share of its per-row loss: left so, the head was
        # undertrained (2M synthetic rows, one epoch: conversion AUC gap to the oracle 0.081);
        # divided by the share, it took over the shared layers (click gap 0.0106 -> 0.0230).
        # Gaps click / conversion by the share's power at a 4.3% click rate: 0.5: 0.0112 /
        # 0.0309; 0.75: 0.0169 / 0.0231; 1: 0.0230 / 0.0234. At 7.7%: 0.5: 0.0081 / 0.0178;
        # 0.75: 0.0124 / 0.0165; 1: 0.0156 / 0.0150. The rarer the positives, the more a low
        # power starves the given task; ads logs often click at 1-2%.
        share = float(w.sum() / (base_mean * len(w)))
        if task.kind == "binary":
            rate = float(np.clip((w * y).sum() / w.sum(), 1e-6, 1 - 1e-6))
            if rate in (1e-6, 1 - 1e-6):
                raise DataValidationError(
                    f"task '{task.name}' has a single label in train: nothing to learn"
                )
            baseline = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
            mean, std = 0.0, 1.0
        else:
            t = np.log1p(np.maximum(y, 0)) if task.transform == "log1p" else y
            mean = float((w * t).sum() / w.sum())
            std = float(np.sqrt((w * (t - mean) ** 2).sum() / w.sum()))
            if not std > 0:
                raise DataValidationError(
                    f"task '{task.name}' has a constant target in train: nothing to learn"
                )
            baseline = 1.0  # the standardised target's variance
        heads[task.name] = Head(
            task=task.name,
            kind=task.kind,
            weight_columns=weight_columns,
            loss=task.loss_name,
            loss_weight=task.weight / (float(base_mean) * baseline * share**GIVEN_SHARE_POWER),
            target_mean=mean,
            target_std=std,
            transform=task.transform,
        )
    return heads


def _default_heads(schema: Schema) -> dict[str, Head]:
    from merlin.schema import Tags

    heads = {}
    for column in schema.select_by_tag(Tags.TARGET):
        if Tags.BINARY_CLASSIFICATION in column.tags:
            heads[column.name] = Head(column.name, "binary")
        elif Tags.REGRESSION in column.tags:
            heads[column.name] = Head(column.name, "regression", loss="mse")
    return heads


def output_name(head: Head) -> str:
    return f"{head.task}/{'binary' if head.kind == 'binary' else 'regression'}_output"


def build_ranker(
    schema: Schema, *, config: RankerConfig, heads: Mapping[str, Head] | None = None
) -> mm.Model:
    """A multi-task ranker over the schema's features with one head per task.

    ``heads`` (from :func:`plan_heads`) adds what the schema can't say: sample weights, the
    target's scale; without it every TARGET-tagged binary or regression column gets a plain head.
    """
    import merlin.models.tf as mm
    import tensorflow as tf
    from merlin.schema import Tags

    from rankflow.core.layers import TaskOutput

    heads = dict(heads) if heads is not None else _default_heads(schema)
    if not heads:
        raise ConfigError("the schema has no column tagged TARGET: nothing to rank on")
    features = schema.remove_by_tag(Tags.TARGET)
    pretrained = features.select_by_tag(Tags.EMBEDDING)
    inputs = mm.InputBlockV2(
        features,
        pretrained_embeddings=(
            mm.PretrainedEmbeddings(pretrained, output_dims=config.content_dim)
            if len(pretrained)
            else Tags.EMBEDDING
        ),
        categorical=mm.Embeddings(
            features.select_by_tag(Tags.CATEGORICAL),
            dim=config.embedding_dim,
            # A list's values are embedded in its (possibly shared) table and averaged over the
            # row's values; an empty list embeds as zeros.
            sequence_combiner="mean",
        ),
    )

    def mlp(sizes: tuple[int, ...]) -> Any:  # an mm.MLPBlock (a function returning a Block)
        return mm.MLPBlock(list(sizes), dropout=config.dropout or None)

    blocks = {}
    for head in heads.values():
        post = TaskOutput(
            head.kind,
            weight_columns=head.weight_columns,
            target_mean=head.target_mean,
            target_std=head.target_std,
            transform=head.transform,
            beta=head.kind == "binary",
            name=f"{head.task}_post",
        )
        if head.kind == "binary":
            output = mm.BinaryOutput(head.task, post=post)
        else:
            loss = tf.keras.losses.Huber() if head.loss == "huber" else "mse"
            output = mm.RegressionOutput(head.task, default_loss=loss, post=post)
        blocks[output_name(head)] = output
    outputs = mm.OutputBlock(
        schema.select_by_name(list(heads)),
        model_outputs=blocks,
        task_blocks=mlp(config.tower_mlp),
    )
    if config.architecture == "mmoe":
        body = mm.MMOEBlock(
            outputs,
            expert_block=mlp(config.expert_mlp),
            num_experts=config.num_experts,
            gate_block=mlp(config.gate_mlp),
        )
    elif config.architecture == "ple":
        body = mm.PLEBlock(
            num_layers=config.ple_layers,
            outputs=outputs,
            expert_block=mlp(config.expert_mlp),
            num_shared_experts=max(1, config.num_experts // 2),
            num_task_experts=max(1, config.num_experts // 2),
            gate_block=mlp(config.gate_mlp),
        )
    else:
        body = mlp(config.bottom_mlp)
    if config.cross_depth:
        # A DCN-v2 cross network before the experts: MLPs learn multiplicative feature crosses
        # (user x ad affinity) slowly, cross layers represent them directly.
        from rankflow.core.layers import CrossNetwork

        return mm.Model(
            inputs, CrossNetwork(config.cross_depth, name="cross_network"), body, outputs
        )
    return mm.Model(inputs, body, outputs)


def _weighted_logloss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def validation_criterion(
    spec: DatasetSpec, predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> tuple[float, dict[str, float]]:
    """(criterion, per-task ratios): each task's validation loss over its constant predictor's,
    averaged with the spec's task weights. 1 is "no better than a constant" for every kind, so
    one number compares epochs fairly across binary and regression tasks."""
    weights = sample_weights(spec, labels)
    ratios = {}
    for task in spec.tasks:
        w, y, p = weights[task.name], labels[task.name], predictions[task.name]
        if not w.sum() > 0:
            continue
        mean = float((w * y).sum() / w.sum())
        if task.kind == "binary":
            baseline = _weighted_logloss(y, np.full_like(y, mean), w)
            loss = _weighted_logloss(y, p, w)
        else:
            baseline = float((w * (y - mean) ** 2).sum() / w.sum())
            loss = float((w * (y - p) ** 2).sum() / w.sum())
        ratios[task.name] = loss / baseline if baseline > 0 else 1.0
    total = sum(spec.task(t).weight for t in ratios)
    criterion = sum(spec.task(t).weight * r for t, r in ratios.items()) / total
    return criterion, ratios


def fit_calibration(
    kind: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    mean: float | None = None,
    mean_prediction: float | None = None,
) -> Calibration:
    """One task's served-value calibration, fitted on validation rows.

    Binary: beta calibration (:func:`fit_beta`; Platt scaling on the logit where beta's fit
    would not be monotone). Regression: weighted least squares
    of the target on the prediction, in the target's unit, its slope kept only where it differs
    from 1 by more than twice its heteroscedasticity-robust standard error. Identity when there
    is too little to fit on or the fit would invert the ranking.

    ``mean``: the task's mean target estimated on more rows than the validation split (train and
    valid pooled). The scale is the validation split's; the shift is then set so the calibrated
    values average ``mean`` over it. A small validation split's own rate is noisy: 2,000 rows of
    a 20,000-row log at 8% positives miss the true rate by 8% (one standard deviation), and a
    calibration that matched it would serve that error.

    ``mean_prediction`` (regression): the uncalibrated predictions' mean over the rows ``mean``
    was taken on; the shift then maps one onto the other, instead of the validation rows' mean
    prediction onto ``mean``. In a 20,000-row log's ~150 clicked validation rows, a heavy-tailed
    target's slope (1.25, robust standard error 0.31) and mean prediction were noise that put
    the served mean 8-14% off on later rows of the same world; these rules kept it within 5%.
    """
    keep = weights > 0
    y, p, w = labels[keep], predictions[keep], weights[keep]
    if y.size < 50 or np.ptp(p) == 0:
        return Calibration()
    curvature = 0.0
    if kind == "binary":
        if y.min() == y.max():
            return Calibration()
        a, b, shift = fit_beta(p, y, w)
        if a >= 0 and b >= 0:
            scale, curvature = (a + b) / 2, (b - a) / 2
        else:
            scale, shift = fit_platt(_logit(p), y, w)
    else:
        scale, shift = _least_squares_slope(p, y, w)
    fitted = Calibration(float(scale), float(shift), float(curvature))
    if not all(np.isfinite(astuple(fitted))) or scale <= 0:
        return Calibration()
    if mean is None:
        return fitted
    if kind != "binary" and mean_prediction is not None:
        return replace(fitted, shift=float(mean - scale * mean_prediction))
    return replace(fitted, shift=_shift_to_mean(kind, p, w, fitted, mean))


@dataclass(frozen=True)
class Calibration:
    """One head's served-value calibration, as :class:`rankflow.core.layers.TaskOutput`
    applies it; the identity by default."""

    scale: float = 1.0
    shift: float = 0.0
    #: Binary only: beta calibration's asymmetry (0: Platt scaling).
    curvature: float = 0.0

    def apply(self, kind: str, values: np.ndarray) -> np.ndarray:
        """The calibrated values of uncalibrated ``values`` (numpy, as the layer serves them)."""
        if kind != "binary":
            return self.scale * values + self.shift
        return 1.0 / (1.0 + np.exp(-self.logit(values)))

    def logit(self, p: np.ndarray) -> np.ndarray:
        """A binary head's calibrated logit of uncalibrated probabilities ``p``."""
        pc = np.clip(p, 1e-6, 1 - 1e-6)
        log_p, log_q = np.log(pc), np.log1p(-pc)
        return self.scale * (log_p - log_q) - self.curvature * (log_p + log_q) + self.shift


def _logit(p: np.ndarray) -> np.ndarray:
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(pc) - np.log1p(-pc)


def fit_beta(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) minimising the weighted log-loss of ``sigmoid(a log p - b log(1 - p) + c)``:
    beta calibration (Kull, Silva Filho and Flach, 2017), Platt scaling when a = b. Monotone
    when a, b >= 0.

    Why not Platt: on 20,000-row logs (seeds 21-24 of the generator, fitted on 2,000 validation
    rows, judged on 200,000 later rows of the same world), Platt left long-view ECE at
    0.008-0.022 -- 0.012-0.013 even fitted on those 200,000 rows, the shape it can't bend to --
    and beta took it to 0.007-0.018, clicks from 0.007-0.009 to 0.002-0.007.
    """
    from scipy.optimize import minimize

    pc = np.clip(p, 1e-6, 1 - 1e-6)
    x = np.column_stack([np.log(pc), -np.log1p(-pc), np.ones_like(pc)])
    w = w / w.mean()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = x @ theta
        residual = w * (1.0 / (1.0 + np.exp(-logits)) - y)
        value = float(np.mean(w * (np.logaddexp(0.0, logits) - y * logits)))
        return value, x.T @ residual / y.size

    a, b, c = minimize(loss, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B").x
    return float(a), float(b), float(c)


def _least_squares_slope(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares of ``y`` on ``p``; the slope is 1 unless the rows show otherwise.

    Its standard error is the HC3 sandwich: a heavy-tailed target's residuals are far from
    homoscedastic, and the textbook error called a small split's noise significant. HC3 (the
    residuals inflated by their leverage) flagged 11% of 150-row samples with a true slope of 1
    and exponential noise, HC0 15%.
    """
    mp, my = np.average(p, weights=w), np.average(y, weights=w)
    centred = p - mp
    spread = float((w * centred**2).sum())
    slope = float((w * centred * (y - my)).sum() / spread)
    leverage = w / w.sum() + w * centred**2 / spread
    residual = (y - my - slope * centred) / np.maximum(1.0 - leverage, 1e-6)
    error = float(np.sqrt((w**2 * centred**2 * residual**2).sum()) / spread)
    if not abs(slope - 1.0) > 2.0 * error:
        slope = 1.0
    return slope, float(my - slope * mp)


def fit_platt(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, *, shift: bool = True
) -> tuple[float, float]:
    """(a, b) minimising the weighted log-loss of ``sigmoid(a z + b)`` over logits ``z``; b = 0
    without ``shift`` (temperature scaling)."""
    from scipy.optimize import minimize

    w = w / w.mean()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b = theta[1] if shift else 0.0
        logits = theta[0] * z + b
        residual = w * (1.0 / (1.0 + np.exp(-logits)) - y)
        grad = [np.mean(residual * z)] + ([np.mean(residual)] if shift else [])
        return float(np.mean(w * (np.logaddexp(0.0, logits) - y * logits))), np.array(grad)

    start = np.array([1.0, 0.0] if shift else [1.0])
    theta = minimize(loss, start, jac=True, method="L-BFGS-B").x
    return float(theta[0]), (float(theta[1]) if shift else 0.0)


def _shift_to_mean(
    kind: str, p: np.ndarray, w: np.ndarray, calibration: Calibration, mean: float
) -> float:
    """The shift that makes the calibrated values' weighted mean over ``p`` equal ``mean``."""
    from scipy.optimize import brentq

    shift = calibration.shift
    if kind != "binary":
        return float(mean - calibration.scale * np.average(p, weights=w))
    z = calibration.logit(p) - shift

    def gap(b: float) -> float:
        return float(np.average(1.0 / (1.0 + np.exp(-(z + b))), weights=w) - mean)

    low, high = shift - 20.0, shift + 20.0
    if not 0.0 < mean < 1.0 or gap(low) > 0 or gap(high) < 0:
        return shift
    return float(brentq(gap, low, high, xtol=1e-9))


def set_calibration(layer: Any, calibration: Calibration) -> None:
    """Assign a TaskOutput's calibration weights (one saved without beta has no curvature)."""
    layer.scale.assign(calibration.scale)
    layer.shift.assign(calibration.shift)
    if layer.curvature is not None:
        layer.curvature.assign(calibration.curvature)
    elif calibration.curvature:
        raise ConfigError(f"{layer.name} has no curvature weight: it serves Platt scaling only")


def reset_calibration(model: Any) -> None:
    """Set every head's calibration to the identity: the model then serves what it was fitted
    on (bench.calibration compares calibrators from there)."""
    for layer in task_outputs(model).values():
        set_calibration(layer, Calibration())


def task_outputs(model: Any) -> dict[str, Any]:
    """Task -> its head's TaskOutput layer."""
    from rankflow.core.layers import TaskOutput

    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, TaskOutput):
            found[layer.name.removesuffix("_post")] = layer
    return found


@dataclass(frozen=True)
class TrainingResult:
    history: dict[str, list[float]]
    budget: Budget
    #: Per epoch: the validation criterion (lower is better) and each task's loss ratio.
    criterion: list[float]
    task_ratios: list[dict[str, float]]
    best_epoch: int  # 1-based
    #: Task -> its calibration, fitted on the validation split.
    calibration: dict[str, Calibration]

    def summary(self) -> dict[str, Any]:
        return {
            "budget": asdict(self.budget),
            "epochs_run": len(self.criterion),
            "best_epoch": self.best_epoch,
            "criterion": self.criterion,
            "task_ratios": self.task_ratios,
            "calibration": {t: asdict(c) for t, c in self.calibration.items()},
        }


def train_ranker(
    spec: DatasetSpec,
    train_path: Path,
    valid_path: Path,
    *,
    model_dir: Path,
    config: RankerConfig,
) -> TrainingResult:
    """Train on the processed train split, keep the best validation epoch's weights, calibrate
    every head on the validation split, save a SavedModel to ``model_dir``."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    from rankflow.core.artifacts import predict

    tf.keras.utils.set_random_seed(config.seed)
    train_labels = read_labels(train_path, label_columns(spec))
    valid_labels = read_labels(valid_path, label_columns(spec))
    heads = plan_heads(spec, train_labels)
    budget = plan_budget(_rows(train_path), config)
    train = split_loader(train_path, batch_size=budget.batch_size, shuffle=True, seed=config.seed)
    model = build_ranker(train.input_schema, config=config, heads=heads)
    # Cosine decay to zero over the whole planned run: late epochs refine instead of memorising.
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        budget.learning_rate, decay_steps=max(1, len(train) * budget.epochs)
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=schedule),
        loss_weights={output_name(h): h.loss_weight for h in heads.values()},
    )
    logger.info("training budget: %s; heads: %s", budget, heads)
    criteria: list[float] = []
    ratios: list[dict[str, float]] = []
    best: tuple[float, int, list[np.ndarray], dict[str, np.ndarray]] | None = None
    history: dict[str, list[float]] = {}
    with tqdm(total=budget.epochs, desc="train-ranker", unit="epoch") as bar:
        for epoch in range(budget.epochs):
            fitted = model.fit(train, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            valid_predictions = predict(model, valid_path)
            criterion, task_ratios = validation_criterion(spec, valid_predictions, valid_labels)
            criteria.append(criterion)
            ratios.append(task_ratios)
            history.setdefault("val_criterion", []).append(criterion)
            bar.update(1)
            bar.set_postfix_str(f"val criterion {criterion:.4f}")
            logger.info("epoch %d: val criterion %.5f %s", epoch + 1, criterion, task_ratios)
            if best is None or criterion < best[0]:
                # Its validation predictions too: calibration fits on them without another pass.
                best = (criterion, epoch, model.get_weights(), valid_predictions)
            elif epoch - best[1] >= config.patience:
                logger.info(
                    "early stop: no better epoch than %d in %d", best[1] + 1, config.patience
                )
                break
    assert best is not None
    # Keras restores the best weights only when it stops early; a checkpoint in memory always.
    model.set_weights(best[2])
    # A regression head's calibrated mean is set over train and valid rows' predictions; an even
    # sample of the train rows estimates theirs (all 1.6M rows of the default run took 31 s).
    regression = any(task.kind != "binary" for task in spec.tasks)
    stride = max(1, math.ceil(budget.train_rows / MEAN_SAMPLE_ROWS))
    train_predictions = predict(model, train_path, stride=stride) if regression else None
    calibration = calibrate(spec, model, best[3], valid_labels, train_labels, train_predictions)
    result = TrainingResult(history, budget, criteria, ratios, best[1] + 1, calibration)
    save_ranker(
        model, model_dir, files={TRAINING_RECORD: json.dumps(result.summary(), indent=2) + "\n"}
    )
    return result


def _rows(path: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset([str(p) for p in parquet_parts(path)], format="parquet").count_rows()


def _pooled_mean(*parts: tuple[np.ndarray, np.ndarray]) -> float | None:
    """The weighted mean of predictions over several splits' rows, each split's mean taken over
    its scored (non-NaN) rows and weighted by its whole weight."""
    means, masses = [], []
    for values, weights in parts:
        scored = np.isfinite(values)
        if not weights[scored].sum() > 0:
            return None
        means.append(float(np.average(values[scored], weights=weights[scored])))
        masses.append(float(weights.sum()))
    return float(np.average(means, weights=masses))


def calibrate(
    spec: DatasetSpec,
    model: Any,
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    train_labels: Mapping[str, np.ndarray],
    train_predictions: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Calibration]:
    """Fit every head's served-value calibration on the model's uncalibrated validation
    ``predictions`` and set it in place; the calibrated mean is the task's mean target over train
    and valid pooled (for a regression task given ``train_predictions``: the calibrated
    predictions' mean over the same rows)."""
    outputs = task_outputs(model)
    weights = sample_weights(spec, labels)
    train_weights = sample_weights(spec, train_labels)
    fitted = {}
    for task in spec.tasks:
        layer = outputs[task.name]
        set_calibration(layer, Calibration())
        w = np.concatenate([train_weights[task.name], weights[task.name]])
        y = np.concatenate([train_labels[task.name], labels[task.name]])
        mean_prediction = None
        if task.kind != "binary" and train_predictions is not None:
            mean_prediction = _pooled_mean(
                (train_predictions[task.name], train_weights[task.name]),
                (predictions[task.name], weights[task.name]),
            )
        fitted_task = fit_calibration(
            task.kind,
            predictions[task.name],
            labels[task.name],
            weights[task.name],
            mean=float(np.average(y, weights=w)),
            mean_prediction=mean_prediction,
        )
        set_calibration(layer, fitted_task)
        fitted[task.name] = fitted_task
    logger.info("calibration: %s", fitted)
    return fitted
