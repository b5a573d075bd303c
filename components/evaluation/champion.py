"""Champion / challenger (TFX Evaluator's baseline-model check): the serving version scores the
candidate's test rows and the candidate must not be worse on any task beyond its tolerance.

Both score the same raw rows, the champion through its own exported transform and model
(:func:`serving.versions.score_version`). "Worse" is judged by a paired bootstrap over those
rows: the candidate is refused on a task when the whole interval of ``candidate - champion``
lies beyond the task's tolerance (``max_auc_drop`` AUC points; ``max_rmse_increase``, a
fraction of the champion's RMSE). At 20k rows an AUC's own standard error is ~0.01, far above
the differences that matter; the paired difference is much tighter, as both see the same rows.

Rows the champion was fitted on say nothing about it: when its recorded training window reaches
into the test window, only the test rows after it are judged, and the report says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.evaluation import metrics as m
from components.evaluation.evaluate import CHAMPION_GATES
from rankflow.core.errors import ConfigError, MissingArtifactError
from rankflow.core.spec import DatasetSpec
from rankflow.core.window import TimeWindow, WindowError

logger = logging.getLogger(__name__)

Scores = dict[str, np.ndarray]


@dataclass(frozen=True)
class ChampionConfig:
    """``replicates`` paired resamples at ``confidence``; at most ``max_rows`` test rows (a
    seeded sample) are scored by both; fewer than ``min_rows`` after the champion's training
    window can't judge the candidate."""

    replicates: int = 500
    confidence: float = 0.95
    seed: int = 0
    max_rows: int = 100_000
    min_rows: int = 1_000

    def __post_init__(self) -> None:
        if self.replicates < 100:
            raise ConfigError(f"replicates must be >= 100, got {self.replicates}")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 1 <= self.min_rows <= self.max_rows:
            raise ConfigError("need 1 <= min_rows <= max_rows")


@dataclass(frozen=True)
class TaskComparison:
    task: str
    metric: str  # "auc" (higher is better) or "rmse" (lower is better)
    rows: int
    candidate: float
    champion: float
    #: Interval of ``candidate - champion`` at the comparison's confidence.
    low: float
    high: float
    gate: str
    #: The gate's value, and the same in the metric's unit.
    tolerance: float
    margin: float
    worse: bool

    @property
    def difference(self) -> float:
        return self.candidate - self.champion


