"""KFP wrapper of the evaluation step."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from rankflow.core.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_ranker(
    ranker: Input[Model],
    test_features: Input[Dataset],
    test_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    metrics: Output[Metrics],
    click_roc: Output[ClassificationMetrics],
    conversion_roc: Output[ClassificationMetrics],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    min_auc_click: float,
    min_auc_conversion: float,
) -> NamedTuple("EvaluationOutputs", [("blessed", bool)]):
    """Per-task AUC / log-loss / ECE / oracle AUC on the test split, and the blessing decision."""
    from rankflow.core.steps import reporting

    with reporting("evaluate-ranker", evaluation):
        from collections import namedtuple

        from components.evaluation.evaluate import BlessingPolicy, markdown_report
        from components.evaluation.evaluate import evaluate_ranker as run
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text, persist_metrics
        from rankflow.core.spec import DatasetSpec

        spec = DatasetSpec.load(checked(dataset_spec))
        result = run(
            spec,
            model_dir=checked(ranker),
            test_features=checked(test_features),
            raw_test=checked(test_data),
            min_auc=BlessingPolicy(min_auc_click, min_auc_conversion).thresholds(spec),
        )
        for task, values in result.summary().items():
            for name, value in values.items():
                if value is not None:
                    metrics.log_metric(f"{task}_{name}", value)
        rocs = {"click": click_roc, "conversion": conversion_roc}
        for task in result.tasks.values():
            fpr, tpr, thresholds = task.roc
            rocs[task.stage].log_roc_curve(fpr, tpr, thresholds)
        persist_metrics(metrics, click_roc, conversion_roc)
        atomic_write_text(report.path, markdown_report(result))
        atomic_write_text(evaluation.path, result.to_json())
        record(report)
        record(evaluation)
        return namedtuple("EvaluationOutputs", ["blessed"])(result.blessed)
