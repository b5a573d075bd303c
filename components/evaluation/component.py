"""KFP wrappers of the evaluation step and the champion comparison."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    HTML,
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
    train_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    roc_curves: Output[HTML],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    gates: str,
) -> NamedTuple("EvaluationOutputs", [("blessed", bool)]):
    """Per-task metrics on the test split (``<task>_<metric>``), slices, cold start (the test rows
    whose item ``train_data`` never showed: ``<task>_cold_start_<metric>``), and the blessing
    decision.

    A pipeline's outputs are fixed when it compiles, the tasks only when its data is read: the
    first binary task's ROC curve goes to the ``roc`` ClassificationMetrics (the Kubeflow UI
    draws it), every binary task's curve to the ``roc_curves`` HTML page.
    """
    from rankflow.core.steps import reporting

    with reporting("evaluate-ranker", evaluation):
        from collections import namedtuple

        from components.evaluation.evaluate import Gates, markdown_report
        from components.evaluation.evaluate import evaluate_ranker as run
        from components.evaluation.plots import roc_page
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text, persist_metrics
        from rankflow.core.spec import DatasetSpec

        spec = DatasetSpec.load(checked(dataset_spec))
        result = run(
            spec,
            model_dir=checked(ranker),
            test_features=checked(test_features),
            raw_test=checked(test_data),
            gates=Gates.from_json(gates).for_spec(spec),
            raw_train=checked(train_data),
        )
        for name, value in result.flat_metrics().items():
            metrics.log_metric(name, value)
        binary = [t for t in result.tasks.values() if t.roc is not None]
        if binary:
            fpr, tpr, thresholds = binary[0].roc
            roc.log_roc_curve(fpr, tpr, thresholds)
            roc.metadata["task"] = binary[0].task
        persist_metrics(metrics, roc)
        atomic_write_text(roc_curves.path, roc_page(result))
        atomic_write_text(report.path, markdown_report(result))
        atomic_write_text(evaluation.path, result.to_json())
        for artifact in (report, evaluation, roc_curves):
            record(artifact)
        return namedtuple("EvaluationOutputs", ["blessed"])(result.blessed)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compare_with_champion(
    nvt_workflow: Input[Model],
    ranker: Input[Model],
    test_data: Input[Dataset],
    dataset_spec: Input[Artifact],
    content_table: Input[Model],
    comparison: Output[Artifact],
    comparison_report: Output[Markdown],
    gates: str,
    model_name: str,
    model_store: str,
) -> NamedTuple("ChampionOutputs", [("blessed", bool)]):
    """The version ``model_name`` serves scores the candidate's raw test rows beside it; the
    candidate is blessed unless a paired bootstrap shows it worse than that version beyond a
    task's champion gate (``max_auc_drop`` / ``max_rmse_increase`` in ``gates``). The deploy
    step publishes only while that version still serves (``comparison``'s ``champion``)."""
    from rankflow.core.steps import reporting

    with reporting("compare-with-champion", comparison):
        from collections import namedtuple

        from components.evaluation.champion import (
            ChampionConfig,
            candidate_scorer,
        )
        from components.evaluation.champion import compare_with_champion as run
        from components.evaluation.champion import (
            comparison_report as render,
        )
        from components.evaluation.evaluate import Gates
        from rankflow.core.integrity import checked, record
        from rankflow.core.io import atomic_write_text
        from rankflow.core.spec import DatasetSpec

        spec = DatasetSpec.load(checked(dataset_spec))
        result = run(
            spec,
            candidate=candidate_scorer(
                spec, checked(nvt_workflow), checked(ranker), checked(content_table)
            ),
            raw_test=checked(test_data),
            model_store=model_store,
            endpoint=model_name,
            gates=Gates.from_json(gates).champion_for_spec(spec),
            config=ChampionConfig(),
        )
        atomic_write_text(comparison.path, result.to_json())
        atomic_write_text(comparison_report.path, render(result))
        for artifact in (comparison, comparison_report):
            record(artifact)
        comparison.metadata.update({"champion": result.champion, "blessed": result.blessed})
        return namedtuple("ChampionOutputs", ["blessed"])(result.blessed)
