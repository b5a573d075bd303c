"""KFP wrapper of the training step."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from rankflow.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ranker(
    train_features: Input[Dataset],
    valid_features: Input[Dataset],
    ranker: Output[Model],
    training_metrics: Output[Metrics],
    architecture: str = "mmoe",
    embedding_dim: int = 16,
    num_experts: int = 4,
    expert_mlp: str = "64",
    tower_mlp: str = "32",
    bottom_mlp: str = "128,64",
    cross_depth: int = 2,
    dropout: float = 0.1,
    batch_size: int = 1024,
    epochs: int = 1,
    learning_rate: float = 0.005,
    seed: int = 7,
):
    """Train the Merlin Models multi-task ranker and save it as a SavedModel."""
    from pathlib import Path

    from components.training.ranker import RankerConfig, parse_sizes
    from components.training.ranker import train_ranker as run

    config = RankerConfig(
        architecture=architecture,
        embedding_dim=embedding_dim,
        num_experts=num_experts,
        expert_mlp=parse_sizes(expert_mlp, name="expert_mlp"),
        tower_mlp=parse_sizes(tower_mlp, name="tower_mlp"),
        bottom_mlp=parse_sizes(bottom_mlp, name="bottom_mlp"),
        cross_depth=cross_depth,
        dropout=dropout,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
    )
    history = run(
        Path(train_features.path),
        Path(valid_features.path),
        model_dir=Path(ranker.path),
        config=config,
    )
    ranker.metadata["architecture"] = architecture
    for name, values in history.items():
        training_metrics.log_metric(name.replace("/", "_"), values[-1])
