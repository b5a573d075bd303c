"""Evaluate the ranker on the test split and decide whether it is blessed for deployment."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.evaluation import metrics as m
from rankflow.core.errors import ConfigError, DataValidationError, EvaluationError
from rankflow.core.io import parquet_parts
from rankflow.core.spec import TARGET_STAGES, DatasetSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlessingPolicy:
    """Minimum test AUC per funnel stage for a model to be blessed for deployment."""

    min_auc_click: float = 0.7
    min_auc_conversion: float = 0.7

    def thresholds(self, spec: DatasetSpec) -> dict[str, float]:
        """Thresholds of the stages the spec has targets for."""
        wanted = {"click": self.min_auc_click, "conversion": self.min_auc_conversion}
        return {stage: wanted[stage] for stage in TARGET_STAGES if stage in spec.targets}


@dataclass(frozen=True)
class TaskResult:
    task: str
    stage: str
    rows: int
    positives: int
    auc: float
    logloss: float
    ece: float
    oracle_auc: float | None
    calibration: list[m.CalibrationBin]
    roc: tuple[list[float], list[float], list[float]]


@dataclass(frozen=True)
class Evaluation:
    tasks: dict[str, TaskResult]
    blessed: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float | None]]:
        return {
            name: {"auc": t.auc, "logloss": t.logloss, "ece": t.ece, "oracle_auc": t.oracle_auc}
            for name, t in self.tasks.items()
        }

    def to_json(self) -> str:
        payload = {
            "blessed": self.blessed,
            "reasons": self.reasons,
            "tasks": {name: asdict(t) for name, t in self.tasks.items()},
        }
        return json.dumps(payload, indent=2)


def bless(tasks: Mapping[str, TaskResult], min_auc: Mapping[str, float]) -> tuple[bool, list[str]]:
    """Blessed when every funnel stage named in ``min_auc`` reaches its AUC threshold."""
    by_stage = {t.stage: t for t in tasks.values()}
    unknown = set(min_auc) - set(by_stage)
    if unknown:
        raise ConfigError(
            f"min_auc names stage(s) {sorted(unknown)} the model does not predict "
            f"({sorted(by_stage)})"
        )
    reasons = [
        f"{by_stage[stage].task}: AUC {by_stage[stage].auc:.4f} < required {threshold:.4f}"
        for stage, threshold in sorted(min_auc.items())
        if by_stage[stage].auc < threshold
    ]
    return not reasons, reasons


def evaluate(
    spec: DatasetSpec,
    predictions: Mapping[str, np.ndarray],
    raw_test: Path,
    *,
    min_auc: Mapping[str, float],
) -> Evaluation:
    """Score per-task predictions against the raw test split (labels and true probabilities).

    ``min_auc`` maps funnel stages (``click``, ``conversion``) to their minimum AUC.
    ``predictions`` are in the row order of the raw split (the feature step keeps it; see
    ``evaluate_ranker``).
    """
    import pyarrow.parquet as pq

    columns = list(spec.target_columns) + list(spec.true_probabilities.values())
    raw = pq.read_table(str(raw_test), columns=columns).to_pandas()
    results: dict[str, TaskResult] = {}
    for stage in TARGET_STAGES:
        if stage not in spec.targets:
            continue
        task = spec.task_of(stage)
        if task not in predictions:
            raise EvaluationError(f"the model gives no prediction for task '{task}'")
        scores = np.asarray(predictions[task], dtype=np.float64)
        labels = raw[task].to_numpy(dtype=np.float64)
        if scores.size != labels.size:
            raise EvaluationError(
                f"task '{task}': {scores.size} predictions for {labels.size} test rows"
            )
        if labels.min() == labels.max():
            raise DataValidationError(
                f"task '{task}': every test row has label {int(labels[0])}, so AUC is undefined; "
                "give the test split both outcomes (a larger test_fraction or a longer log)"
            )
        oracle = None
        if stage in spec.true_probabilities:
            oracle = m.auc(labels, raw[spec.true_probabilities[stage]].to_numpy())
        results[task] = TaskResult(
            task=task,
            stage=stage,
            rows=int(labels.size),
            positives=int(labels.sum()),
            auc=m.auc(labels, scores),
            logloss=m.logloss(labels, scores),
            ece=m.expected_calibration_error(labels, scores),
            oracle_auc=oracle,
            calibration=m.calibration_table(labels, scores),
            roc=m.roc_curve(labels, scores),
        )
    blessed, reasons = bless(results, min_auc)
    logger.info(
        "evaluation: %s, blessed=%s", {k: round(v.auc, 4) for k, v in results.items()}, blessed
    )
    return Evaluation(results, blessed, reasons)


def markdown_report(evaluation: Evaluation) -> str:
    """The report the Kubeflow UI renders: metrics, the gate decision, calibration tables."""
    lines = ["# Ranker evaluation", ""]
    verdict = "**blessed**" if evaluation.blessed else "**not blessed**"
    lines += [f"Decision: {verdict}", ""]
    lines += [f"- {reason}" for reason in evaluation.reasons]
    lines += [
        "",
        "| task | rows | positives | AUC | oracle AUC | gap | log-loss | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in evaluation.tasks.values():
        oracle = f"{t.oracle_auc:.4f}" if t.oracle_auc is not None else "n/a"
        gap = f"{t.oracle_auc - t.auc:.4f}" if t.oracle_auc is not None else "n/a"
        lines.append(
            f"| {t.task} | {t.rows} | {t.positives} | {t.auc:.4f} | {oracle} | {gap} "
            f"| {t.logloss:.4f} | {t.ece:.4f} |"
        )
    for t in evaluation.tasks.values():
        lines += [
            "",
            f"## Calibration: {t.task}",
            "",
            "| score range | rows | mean predicted | observed rate |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {b.lower:.4f} - {b.upper:.4f} | {b.count} | {b.mean_predicted:.4f} "
            f"| {b.observed_rate:.4f} |"
            for b in t.calibration
        ]
    return "\n".join(lines) + "\n"


def evaluate_ranker(
    spec: DatasetSpec,
    *,
    model_dir: Path,
    test_features: Path,
    raw_test: Path,
    min_auc: Mapping[str, float],
) -> Evaluation:
    """Reload the saved ranker, score the processed test split, evaluate against the raw one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankflow.core.artifacts import load_ranker, predict

    # Scores are matched to raw labels and true probabilities by row position: prove the two
    # splits line up before trusting any metric.
    targets = list(spec.target_columns)
    processed = pa.concat_tables(
        pq.read_table(str(part), columns=targets) for part in parquet_parts(test_features)
    ).to_pandas()
    raw = pq.read_table(str(raw_test), columns=targets).to_pandas()
    if len(processed) != len(raw) or not (processed.to_numpy() == raw.to_numpy()).all():
        raise EvaluationError(
            f"processed test split {test_features} is not row-aligned with raw split {raw_test}"
        )
    return evaluate(spec, predict(load_ranker(model_dir), test_features), raw_test, min_auc=min_auc)
