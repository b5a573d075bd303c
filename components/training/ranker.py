"""The Merlin Models multi-task ranker: build, train, save, reload, predict.

Output heads come from the schema's target tags (one binary head per task), so the model follows
whatever targets the dataset spec declares.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankflow.core.artifacts import save_ranker, split_loader
from rankflow.core.errors import ConfigError
from rankflow.core.tasks import target_columns

if TYPE_CHECKING:
    import merlin.models.tf as mm
    from merlin.schema import Schema

logger = logging.getLogger(__name__)

ARCHITECTURES = ("mmoe", "ple", "shared_bottom")


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
    batch_size: int = 2048
    epochs: int = 1
    patience: int = 1
    learning_rate: float = 1e-2
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
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("expert_mlp", "tower_mlp", "bottom_mlp", "gate_mlp"):
            sizes = getattr(self, name)
            if not sizes or any(s < 1 for s in sizes):
                raise ConfigError(f"{name} must be a non-empty list of positive sizes, got {sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0:
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


def build_ranker(schema: Schema, *, config: RankerConfig) -> mm.Model:
    """A multi-task ranker over the schema's features with one binary head per target."""
    import merlin.models.tf as mm
    from merlin.schema import Tags

    targets = target_columns(schema)
    if not targets:
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

    outputs = mm.OutputBlock(schema, task_blocks=mlp(config.tower_mlp))
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


def train_ranker(
    train_path: Path,
    valid_path: Path,
    *,
    model_dir: Path,
    config: RankerConfig,
) -> dict[str, Any]:
    """Train on the processed train split, validate per epoch, save a SavedModel to ``model_dir``.

    Returns the training history (per-epoch losses and metrics) as plain floats.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(config.seed)
    train = split_loader(train_path, batch_size=config.batch_size, shuffle=True)
    valid = split_loader(valid_path, batch_size=config.batch_size * 4, shuffle=False)
    model = build_ranker(train.input_schema, config=config)
    # Cosine decay to zero over the whole run: late epochs refine instead of memorising ids.
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=max(1, len(train) * config.epochs)
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=schedule),
        metrics=[tf.keras.metrics.AUC(name="auc")],
    )
    # Ids seen a few hundred times start to be memorised after an epoch or two: keep the
    # weights of the best validation epoch rather than the last.
    stop = tf.keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    history = model.fit(
        train, validation_data=valid, epochs=config.epochs, callbacks=[stop], verbose=2
    )
    save_ranker(model, model_dir)
    return {k: [float(v) for v in values] for k, values in history.history.items()}
