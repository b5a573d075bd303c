"""KFP wrapper of the training step."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ranker(
    train_features: Input[Dataset],
    valid_features: Input[Dataset],
    ranker: Output[Model],
    training_metrics: Output[Metrics],
    architecture: str,
    embedding_dim: int,
    num_experts: int,
    expert_mlp: str,
    tower_mlp: str,
    bottom_mlp: str,
    cross_depth: int,
    dropout: float,
    batch_size: int,
    epochs: int,
    learning_rate: float,
    seed: int,
):
    """Train the Merlin Models multi-task ranker and save it as a SavedModel."""
    from rankflow.core.steps import reporting

    with reporting("train-ranker", ranker):
        from pathlib import Path

        from components.training.ranker import RankerConfig, parse_sizes
        from components.training.ranker import train_ranker as run
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import persist_metrics

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
            checked(train_features),
            checked(valid_features),
            model_dir=Path(ranker.path),
            config=config,
        )
        record(ranker)
        ranker.metadata["architecture"] = architecture
        for name, values in history.items():
            training_metrics.log_metric(name.replace("/", "_"), values[-1])
        persist_metrics(training_metrics)
