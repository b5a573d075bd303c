"""Evaluate the ranker on the test split, per task and kind, and decide whether it is blessed.

Every metric is weighted by the spec's row weights. A task ``given`` another is evaluated on the
given task's positives (what its output means: P(task | given)), and also as the product
P(given) x P(task | given) on every row. Metrics are repeated per value of each slice column.

Blessing gates (:class:`Gates`) hold on any log by default: a binary task's AUC must beat 0.5 by a
99% confidence bound, a regression task must beat the mean predictor; a JSON string of per-task
gates tightens them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.evaluation import metrics as m
from rankflow.core.errors import ConfigError, DataValidationError, EvaluationError
from rankflow.core.io import parquet_parts
from rankflow.core.spec import DatasetSpec, Task

logger = logging.getLogger(__name__)

#: Gate name -> (metric it reads, "min" or "max"). ``max_rmse_ratio`` is RMSE / mean-predictor RMSE.
GATES = {
    "min_auc": ("auc", "min"),
    "min_auc_lower": ("auc_lower", "min"),
    "max_logloss": ("logloss", "max"),
    "max_ece": ("ece", "max"),
    "min_r2": ("r2", "min"),
    "max_rmse": ("rmse", "max"),
    "max_rmse_ratio": ("rmse_ratio", "max"),
}
#: What every task must pass unless its gates say otherwise: better than knowing nothing.
DEFAULT_GATES = {"binary": {"min_auc_lower": 0.5}, "regression": {"max_rmse_ratio": 1.0}}
#: Champion gates: how much worse than the serving version a candidate may be on a task
#: (``max_auc_drop``: AUC points; ``max_rmse_increase``: a fraction of the champion's RMSE)
#: before a paired bootstrap interval lying wholly beyond it refuses the candidate.
CHAMPION_GATES = {"max_auc_drop": ("binary", "auc"), "max_rmse_increase": ("regression", "rmse")}
#: Every task is compared with the champion unless its gates say otherwise; a large tolerance
#: (e.g. 1) leaves a task out of the comparison.
DEFAULT_CHAMPION_GATES = {
    "binary": {"max_auc_drop": 0.001},
    "regression": {"max_rmse_increase": 0.005},
}
#: At most this many values of a slice column are reported (the most frequent).
MAX_SLICE_VALUES = 20
#: A slice with fewer rows than this reports its row count only.
MIN_SLICE_ROWS = 50


@dataclass(frozen=True)
class Gates:
    """Per-task blessing gates: ``{"click": {"min_auc": 0.7}, "dwell": {"min_r2": 0.3}}``.

    A task's gates replace its kind's defaults (:data:`DEFAULT_GATES`); tasks not named keep them.
    Champion gates (:data:`CHAMPION_GATES`) sit beside them and replace only
    :data:`DEFAULT_CHAMPION_GATES`: ``{"click": {"min_auc": 0.7, "max_auc_drop": 0.005}}``.
    """

    per_task: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> Gates:
        try:
            raw = json.loads(text or "{}")
        except ValueError as err:
            raise ConfigError(f"gates must be a JSON object, got {text!r}: {err}") from err
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise ConfigError(
                'gates must be a JSON object of task -> {gate: value}, e.g. {"click": '
                f'{{"min_auc": 0.7}}}}, got {text!r}'
            )
        for task, gates in raw.items():
            for gate, value in gates.items():
                if gate not in GATES and gate not in CHAMPION_GATES:
                    known = sorted([*GATES, *CHAMPION_GATES])
                    raise ConfigError(f"gates.{task}: unknown gate {gate!r} ({known})")
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"gates.{task}.{gate} must be a number, got {value!r}")
        return cls({t: {g: float(v) for g, v in gates.items()} for t, gates in raw.items()})

    def for_spec(self, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        """Every task's absolute blessing gates."""
        return self._resolve(spec, GATES, DEFAULT_GATES)

    def champion_for_spec(self, spec: DatasetSpec) -> dict[str, dict[str, float]]:
        """Every task's champion gate (its tolerance against the serving version)."""
        return self._resolve(spec, CHAMPION_GATES, DEFAULT_CHAMPION_GATES)

    def _resolve(
        self, spec: DatasetSpec, names: Mapping[str, object], defaults: Mapping[str, dict]
    ) -> dict[str, dict[str, float]]:
        unknown = set(self.per_task) - set(spec.task_names)
        if unknown:
            raise ConfigError(
                f"gates name task(s) {sorted(unknown)} the spec does not declare "
                f"({list(spec.task_names)})"
            )
        resolved = {}
        for task in spec.tasks:
            given = self.per_task.get(task.name)
            named = {g: v for g, v in (given or {}).items() if g in names}
            # A task named with no gates at all ({"click": {}}) is not gated.
            gates = named if named or given == {} else dict(defaults[task.kind])
            wrong = [g for g in {**(given or {}), **gates} if g not in _KIND_GATES[task.kind]]
            if wrong:
                raise ConfigError(f"gates.{task.name}: {wrong} do not apply to a {task.kind} task")
            resolved[task.name] = gates
        return resolved


