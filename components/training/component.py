"""KFP wrapper of the training step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ranker(
    train_features: Input[Dataset],
    valid_features: Input[Dataset],
    dataset_spec: Input[Artifact],
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
    seed: int,
    batch_size: int,
    epochs: int,
    learning_rate: float,
):
    """Train the Merlin Models multi-task ranker, keep its best validation epoch, calibrate it,
    save it as a SavedModel. ``batch_size``, ``epochs``, ``learning_rate``: 0 derives them from
    the train split's size (kfp.local takes no None for a parameter)."""
    from rankflow.core.steps import reporting

    with reporting("train-ranker", ranker):
        from pathlib import Path

        from components.training.ranker import RankerConfig, parse_sizes
        from components.training.ranker import train_ranker as run
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import persist_metrics
        from rankflow.core.spec import DatasetSpec

        config = RankerConfig(
            architecture=architecture,
            embedding_dim=embedding_dim,
            num_experts=num_experts,
            expert_mlp=parse_sizes(expert_mlp, name="expert_mlp"),
            tower_mlp=parse_sizes(tower_mlp, name="tower_mlp"),
            bottom_mlp=parse_sizes(bottom_mlp, name="bottom_mlp"),
            cross_depth=cross_depth,
            dropout=dropout,
            batch_size=batch_size or None,
            epochs=epochs or None,
            learning_rate=learning_rate or None,
            seed=seed,
        )
        result = run(
            DatasetSpec.load(checked(dataset_spec)),
            checked(train_features),
            checked(valid_features),
            model_dir=Path(ranker.path),
            config=config,
        )
        record(ranker)
        ranker.metadata["architecture"] = architecture
        budget = result.budget
        for name, value in (
            ("batch_size", budget.batch_size),
            ("epochs_planned", budget.epochs),
            ("epochs_run", len(result.criterion)),
            ("best_epoch", result.best_epoch),
            ("val_criterion", result.criterion[result.best_epoch - 1]),
        ):
            training_metrics.log_metric(name, value)
        for name, values in result.history.items():
            training_metrics.log_metric(name.replace("/", "_"), values[-1])
        persist_metrics(training_metrics)
