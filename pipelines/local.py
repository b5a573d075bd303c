"""Run the ranking pipeline on this machine with kfp.local and summarise the run."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from pipelines.runs import RUN_FILE as RUN_RECORD
from pipelines.runs import RunHistory
from rankflow.core.errors import MissingArtifactError, StepFailed
from rankflow.core.io import atomic_write_text
from rankflow.core.steps import read_failures

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '?([\w-]+)'?")
_FINISHED = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_CACHED = re.compile(r"Task '?([\w-]+)'? cache hit")


@dataclass
class StepTimer:
    """Reads kfp.local's log stream: per-task wall time, and one progress tick per finished task."""

    log: TextIO
    progress: Any  # tqdm bar; Any keeps tqdm an import of the caller
    started: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    _pending: str = ""

    def feed(self, text: str) -> None:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            line = _ANSI.sub("", line)
            if match := _STARTED.search(line):
                self.started[match.group(1)] = time.monotonic()
                self.progress.set_postfix_str(match.group(1))
            elif match := _CACHED.search(line):
                # Reused from an earlier run (``rankflow run --resume``): done, in no time.
                self.seconds[match.group(1)] = 0.0
                self.statuses[match.group(1)] = "CACHED"
                self.progress.update(1)
            elif match := _FINISHED.search(line):
                name, status = match.groups()
                self.seconds[name] = round(
                    time.monotonic() - self.started.get(name, time.monotonic()), 2
                )
                self.statuses[name] = status
                self.progress.update(1)


class _Tee(io.TextIOBase):
    def __init__(self, timer: StepTimer) -> None:
        self._timer = timer

    def write(self, text: str) -> int:
        self._timer.feed(text)
        return len(text)

    def flush(self) -> None:
        self._timer.log.flush()


@contextlib.contextmanager
def _capture(timer: StepTimer) -> Iterator[None]:
    # kfp.local logs through a handler bound to sys.stdout at each task and streams the task's
    # output with print(): swapping stdout sees both, and keeps the terminal to a progress bar.
    original = sys.stdout
    sys.stdout = cast(TextIO, _Tee(timer))
    # kfp.local also logs on the root logger outside those task contexts (cache hits, skipped
    # tasks, workspace clean-up): for the run's duration the root logger writes to the run's
    # log only, so the terminal keeps just the progress bar and, at the end, one summary or one
    # error line.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    into_log = _IntoLog(timer)
    root.handlers = [into_log]
    if level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        sys.stdout = original
        root.handlers = handlers
        root.setLevel(level)


class _IntoLog(logging.Handler):
    """Root-logger records into the run's log (through the timer, which spots cache hits)."""

    def __init__(self, timer: StepTimer) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._timer = timer

    def emit(self, record: logging.LogRecord) -> None:
        self._timer.feed(self.format(record) + "\n")


#: Where local runs keep item-text vectors between runs (under runs/, which git ignores).
LOCAL_EMBEDDING_CACHE = "runs/embedding-cache"