_KIND_GATES = {
    "binary": {"min_auc", "min_auc_lower", "max_logloss", "max_ece", "max_auc_drop"},
    "regression": {"min_r2", "max_rmse", "max_rmse_ratio", "max_rmse_increase"},
}


@dataclass(frozen=True)
class TaskResult:
    task: str
    kind: str
    given: str | None
    #: Rows the task is evaluated on (the given task's positives for a given task).
    rows: int
    #: Positives (binary) among those rows; None for regression.
    positives: int | None
    #: The kind's metrics (see :func:`binary_metrics` / :func:`regression_task_metrics`).
    metrics: dict[str, float | None]
    #: Slice column -> value -> that slice's metrics.
    slices: dict[str, dict[str, dict[str, float | None]]]
    calibration: list[m.CalibrationBin]
    roc: tuple[list[float], list[float], list[float]] | None
    #: Metrics on the test rows whose item never appeared in train (see :func:`cold_start`);
    #: None when the spec has no item id or no train split was given.
    cold_start: dict[str, float | None] | None = None


@dataclass(frozen=True)
class Evaluation:
    tasks: dict[str, TaskResult]
    blessed: bool
    reasons: list[str] = field(default_factory=list)
    gates: dict[str, dict[str, float]] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        """``<task>_<metric>`` -> value, for the KFP Metrics artifact."""
        flat = {
            f"{name}_{key}": float(value)
            for name, t in self.tasks.items()
            for key, value in t.metrics.items()
            if value is not None and math.isfinite(value)
        }
        for name, t in self.tasks.items():
            for key, value in (t.cold_start or {}).items():
                if value is not None and math.isfinite(value):
                    flat[f"{name}_cold_start_{key}"] = float(value)
        return flat

    def to_json(self) -> str:
        payload = {
            "blessed": self.blessed,
            "reasons": self.reasons,
            "gates": self.gates,
            "tasks": {name: asdict(t) for name, t in self.tasks.items()},
        }
        return json.dumps(payload, indent=2)


def binary_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, float | None]:
    auc = m.auc(labels, scores, weights)
    result: dict[str, float | None] = {
        "auc": auc,
        "auc_lower": m.auc_lower_bound(auc, labels, weights),
        "logloss": m.logloss(labels, scores, weights),
        "ece": m.expected_calibration_error(labels, scores, weights),
        "ece_noise": m.ece_noise_floor(scores, weights),
        "calibration_ratio": m.calibration_ratio(labels, scores, weights),
        "pr_auc": m.average_precision(labels, scores, weights),
        "oracle_auc": m.auc(labels, truth, weights) if truth is not None else None,
        # The truth's own Σp / Σy: how far the test split's outcomes drift from their
        # expectation by chance alone (a few hundred positives: several percent).
        "oracle_calibration_ratio": (
            m.calibration_ratio(labels, truth, weights) if truth is not None else None
        ),
        "gauc": m.group_auc(labels, scores, groups) if groups is not None else None,
    }
    return result


def regression_task_metrics(
    labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray, *, truth: np.ndarray | None
) -> dict[str, float | None]:
    result: dict[str, float | None] = dict(m.regression_metrics(labels, predictions, weights))
    result["rmse_ratio"] = (
        result["rmse"] / result["mean_rmse"] if result["mean_rmse"] else None  # type: ignore[operator]
    )
    result["calibration_ratio"] = m.calibration_ratio(labels, predictions, weights)
    if truth is not None:
        bayes = m.regression_metrics(labels, truth, weights)
        result["bayes_rmse"], result["oracle_r2"] = bayes["rmse"], bayes["r2"]
        # How far the test split's Σy drifts from its expectation by chance (as for binary).
        result["oracle_calibration_ratio"] = m.calibration_ratio(labels, truth, weights)
    else:
        result["bayes_rmse"] = result["oracle_r2"] = result["oracle_calibration_ratio"] = None
    return result


