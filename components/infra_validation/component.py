"""KFP wrapper of the infra-validation step."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_on_triton(
    serving_model: Input[Model],
    nvt_workflow: Input[Model],
    ranker: Input[Model],
    test_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    content_table: Input[Model],
    infra_metrics: Output[Metrics],
    infra_report: Output[Artifact],
    model_name: str,
    rows: int,
    batch_size: int,
    tolerance: float,
) -> NamedTuple("InfraValidationOutputs", [("blessed", bool)]):
    """Load the repository on a fresh Triton; compare online and offline scores; time requests."""
    from rankflow.core.steps import reporting

    with reporting("validate-on-triton", infra_report):
        import json
        from collections import namedtuple
        from dataclasses import asdict

        import pyarrow.dataset as ds

        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text, persist_metrics
        from rankflow.core.spec import DatasetSpec
        from serving.validate import InfraValidationConfig, infra_validate

        report = infra_validate(
            DatasetSpec.load(checked(dataset_spec)),
            repository=checked(serving_model),
            model_name=model_name,
            workflow_dir=checked(nvt_workflow),
            model_dir=checked(ranker),
            content_table=checked(content_table),
            rows=ds.dataset(str(checked(test_data)), format="parquet").head(rows).to_pandas(),
            config=InfraValidationConfig(rows=rows, batch_size=batch_size, tolerance=tolerance),
        )
        for task, value in report.skew_max_abs.items():
            infra_metrics.log_metric(f"{task}_skew_max_abs", value)
        for task, value in report.skew_max_rel.items():
            infra_metrics.log_metric(f"{task}_skew_max_rel", value)
        for name, value in report.latency_ms.items():
            infra_metrics.log_metric(f"latency_ms_{name}_batch{batch_size}", value)
        persist_metrics(infra_metrics)
        atomic_write_text(infra_report.path, json.dumps(asdict(report), indent=2))
        record(infra_report)
        return namedtuple("InfraValidationOutputs", ["blessed"])(report.blessed)