def local_arguments(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Every pipeline argument of a local run: the pipeline's defaults, then the local deploy
    settings, then ``overrides``.

    Locally, deploy into the local store (absolute: each task runs in its own process) and to
    the `make serve` Triton if it is up, unless the caller chose otherwise; the Triton here has
    no TensorFlow backend, so the repository is the python-backend flavour.
    """
    from pipelines.ranking import ranking_pipeline
    from serving.deploy import DeployConfig

    defaults = {name: spec.default for name, spec in ranking_pipeline.component_spec.inputs.items()}
    arguments = {
        **defaults,
        "model_store": str(Path(DeployConfig.model_store).resolve()),
        # Beside the store: an unchanged catalogue is embedded once across local runs.
        "embedding_cache": str(Path(LOCAL_EMBEDDING_CACHE).resolve()),
        "triton_url": DeployConfig.triton_url,
        "serving_flavour": "cpu",
        **overrides,
    }
    # An optional parameter left unset (batch_size: derived from the log) is not passed at all:
    # kfp takes no None for a constant argument.
    return {name: value for name, value in arguments.items() if value is not None}


def run_local(
    *,
    run_dir: Path,
    arguments: Mapping[str, Any],
    resume: bool = False,
) -> dict[str, Any]:
    """Run the pipeline under kfp.local into ``run_dir``; write and return ``summary.json``.

    The run directory also gets the IR YAML compiled from the same code, the full log and the
    evaluation report. ``resume``: keep the previous run in ``run_dir`` and reuse every step
    that completed with the same code and inputs (kfp.local's cache), so a run that failed or
    was killed part-way restarts at the step it lost.

    A failed step raises :class:`StepFailed` with the step's own error (its record, see
    :mod:`rankflow.core.steps`) and exit code.
    """
    from kfp import local
    from tqdm.auto import tqdm

    from pipelines.compile import compile_pipeline
    from pipelines.plots import plot_evaluation
    from pipelines.profile import ClusterProfile, without_retries
    from pipelines.ranking import STEPS, build_pipeline

    arguments = local_arguments(arguments)
    if run_dir.exists() and not resume:
        # A fresh run starts from an empty directory, but for its run record.
        for entry in run_dir.iterdir():
            if entry.name == RUN_RECORD:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    pipeline_yaml = compile_pipeline(run_dir / "pipeline.yaml")
    pipeline_root = run_dir / "artifacts"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=True,
        cache_root=str(run_dir / "cache"),
    )
    log_path = run_dir / "pipeline.log"
    began, started = time.monotonic(), time.time() - 1.0  # mtimes may be coarser
    with (
        log_path.open("w") as log,
        tqdm(total=len(STEPS), desc="rankflow", unit="step", file=sys.stderr) as bar,
    ):
        timer = StepTimer(log, bar)
        try:
            with _capture(timer), warnings.catch_warnings():
                # kfp.local warns that the image is not used: by design, this venv is the image.
                warnings.filterwarnings("ignore", message="You may be attemping to run a task")
                warnings.filterwarnings("ignore", message=".*have no effect in the current local")
                pipeline = build_pipeline(without_retries(ClusterProfile()))
                report = pipeline(**arguments).output
        except Exception as err:
            bar.leave = False  # the error line replaces the bar
            raise _failure(pipeline_root, timer, log_path, started, err) from err
    total = round(time.monotonic() - began, 2)
    tasks = TaskOutputs(pipeline_root)
    evaluation = json.loads((tasks.dir("evaluate-ranker") / "evaluation").read_text())
    summary = summarize(tasks, evaluation, arguments, timer.seconds, total, pipeline_yaml)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutil.copyfile(report.path, run_dir / "report.md")
    plot_evaluation(evaluation, run_dir / "evaluation.png")
    return summary


def _failure(
    pipeline_root: Path, timer: StepTimer, log_path: Path, since: float, error: Exception
) -> StepFailed:
    """The failed step's own error, from the record it left (this run's, not an earlier
    attempt's in the same directory); a plain "failed" when it left none."""
    failed = [s for s, status in timer.statuses.items() if status == "FAILURE"]
    recorded = [
        f for f in read_failures(pipeline_root, since=since) if not failed or f.step in failed
    ]
    if recorded:
        last = recorded[-1]
        return StepFailed(
            last.step, last.message, error=last.error, exit_code=last.exit_code, log=str(log_path)
        )
    # No record: the step died before its body ran (killed, out of memory, a broken image), or
    # no step started (kfp refused the arguments): then the error itself says what went wrong.
    if failed:
        return StepFailed(
            failed[0],
            "failed without a recorded error",
            error="unknown",
            exit_code=1,
            log=str(log_path),
        )
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return StepFailed("start-up", first, error=type(error).__name__, exit_code=1, log=str(log_path))


def run_recorded(
    history: RunHistory, arguments: Mapping[str, Any], *, resume: bool = False
) -> tuple[Path, dict[str, Any]]:
    """:func:`run_local` in a run directory of ``history`` (a new one, or the latest when
    resuming), its run record updated with how it ended."""
    run_dir = history.latest() if resume else history.create(arguments)
    if resume:
        history.update(run_dir, status="running", arguments=dict(arguments), failure=None)
    try:
        summary = run_local(run_dir=run_dir, arguments=arguments, resume=resume)
    except StepFailed as err:
        failure = {"step": err.step, "error": err.error, "message": err.message}
        history.update(run_dir, status="failed", failure={**failure, "exit_code": err.exit_code})
        raise
    except BaseException as err:  # outside any step: start-up, the summary, Ctrl-C
        message = str(err) or type(err).__name__
        failure = {"step": "run", "error": type(err).__name__, "message": message}
        history.update(run_dir, status="failed", failure=failure)
        raise
    history.update(run_dir, status="succeeded", failure=None)
    return run_dir, summary


@dataclass(frozen=True)
class TaskOutputs:
    """Where each task's outputs are: kfp.local writes a directory per pipeline run, and a
    resumed run's cached steps point into the earlier run's directory."""

    pipeline_root: Path

    def dir(self, task: str) -> Path:
        found = [p for p in self.pipeline_root.glob(f"*/{task}") if p.is_dir()]
        if not found:
            raise MissingArtifactError(f"no outputs of step '{task}' under {self.pipeline_root}")
        return max(found, key=lambda p: p.stat().st_mtime)

    def file(self, task: str, output: str) -> Path | None:
        try:
            path = self.dir(task) / output
        except MissingArtifactError:
            return None
        return path if path.exists() else None


def summarize(
    tasks: TaskOutputs,
    evaluation: Mapping[str, Any],
    arguments: Mapping[str, Any],
    seconds: Mapping[str, float],
    total_seconds: float,
    pipeline_yaml: Path,
) -> dict[str, Any]:
    """The run's headline numbers, read back from the artifacts the steps wrote."""
    import pyarrow.parquet as pq

    from pipelines.ranking import ranking_pipeline

    data = tasks.dir("prepare-data")
    rows = {
        f"{split}_rows": pq.ParquetDataset(str(data / f"{split}_data")).read(columns=[]).num_rows
        for split in ("train", "valid", "test")
    }
    infra = json.loads((tasks.dir("validate-on-triton") / "infra_report").read_text())
    champion = json.loads((tasks.dir("compare-with-champion") / "comparison").read_text())
    defaults = {name: spec.default for name, spec in ranking_pipeline.component_spec.inputs.items()}
    # Only a deploy of this run (executed or reused): an earlier run's may lie beside it.
    deployment_file = (
        tasks.file("deploy-model", "deployment") if "deploy-model" in seconds else None
    )
    deployment = json.loads(deployment_file.read_text()) if deployment_file else None
    grpc_url = deployment and deployment["grpc_url"]
    training_file = tasks.file("train-ranker", "ranker")
    training = (
        json.loads((training_file / "training.json").read_text())
        if training_file is not None and (training_file / "training.json").is_file()
        else {}
    )
    deploy_reasons = []
    if not evaluation["blessed"]:
        deploy_reasons += [f"evaluation: {r}" for r in evaluation["reasons"]]
    if not champion["blessed"]:
        deploy_reasons += [f"champion: {r}" for r in champion["reasons"]]
    if not infra["blessed"]:
        deploy_reasons += [f"infra-validation: {r}" for r in infra["reasons"]]
    if deployment is not None:
        deploy_reasons = [f"deployed version {deployment['version']}"]
    elif not deploy_reasons:
        deploy_reasons = ["the deployment gate held it back"]
    return {
        "dataset": rows,
        "model": {"architecture": arguments.get("architecture", defaults["architecture"])},
        "metrics": {
            task: {"kind": t["kind"], "given": t["given"], "rows": t["rows"], **t["metrics"]}
            | {"slices": t["slices"], "cold_start": t.get("cold_start")}
            for task, t in evaluation["tasks"].items()
        },
        "training": training,
        "blessed": evaluation["blessed"],
        "blessing_reasons": evaluation["reasons"],
        "gates": evaluation.get("gates", {}),
        # Candidate against the version that served when it was judged (None: none served).
        "champion": {
            "version": champion["champion"],
            "blessed": champion["blessed"],
            "rows": champion["rows"],
            "reasons": champion["reasons"],
            "notes": champion["notes"],
            "tasks": {
                task: {k: t[k] for k in ("metric", "candidate", "champion", "low", "high", "worse")}
                for task, t in champion["tasks"].items()
            },
        },
        "serving": {
            "deployed": deployment is not None,
            "deploy_reasons": deploy_reasons,
            "model_name": arguments.get("serving_model_name", defaults["serving_model_name"]),
            # None when the gate held the model back; published but not loaded when no
            # Triton was serving the store (then grpc_port is None: `make serve` loads it).
            "version": deployment and deployment["version"],
            "model_store": deployment and deployment["model_store"],
            "grpc_url": grpc_url,
            "grpc_port": int(grpc_url.rsplit(":", 1)[1]) if grpc_url else None,
            "infra_blessed": infra["blessed"],
            "skew_max_abs": max(infra["skew_max_abs"].values(), default=None),
            "skew_max_abs_by_task": infra["skew_max_abs"],
            # What the tolerance judges: relative past 1 (a regression in seconds).
            "skew_max_rel": max(infra.get("skew_max_rel", {}).values(), default=None),
            "latency_ms": infra["latency_ms"],
            "latency_batch_size": arguments.get("infra_batch_size", defaults["infra_batch_size"]),
            "infra_reasons": infra["reasons"],
        },
        "timings_s": {**dict(seconds), "total": total_seconds},
        "pipeline_yaml": str(pipeline_yaml),
        "artifacts": str(tasks.dir("evaluate-ranker").parent),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for a person at a terminal."""
    d = summary["dataset"]
    lines = [
        f"rankflow run: {summary['model']['architecture']} on "
        f"{d['train_rows']:,} train / {d['valid_rows']:,} valid / {d['test_rows']:,} test rows",
    ]
    for task, m in summary["metrics"].items():
        lines.append(f"  {task_line(task, m)}")
    budget = summary.get("training", {}).get("budget")
    if budget:
        lines.append(
            f"  budget: batch {budget['batch_size']}, {summary['training']['epochs_run']} of "
            f"{budget['epochs']} epoch(s) run, best epoch {summary['training']['best_epoch']}"
        )
    lines.append(f"  blessed: {summary['blessed']}")
    champion = summary.get("champion")
    if champion and champion["version"] is not None:
        compared = ", ".join(
            f"{task} {t['candidate'] - t['champion']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}]"
            for task, t in champion["tasks"].items()
        )
        verdict = "not worse" if champion["blessed"] else "worse"
        lines.append(
            f"  against serving version {champion['version']} ({champion['rows']:,} rows): "
            f"{verdict}; {compared or 'no task compared'}"
        )
    serving = summary["serving"]
    if serving["latency_ms"]:
        lines.append(
            f"  Triton '{serving['model_name']}': skew {serving['skew_max_abs']:.1e}"
            + (
                f" (relative past 1: {serving['skew_max_rel']:.1e})"
                if serving.get("skew_max_rel") is not None
                else ""
            )
            + ", "
            f"p50 {serving['latency_ms']['p50']:.2f} ms, p99 {serving['latency_ms']['p99']:.2f} ms "
            f"(batch {serving['latency_batch_size']}), infra-validation passed: "
            f"{serving['infra_blessed']}"
        )
    else:
        lines.append(f"  Triton infra-validation failed: {serving['infra_reasons']}")
    if serving["version"] is None:
        gates = [
            name
            for name, passed in (
                ("evaluation", summary["blessed"]),
                ("the champion comparison", (summary.get("champion") or {}).get("blessed", True)),
                ("infra-validation", serving["infra_blessed"]),
            )
            if not passed
        ]
        lines.append(f"  not deployed: not blessed by {' and '.join(gates) or 'the gate'}")
    else:
        where = (
            f"now serving on gRPC {serving['grpc_url']}"
            if serving["grpc_url"]
            else "no Triton running: `make serve` serves it"
        )
        lines.append(
            f"  deployed '{serving['model_name']}' version {serving['version']} to "
            f"{serving['model_store']}; {where}"
        )
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items())
    lines.append(f"  time: {steps}")
    return "\n".join(lines)


def task_line(task: str, m: Mapping[str, Any]) -> str:
    """One task's headline metrics: AUC (and oracle gap), log-loss, ECE, Σp/Σy; or RMSE (and
    Bayes RMSE), R², Σp/Σy."""
    ratio = f"  Σp/Σy {m['calibration_ratio']:.3f}" if m.get("calibration_ratio") else ""
    cold = m.get("cold_start") or {}
    metric = "rmse" if m.get("kind") == "regression" else "auc"
    if cold.get(metric) is not None:
        ratio += (
            f"  cold-start {metric.upper()} {cold[metric]:.4f} "
            f"[{cold['low']:.4f}, {cold['high']:.4f}] on {int(cold['rows'])} rows"
        )
    if m.get("kind") == "regression":
        bayes = f" (Bayes {m['bayes_rmse']:.3f})" if m.get("bayes_rmse") is not None else ""
        return f"{task:<14} RMSE {m['rmse']:.3f}{bayes}  R² {m['r2']:.4f}{ratio}"
    oracle = m.get("oracle_auc")
    gap = f" (oracle {oracle:.4f}, gap {oracle - m['auc']:.4f})" if oracle is not None else ""
    given = f" | {m['given']}" if m.get("given") else ""
    # What calibrated scores would show on these rows by chance: small splits are never near 0.
    noise = f" (noise {m['ece_noise']:.4f})" if m.get("ece_noise") is not None else ""
    return (
        f"{task + given:<14} AUC {m['auc']:.4f}{gap}  log-loss {m['logloss']:.4f}  "
        f"ECE {m['ece']:.4f}{noise}{ratio}"
    )