def bless(
    tasks: Mapping[str, TaskResult], gates: Mapping[str, Mapping[str, float]]
) -> tuple[bool, list[str]]:
    """Blessed when every task passes every one of its gates."""
    reasons = []
    for name, task_gates in gates.items():
        if name not in tasks:
            raise ConfigError(f"gates name task '{name}', which the model does not predict")
        for gate, threshold in sorted(task_gates.items()):
            metric, side = GATES[gate]
            value = tasks[name].metrics.get(metric)
            if value is None:
                reasons.append(f"{name}: {metric} unavailable for gate {gate}")
                continue
            passed = value >= threshold if side == "min" else value <= threshold
            if not passed:
                relation = "<" if side == "min" else ">"
                reasons.append(f"{name}: {metric} {value:.4f} {relation} {gate} {threshold:.4f}")
    return not reasons, reasons


def _read_raw(spec: DatasetSpec, raw_test: Path):  # -> pandas.DataFrame
    import pyarrow.parquet as pq

    columns = list(
        dict.fromkeys(
            [*spec.target_columns, *spec.truth_columns, *spec.slices]
            + ([spec.weight_column] if spec.weight_column else [])
            + ([spec.user_id] if spec.user_id else [])
        )
    )
    return pq.read_table(str(raw_test), columns=columns).to_pandas()


def _slice_metrics(
    task: Task,
    values: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
) -> dict[str, dict[str, float | None]]:
    import pandas as pd

    counts = pd.Series(values[weights > 0]).value_counts(dropna=False)
    result: dict[str, dict[str, float | None]] = {}
    for value in counts.index[:MAX_SLICE_VALUES]:
        mask = (values == value) & (weights > 0) if not pd.isna(value) else pd.isna(values)
        rows = int(mask.sum())
        entry: dict[str, float | None] = {"rows": float(rows)}
        y, s, w = labels[mask], scores[mask], weights[mask]
        if rows >= MIN_SLICE_ROWS:
            if task.kind == "binary":
                entry["calibration_ratio"] = m.calibration_ratio(y, s, w)
                entry["logloss"] = m.logloss(y, s, w)
                entry["auc"] = m.auc(y, s, w) if 0 < y.sum() < rows else None
            else:
                entry.update(m.regression_metrics(y, s, w))
        result[str(value)] = entry
    return result


#: Cold rows (per task, after its ``given`` filter) a cold-start metric needs.
MIN_COLD_ROWS = 50
#: Bootstrap resamples of a cold-start interval.
COLD_REPLICATES = 500


