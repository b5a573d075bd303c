"""KFP wrapper of the feature-engineering step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def engineer_features(
    train_data: Input[Dataset],
    valid_data: Input[Dataset],
    test_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    content_table: Input[Model],
    nvt_workflow: Output[Model],
    train_features: Output[Dataset],
    valid_features: Output[Dataset],
    test_features: Output[Dataset],
    feature_stats: Output[Metrics],
    dask_workers: int,
):
    """Fit the NVTabular workflow on train; transform every split; emit the Merlin schema.
    Text columns become vectors: item text from ``content_table`` (embed-content's), what it
    lacks and every query embedded from the row's own text."""
    from rankflow.core.steps import reporting

    with reporting("engineer-features", nvt_workflow):
        from pathlib import Path

        from components.features.workflow import FeatureConfig, run_feature_engineering
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import persist_metrics
        from rankflow.core.spec import DatasetSpec

        cardinalities = run_feature_engineering(
            DatasetSpec.load(checked(dataset_spec)),
            {
                "train": checked(train_data),
                "valid": checked(valid_data),
                "test": checked(test_data),
            },
            workflow_dir=Path(nvt_workflow.path),
            outputs={
                "train": Path(train_features.path),
                "valid": Path(valid_features.path),
                "test": Path(test_features.path),
            },
            config=FeatureConfig(dask_workers=dask_workers),
            content=checked(content_table),
        )
        for artifact in (nvt_workflow, train_features, valid_features, test_features):
            record(artifact)
        for column, cardinality in cardinalities.items():
            feature_stats.log_metric(f"cardinality_{column}", cardinality)
        persist_metrics(feature_stats)