@dataclass(frozen=True)
class ChampionComparison:
    endpoint: str
    #: The version the candidate was judged against; None: the endpoint served none.
    champion: int | None
    blessed: bool
    rows: int
    confidence: float
    replicates: int
    tasks: dict[str, TaskComparison] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        payload = asdict(self)
        return json.dumps(payload, indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> ChampionComparison:
        try:
            raw = json.loads(Path(path).read_text())
            tasks = {k: TaskComparison(**v) for k, v in raw.pop("tasks").items()}
            return cls(**raw, tasks=tasks)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MissingArtifactError(
                f"unreadable champion comparison {path}: {err}; rerun the compare step"
            ) from err


def compare_with_champion(
    spec: DatasetSpec,
    *,
    candidate: Callable[[object], Scores],  # pandas.DataFrame of raw rows -> per-task scores
    raw_test: Path,
    model_store: str | Path,
    endpoint: str,
    gates: Mapping[str, Mapping[str, float]],
    config: ChampionConfig,
) -> ChampionComparison:
    """Judge ``candidate`` (raw rows -> scores) against the version ``endpoint`` serves in
    ``model_store`` on the raw test split; ``gates``: every task's champion gate
    (``Gates.champion_for_spec``)."""
    import pandas as pd

    from serving.store import ModelStore
    from serving.versions import score_version

    store = ModelStore(model_store)
    serving = store.serving_version(endpoint)

    def result(blessed: bool, rows: int = 0, **fields) -> ChampionComparison:
        return ChampionComparison(
            endpoint,
            serving,
            blessed,
            rows,
            config.confidence,
            config.replicates,
            **fields,
        )

    if serving is None:
        note = f"{endpoint!r} serves no version in {model_store}: no champion to compare with"
        logger.info(note)
        return result(True, notes=[note])
    manifest = store.manifest(endpoint, serving)
    raw = pd.read_parquet(raw_test)
    missing = [i.name for i in manifest.contract.inputs if i.required and i.name not in raw]
    if missing:
        note = (
            f"version {serving} cannot score these rows (it needs input(s) {missing} they "
            "lack): not compared; the deploy's contract rules decide"
        )
        logger.warning(note)
        return result(True, notes=[note])
    shared = [t for t in spec.tasks if t.name in manifest.contract.tasks]
    if not shared:
        return result(True, notes=[f"version {serving} predicts none of the candidate's tasks"])

    notes: list[str] = []
    window = manifest.extra.get("training_window")
    if window is None:
        notes.append(f"version {serving} records no training window: judged on every test row")
    else:
        trained = TimeWindow.from_dict(window)
        try:
            after = trained.after(raw[trained.column]) if trained.column in raw else None
        except WindowError as err:
            after = None
            notes.append(f"{err}: judged on every test row")
        if after is None and trained.column not in raw:
            notes.append(
                f"these rows have no '{trained.column}', the column of version {serving}'s "
                "training window: judged on every test row"
            )
        if after is not None and not after.all():
            notes.append(
                f"version {serving} was fitted on rows up to {trained.column} = {trained.last}; "
                f"{int((~after).sum())} of the {len(raw)} test rows fall in that window: judged "
                f"on the {int(after.sum())} after it"
            )
            raw = raw[after].reset_index(drop=True)
    if len(raw) < config.min_rows:
        reason = (
            f"only {len(raw)} test row(s) lie after version {serving}'s training window, fewer "
            f"than the {config.min_rows} a comparison needs: give the run a log reaching past "
            "it, or deploy under another endpoint name"
        )
        return result(False, len(raw), reasons=[reason], notes=notes)
    if len(raw) > config.max_rows:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(raw), size=config.max_rows, replace=False))
        notes.append(f"judged on a seeded sample of {config.max_rows} of the {len(raw)} rows")
        raw = raw.iloc[keep].reset_index(drop=True)

    champion_scores = score_version(store, endpoint, serving, raw)
    candidate_scores = candidate(raw)
    row_weights = (
        raw[spec.weight_column].to_numpy(np.float64) if spec.weight_column else np.ones(len(raw))
    )
    labels = {t.name: raw[t.column].fillna(0).to_numpy(np.float64) for t in spec.tasks}
    tasks: dict[str, TaskComparison] = {}
    reasons: list[str] = []
    for task in shared:
        task_gates = gates.get(task.name, {})
        if not task_gates:
            continue
        ((gate, tolerance),) = task_gates.items()
        kind, metric = CHAMPION_GATES[gate]
        weights = row_weights * (labels[task.given] if task.given else 1.0)
        keep = weights > 0
        y = labels[task.name][keep]
        if not keep.any() or (kind == "binary" and y.min() == y.max()):
            notes.append(f"{task.name}: the judged rows lack both outcomes: not compared")
            continue
        paired = m.paired_bootstrap(
            metric,
            y,
            np.asarray(candidate_scores[task.name], np.float64)[keep],
            np.asarray(champion_scores[task.name], np.float64)[keep],
            weights[keep],
            replicates=config.replicates,
            confidence=config.confidence,
            seed=config.seed,
        )
        higher_is_better = m.PAIRED_METRICS[metric][1]
        margin = tolerance if higher_is_better else tolerance * paired.reference
        worse = paired.high < -margin if higher_is_better else paired.low > margin
        compared = TaskComparison(
            task=task.name,
            metric=metric,
            rows=int(keep.sum()),
            candidate=paired.candidate,
            champion=paired.reference,
            low=paired.low,
            high=paired.high,
            gate=gate,
            tolerance=float(tolerance),
            margin=float(margin),
            worse=bool(worse),
        )
        tasks[task.name] = compared
        if worse:
            reasons.append(_worse_reason(compared, serving, config.confidence))
    comparison = result(not reasons, len(raw), tasks=tasks, reasons=reasons, notes=notes)
    logger.info(
        "champion %s v%d: %s, blessed=%s",
        endpoint,
        serving,
        {t: f"{c.difference:+.4f} [{c.low:+.4f}, {c.high:+.4f}]" for t, c in tasks.items()},
        comparison.blessed,
    )
    return comparison


