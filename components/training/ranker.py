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
from dataclasses import asdict, dataclass, field
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
    inputs = mm.InputBlockV2(
        features,
        categorical=mm.Embeddings(
            features.select_by_tag(Tags.CATEGORICAL),
            dim=config.embedding_dim,
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
) -> tuple[float, float]:
    """(scale, shift) of one task's served-value calibration, fitted on validation rows.

    Binary: Platt scaling on the logit (weighted log-loss). Regression: weighted least squares
    of the target on the prediction, in the target's unit. Identity when there is too little
    to fit on or the fit would invert the ranking.

    ``mean``: the task's mean target estimated on more rows than the validation split (train and
    valid pooled). The scale is the validation split's; the shift is then set so the calibrated
    values average ``mean`` over it. A small validation split's own rate is noisy: 2,000 rows of
    a 20,000-row log at 8% positives miss the true rate by 8% (one standard deviation), and a
    calibration that matched it would serve that error.
    """
    keep = weights > 0
    y, p, w = labels[keep], predictions[keep], weights[keep]
    if y.size < 50 or np.ptp(p) == 0:
        return 1.0, 0.0
    if kind == "binary":
        if y.min() == y.max():
            return 1.0, 0.0
        pc = np.clip(p, 1e-6, 1 - 1e-6)
        scale, shift = fit_platt(np.log(pc) - np.log1p(-pc), y, w)
    else:
        mp, my = np.average(p, weights=w), np.average(y, weights=w)
        variance = np.average((p - mp) ** 2, weights=w)
        scale = float(np.average((p - mp) * (y - my), weights=w) / variance)
        shift = float(my - scale * mp)
    if not (np.isfinite(scale) and np.isfinite(shift)) or scale <= 0:
        return 1.0, 0.0
    if mean is not None:
        shift = _shift_to_mean(kind, p, w, scale, shift, mean)
    return scale, shift


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
    kind: str, p: np.ndarray, w: np.ndarray, scale: float, shift: float, mean: float
) -> float:
    """The shift that makes the calibrated values' weighted mean over ``p`` equal ``mean``."""
    from scipy.optimize import brentq

    if kind != "binary":
        return float(mean - scale * np.average(p, weights=w))
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    z = scale * (np.log(pc) - np.log1p(-pc))

    def gap(b: float) -> float:
        return float(np.average(1.0 / (1.0 + np.exp(-(z + b))), weights=w) - mean)

    low, high = shift - 20.0, shift + 20.0
    if not 0.0 < mean < 1.0 or gap(low) > 0 or gap(high) < 0:
        return shift
    return float(brentq(gap, low, high, xtol=1e-9))


def _task_outputs(model: Any) -> dict[str, Any]:
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
    #: Task -> (scale, shift) fitted on the validation split.
    calibration: dict[str, tuple[float, float]]

    def summary(self) -> dict[str, Any]:
        return {
            "budget": asdict(self.budget),
            "epochs_run": len(self.criterion),
            "best_epoch": self.best_epoch,
            "criterion": self.criterion,
            "task_ratios": self.task_ratios,
            "calibration": {t: {"scale": a, "shift": b} for t, (a, b) in self.calibration.items()},
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
    train = split_loader(train_path, batch_size=budget.batch_size, shuffle=True)
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
    calibration = calibrate(spec, model, best[3], valid_labels, train_labels)
    result = TrainingResult(history, budget, criteria, ratios, best[1] + 1, calibration)
    save_ranker(
        model, model_dir, files={TRAINING_RECORD: json.dumps(result.summary(), indent=2) + "\n"}
    )
    return result


def _rows(path: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset([str(p) for p in parquet_parts(path)], format="parquet").count_rows()


def calibrate(
    spec: DatasetSpec,
    model: Any,
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    train_labels: Mapping[str, np.ndarray],
) -> dict[str, tuple[float, float]]:
    """Fit every head's served-value calibration on the model's uncalibrated validation
    ``predictions`` and set it in place; the calibrated mean is the task's mean target over train
    and valid pooled."""
    outputs = _task_outputs(model)
    weights = sample_weights(spec, labels)
    train_weights = sample_weights(spec, train_labels)
    fitted = {}
    for task in spec.tasks:
        layer = outputs[task.name]
        layer.scale.assign(1.0)
        layer.shift.assign(0.0)
        w = np.concatenate([train_weights[task.name], weights[task.name]])
        y = np.concatenate([train_labels[task.name], labels[task.name]])
        scale, shift = fit_calibration(
            task.kind,
            predictions[task.name],
            labels[task.name],
            weights[task.name],
            mean=float(np.average(y, weights=w)),
        )
        layer.scale.assign(scale)
        layer.shift.assign(shift)
        fitted[task.name] = (scale, shift)
    logger.info("calibration (scale, shift): %s", fitted)
    return fitted