def cold_rows(spec: DatasetSpec, raw_train: Path, raw_test: Path) -> np.ndarray | None:
    """Per test row: its item never appeared in the train split (None without an item id)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if spec.item_id is None:
        return None
    seen = pq.read_table(str(raw_train), columns=[spec.item_id]).column(spec.item_id)
    test = pq.read_table(str(raw_test), columns=[spec.item_id]).column(spec.item_id)
    return ~np.asarray(pc.is_in(test, value_set=pc.unique(seen)).to_numpy())


def cold_start(
    task: Task, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, cold: np.ndarray
) -> dict[str, float | None]:
    """AUC (binary) or RMSE (regression) on the cold rows, with a 95% bootstrap interval; the
    metric is None with fewer than ``MIN_COLD_ROWS`` rows (or one outcome)."""
    mask = cold & (weights > 0)
    rows = int(mask.sum())
    result: dict[str, float | None] = {"rows": float(rows), "share": float(mask.mean())}
    y, s, w = labels[mask], scores[mask], weights[mask]
    metric = "auc" if task.kind == "binary" else "rmse"
    if task.kind == "binary":
        result["positives"] = float(y.sum())
    result.update({metric: None, "low": None, "high": None})
    if rows < MIN_COLD_ROWS or (task.kind == "binary" and not 0 < y.sum() < rows):
        return result
    point, low, high = m.bootstrap_interval(metric, y, s, w, replicates=COLD_REPLICATES)
    result.update({metric: point, "low": low, "high": high})
    return result


def evaluate(
    spec: DatasetSpec,
    predictions: Mapping[str, np.ndarray],
    raw_test: Path,
    *,
    gates: Mapping[str, Mapping[str, float]],
    cold: np.ndarray | None = None,
) -> Evaluation:
    """Score per-task predictions against the raw test split (labels, truths, weights, slices).

    ``predictions`` are in the row order of the raw split (the feature step keeps it; see
    ``evaluate_ranker``); ``gates`` maps every task to its blessing gates (``Gates.for_spec``);
    ``cold`` marks the test rows whose item never appeared in train (:func:`cold_rows`).
    """
    raw = _read_raw(spec, raw_test)
    rows = len(raw)
    row_weights = (
        raw[spec.weight_column].to_numpy(np.float64) if spec.weight_column else np.ones(rows)
    )
    labels = {t.name: raw[t.column].fillna(0).to_numpy(np.float64) for t in spec.tasks}
    scores = {}
    for task in spec.tasks:
        if task.name not in predictions:
            raise EvaluationError(f"the model gives no prediction for task '{task.name}'")
        score = np.asarray(predictions[task.name], dtype=np.float64)
        if score.size != rows:
            raise EvaluationError(
                f"task '{task.name}': {score.size} predictions for {rows} test rows"
            )
        scores[task.name] = score
    groups = raw[spec.user_id].to_numpy() if spec.user_id else None
    results: dict[str, TaskResult] = {}
    for task in spec.tasks:
        weights = row_weights * (labels[task.given] if task.given else 1.0)
        keep = weights > 0
        y, s, w = labels[task.name][keep], scores[task.name][keep], weights[keep]
        truth = raw[task.truth].to_numpy(np.float64)[keep] if task.truth else None
        where = f" among the rows where '{task.given}' is 1" if task.given else ""
        if not keep.any():
            raise DataValidationError(
                f"task '{task.name}': no test row to evaluate on{where}; give the test split "
                "more rows (a larger test_fraction or a longer log)"
            )
        if task.kind == "binary":
            if y.min() == y.max():
                raise DataValidationError(
                    f"task '{task.name}': every test row{where} has label {int(y[0])}, so AUC is "
                    "undefined; give the test split both outcomes (a larger test_fraction or a "
                    "longer log)"
                )
            values = binary_metrics(
                y, s, w, truth=truth, groups=groups[keep] if groups is not None else None
            )
            if task.given:
                given = spec.task(task.given)
                product = scores[task.given] * scores[task.name]
                values["product_auc"] = m.auc(labels[task.name], product, row_weights)
                if task.truth and given.truth:
                    oracle = raw[given.truth].to_numpy(np.float64) * raw[task.truth].to_numpy(
                        np.float64
                    )
                    values["oracle_product_auc"] = m.auc(labels[task.name], oracle, row_weights)
            calibration = m.calibration_table(y, s, w)
            roc = m.roc_curve(y, s)
            positives: int | None = int(y.sum())
        else:
            values = regression_task_metrics(y, s, w, truth=truth)
            calibration = m.calibration_table(y, s, w, binary=False)
            roc, positives = None, None
        slices = {
            column: _slice_metrics(task, raw[column].to_numpy()[keep], y, s, w)
            for column in spec.slices
        }
        results[task.name] = TaskResult(
            task=task.name,
            kind=task.kind,
            given=task.given,
            rows=int(keep.sum()),
            positives=positives,
            metrics=values,
            slices=slices,
            calibration=calibration,
            roc=roc,
            cold_start=(
                cold_start(task, labels[task.name], scores[task.name], weights, cold)
                if cold is not None
                else None
            ),
        )
    blessed, reasons = bless(results, gates)
    logger.info(
        "evaluation: %s, blessed=%s",
        {
            k: round(v.metrics.get("auc") or v.metrics.get("r2") or 0.0, 4)
            for k, v in results.items()
        },
        blessed,
    )
    return Evaluation(results, blessed, reasons, {k: dict(v) for k, v in gates.items()})


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_report(evaluation: Evaluation) -> str:
    """The report the Kubeflow UI renders: metrics per task and kind, the gate decision, slices,
    calibration tables."""
    lines = ["# Ranker evaluation", ""]
    verdict = "**blessed**" if evaluation.blessed else "**not blessed**"
    lines += [f"Decision: {verdict}", ""]
    lines += [f"- {reason}" for reason in evaluation.reasons]
    gates = "; ".join(
        f"{t}: " + ", ".join(f"{g} {v:g}" for g, v in gs.items())
        for t, gs in evaluation.gates.items()
    )
    lines += ["", f"Gates: {gates}"]
    binary = [t for t in evaluation.tasks.values() if t.kind == "binary"]
    regression = [t for t in evaluation.tasks.values() if t.kind == "regression"]
    if binary:
        lines += [
            "",
            "## Binary tasks",
            "",
            "| task | rows | positives | AUC | AUC 99% lower | oracle AUC | gap | GAUC | PR-AUC "
            "| log-loss | ECE | ECE noise | Σp/Σy | product AUC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in binary:
            v = t.metrics
            gap = v["oracle_auc"] - v["auc"] if v["oracle_auc"] is not None else None  # type: ignore[operator]
            rows = f"{t.rows} (given {t.given})" if t.given else str(t.rows)
            lines.append(
                f"| {t.task} | {rows} | {t.positives} | {_fmt(v['auc'])} | {_fmt(v['auc_lower'])} "
                f"| {_fmt(v['oracle_auc'])} | {_fmt(gap)} | {_fmt(v['gauc'])} "
                f"| {_fmt(v['pr_auc'])} | {_fmt(v['logloss'])} | {_fmt(v['ece'])} "
                f"| {_fmt(v.get('ece_noise'))} | {_fmt(v['calibration_ratio'], 3)} "
                f"| {_fmt(v.get('product_auc'))} |"
            )
    if regression:
        lines += [
            "",
            "## Regression tasks",
            "",
            "| task | rows | RMSE | Bayes RMSE | mean-predictor RMSE | MAE | R² | oracle R² "
            "| Σp/Σy |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in regression:
            v = t.metrics
            rows = f"{t.rows} (given {t.given})" if t.given else str(t.rows)
            lines.append(
                f"| {t.task} | {rows} | {_fmt(v['rmse'])} | {_fmt(v['bayes_rmse'])} "
                f"| {_fmt(v['mean_rmse'])} | {_fmt(v['mae'])} | {_fmt(v['r2'])} "
                f"| {_fmt(v['oracle_r2'])} | {_fmt(v['calibration_ratio'], 3)} |"
            )
    cold = {name: t.cold_start for name, t in evaluation.tasks.items() if t.cold_start}
    if cold:
        lines += [
            "",
            "## Cold start: test rows whose item never appeared in train",
            "",
            "| task | rows | share | metric | value | 95% interval |",
            "|---|---:|---:|---|---:|---|",
        ]
        for name, c in cold.items():
            metric = "auc" if "auc" in c else "rmse"
            interval = f"[{c['low']:.4f}, {c['high']:.4f}]" if c.get("low") is not None else "n/a"
            lines.append(
                f"| {name} | {int(c['rows'] or 0)} | {_fmt(c['share'], 3)} | {metric.upper()} "
                f"| {_fmt(c.get(metric))} | {interval} |"
            )
    for t in evaluation.tasks.values():
        for column, values in t.slices.items():
            keys = sorted({k for entry in values.values() for k in entry if k != "rows"})
            lines += [
                "",
                f"## {t.task} by {column}",
                "",
                "| value | rows | " + " | ".join(keys) + " |",
                "|---|---:|" + "---:|" * len(keys),
            ]
            for value, entry in values.items():
                cells = " | ".join(_fmt(entry.get(k)) for k in keys)
                lines.append(f"| {value} | {int(entry['rows'] or 0)} | {cells} |")
    for t in binary:
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
    gates: Mapping[str, Mapping[str, float]],
    raw_train: Path | None = None,
) -> Evaluation:
    """Reload the saved ranker, score the processed test split, evaluate against the raw one
    (and, given ``raw_train``, on the rows whose item it never showed: cold start)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankflow.core.artifacts import load_ranker, predict

    # Scores are matched to raw labels and true probabilities by row position: prove the two
    # splits line up before trusting any metric (processed targets carry the task names).
    processed = pa.concat_tables(
        pq.read_table(str(part), columns=list(spec.task_names))
        for part in parquet_parts(test_features)
    ).to_pandas()
    raw = pq.read_table(str(raw_test), columns=list(spec.target_columns)).to_pandas()
    aligned = len(processed) == len(raw) and all(
        np.array_equal(
            processed[t.name].to_numpy(np.float64),
            raw[t.column].fillna(0).to_numpy(np.float64),
        )
        for t in spec.tasks
    )
    if not aligned:
        raise EvaluationError(
            f"processed test split {test_features} is not row-aligned with raw split {raw_test}"
        )
    cold = cold_rows(spec, raw_train, raw_test) if raw_train is not None else None
    return evaluate(
        spec, predict(load_ranker(model_dir), test_features), raw_test, gates=gates, cold=cold
    )