def _worse_reason(task: TaskComparison, version: int, confidence: float) -> str:
    metric = task.metric.upper()
    side = "below" if m.PAIRED_METRICS[task.metric][1] else "above"
    bound = -task.margin if side == "below" else task.margin
    return (
        f"{task.task}: {metric} {task.candidate:.4f} against version {version}'s "
        f"{task.champion:.4f} (difference {task.difference:+.4f}, {confidence:.0%} interval "
        f"[{task.low:+.4f}, {task.high:+.4f}]) is wholly {side} {bound:+.4f} ({task.gate} "
        f"{task.tolerance:g})"
    )


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def comparison_report(comparison: ChampionComparison) -> str:
    """Candidate and champion side by side, with the paired intervals (Kubeflow UI Markdown)."""
    lines = ["# Champion / challenger", ""]
    if comparison.champion is None:
        lines += ["Decision: **blessed** (no champion)", ""]
        lines += [f"- {note}" for note in comparison.notes]
        return "\n".join(lines) + "\n"
    verdict = "**blessed**" if comparison.blessed else "**not blessed**"
    lines += [
        f"Decision: {verdict} against version {comparison.champion} of "
        f"'{comparison.endpoint}', on {comparison.rows} test rows",
        "",
    ]
    lines += [f"- {reason}" for reason in comparison.reasons]
    lines += [f"- note: {note}" for note in comparison.notes]
    if comparison.tasks:
        confidence = f"{comparison.confidence:.0%}"
        lines += [
            "",
            f"Intervals: {confidence} paired bootstrap over {comparison.replicates} resamples "
            "of the same rows.",
            "",
            f"| task | metric | rows | candidate | champion v{comparison.champion} | difference "
            f"| {confidence} interval | tolerance | verdict |",
            "|---|---|---:|---:|---:|---:|---|---|---|",
        ]
        for t in comparison.tasks.values():
            verdict = "worse" if t.worse else "not worse"
            lines.append(
                f"| {t.task} | {t.metric.upper()} | {t.rows} | {_fmt(t.candidate)} "
                f"| {_fmt(t.champion)} | {t.difference:+.4f} | [{t.low:+.4f}, {t.high:+.4f}] "
                f"| {t.gate} {t.tolerance:g} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def candidate_scorer(
    spec: DatasetSpec, workflow_dir: Path, model_dir: Path, content_table: Path | None = None
):
    """The candidate as it will serve: its fitted workflow and ranker (and, with text inputs,
    the content step's table) on raw rows, chunked. Loaded at the first call: with no
    champion, nothing is scored."""
    from serving.scorer import RankerScorer
    from serving.versions import CHUNK_ROWS

    loaded: list[RankerScorer] = []

    def score(rows) -> Scores:  # rows: pandas.DataFrame
        if not loaded:
            from rankflow.core.content import spec_content

            content = spec_content(spec, content_table)
            loaded.append(
                RankerScorer(workflow_dir, model_dir, targets=spec.label_columns, content=content)
            )
        scorer = loaded[0]
        parts = [
            scorer.score(rows.iloc[i : i + CHUNK_ROWS]) for i in range(0, len(rows), CHUNK_ROWS)
        ]
        return {t: np.concatenate([p[t] for p in parts]) for t in parts[0]}

    return score
