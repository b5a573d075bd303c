"""``rankflow`` command line: run, publish to Kubeflow, serve, query, roll back.

Locally: run, runs, compile; on Kubeflow: publish (a pipeline version), schedule (a recurring
run), submit (one run); serving: serve, query, rollback, contract.

Every command has its own subparser and handler. A :class:`RankflowError` ends a command as one
line on stderr, ``rankflow <command>: <what is wrong>``, and its exit code (2: bad input or usage,
1: a failure); ``--debug`` prints the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rankflow.core.errors import RankflowError, UsageError

logger = logging.getLogger("rankflow")

DEFAULT_RUNS = Path("runs")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=2", 'gates={"click": {"min_auc": 0.6}}']`` -> typed pipeline arguments.

    Types come from the pipeline's own parameter declarations, so a typo or a wrong type is
    refused here rather than half-way through a run.
    """
    from pipelines.ranking import ranking_pipeline

    inputs = ranking_pipeline.component_spec.inputs
    # kfp names the types "String"/"Integer"/"Float"/"Boolean" in component specs and
    # STRING/NUMBER_INTEGER/... in the IR; accept both spellings.
    casts = {
        "string": str,
        "integer": int,
        "number_integer": int,
        "float": float,
        "number_double": float,
    }
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes NAME=VALUE, got {pair!r}")
        if name not in inputs:
            raise UsageError(f"unknown pipeline parameter {name!r}; known: {sorted(inputs)}")
        kind = inputs[name].type
        try:
            if kind.lower() in casts:
                arguments[name] = casts[kind.lower()](raw)
            elif kind.lower() == "boolean":
                if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError(raw)
                arguments[name] = raw.lower() in ("1", "true", "yes")
            else:
                arguments[name] = json.loads(raw)
        except ValueError as err:
            raise UsageError(f"parameter {name!r} expects {kind}, got {raw!r}") from err
    return arguments


# -- handlers -------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    from components.data.prepare import check_source
    from pipelines.local import format_summary, local_arguments, run_recorded
    from pipelines.runs import RunHistory

    arguments = local_arguments(parse_overrides(args.overrides))
    # Mistakes that need no data read are refused before a pipeline starts.
    check_source(arguments["data_source"], arguments["spec_path"] or None)
    run_dir, summary = run_recorded(RunHistory(args.runs_dir), arguments, resume=args.resume)
    sys.stdout.write(format_summary(summary) + "\n")
    sys.stdout.write(f"run {run_dir.name}: {run_dir / 'summary.json'}\n")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from pipelines.runs import RunHistory, format_runs

    history = RunHistory(args.runs_dir)
    if args.keep is not None:
        for run_id in history.prune(args.keep):
            sys.stdout.write(f"removed {args.runs_dir / run_id}\n")
    runs = history.runs()
    sys.stdout.write(format_runs(runs[-args.limit :] if args.limit else runs) + "\n")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipelines.compile import COMPILED_PIPELINE, compile_pipeline
    from pipelines.profile import ClusterProfile

    profile = ClusterProfile(
        data_pvc=args.data_pvc, data_secret=args.data_secret, gpu_product=args.gpu_product
    )
    path = compile_pipeline(args.output or COMPILED_PIPELINE, profile=profile)
    logger.info("compiled %s", path)
    return 0


def _kfp_target(args: argparse.Namespace) -> Any:
    import os

    from pipelines.kubeflow import KfpTarget, read_token

    return KfpTarget(
        host=args.host,
        namespace=args.namespace,
        token=read_token(args.token_file, os.environ),
    )


def _submit(args: argparse.Namespace) -> int:
    from pipelines.compile import COMPILED_PIPELINE
    from pipelines.kubeflow import submit

    run_id = submit(
        _kfp_target(args),
        pipeline_yaml=COMPILED_PIPELINE,
        arguments=parse_overrides(args.overrides),
        experiment=args.experiment,
        image=args.image,
    )
    sys.stdout.write(json.dumps({"run_id": run_id}) + "\n")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from pipelines.compile import COMPILED_PIPELINE
    from pipelines.kubeflow import Release, publish

    release = Release.resolve(Path.cwd(), version=args.version, image=args.image)
    published = publish(_kfp_target(args), pipeline_yaml=COMPILED_PIPELINE, release=release)
    sys.stdout.write(published.to_json() + "\n")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from pipelines.kubeflow import schedule

    scheduled = schedule(
        _kfp_target(args),
        cron=args.cron,
        name=args.name,
        arguments=parse_overrides(args.overrides),
        version=args.version,
        experiment=args.experiment,
        replace_existing=args.replace,
    )
    sys.stdout.write(scheduled.to_json() + "\n")
    return 0


def _query(args: argparse.Namespace) -> int:
    """One JSON object per row: the row's index and a score per task."""
    from serving.client import ClientConfig, RankflowClient, read_rows

    rows = read_rows(args.input).head(args.limit)
    client = RankflowClient(
        ClientConfig(url=args.url, model_name=args.model, timeout_s=args.timeout)
    )
    try:
        scores = client.score(rows)
    finally:
        client.close()
    for i in range(len(rows)):
        record = {"row": i, **{task: round(float(v[i]), 6) for task, v in scores.items()}}
        sys.stdout.write(json.dumps(record) + "\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.serve import RestartPolicy, serve
    from serving.triton import TritonPorts

    ports = TritonPorts(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port)
    return serve(
        args.store,
        ports,
        ready_timeout_s=args.ready_timeout,
        restarts=RestartPolicy(max_restarts=args.max_restarts),
    )


def _rollback(args: argparse.Namespace) -> int:
    from serving.deploy import DeployConfig, rollback

    result = rollback(
        args.model, config=DeployConfig(model_store=args.store, triton_url=args.triton_url)
    )
    sys.stdout.write(result.to_json() + "\n")
    return 0


def _contract(args: argparse.Namespace) -> int:
    from serving.store import ModelStore

    contract = ModelStore(args.store).contract(args.model, args.version)
    sys.stdout.write(json.dumps(contract.to_dict(), indent=2) + "\n")
    return 0


def _drift(args: argparse.Namespace) -> int:
    from serving.drift import drift, metrics_url, scrape

    since = None
    if args.since is not None:
        if not args.since.is_file():
            raise UsageError(f"--since {args.since}: no such scrape (write one with --save)")
        since = args.since.read_text()
    metrics = scrape(metrics_url(args.store, args.metrics_url))
    report = drift(
        args.store,
        model=args.model,
        metrics=metrics,
        version=args.version,
        since=since,
        threshold=args.threshold,
        min_rows=args.min_rows,
    )
    if args.save is not None:
        from rankflow.core.io import atomic_write_text

        atomic_write_text(args.save, metrics)
    sys.stdout.write((report.to_json() if args.json else report.table()) + "\n")
    # A schedule acts on the exit code: 3 when an input drifted (0 stable, 1/2 errors).
    return DRIFTED if report.drifted else 0


DRIFTED = 3


# -- parser ---------------------------------------------------------------------------------------
def _command(
    sub: Any,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    common: Any,
    help: str,
    parents: Sequence[Any] = (),
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help, parents=[common, *parents])
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from pipelines.kubeflow import DEFAULT_EXPERIMENT, PIPELINE_NAME
    from rankflow.core.contract import DEFAULT_ENDPOINT
    from rankflow.core.drift import DEFAULT_THRESHOLD
    from serving.client import DEFAULT_URL
    from serving.deploy import DeployConfig
    from serving.drift import DEFAULT_METRICS_URL
    from serving.serve import DEFAULT_PORTS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(sub, "run", _run, common, "run the pipeline locally with kfp.local")
    run.add_argument(
        "--runs-dir",
        type=Path,
        default=DEFAULT_RUNS,
        help="run history root: each run goes to <runs-dir>/<run id>, and <runs-dir>/latest "
        "points to the newest",
    )
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest run: reuse its steps that completed (same code and inputs), "
        "so a failed or killed run restarts where it stopped",
    )

    runs = _command(sub, "runs", _runs, common, "list the local runs, newest last")
    runs.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS)
    runs.add_argument("--limit", type=int, default=20, help="show the newest N (0: all)")
    runs.add_argument("--keep", type=int, help="delete every run but the newest N first")

    comp = _command(sub, "compile", _compile, common, "compile the pipeline to IR YAML")
    comp.add_argument("--output", type=Path, help="default: the committed pipelines/compiled/ file")
    comp.add_argument("--data-pvc", help="mount this PersistentVolumeClaim on the data step")
    comp.add_argument(
        "--data-secret",
        help="inject this Secret's object-store credentials (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY) into the data step as environment variables",
    )
    comp.add_argument("--gpu-product", help="nvidia.com/gpu.product node label for GPU steps")

    kfp = argparse.ArgumentParser(add_help=False)
    kfp.add_argument(
        "--host",
        required=True,
        help="the KFP API's URL, e.g. https://kubeflow.example.com/pipeline",
    )
    kfp.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user installs)")
    kfp.add_argument(
        "--token-file",
        type=Path,
        help="a bearer token for the KFP API; default: $KFP_TOKEN, else the in-cluster "
        "service-account token, else none",
    )
    kfp.add_argument("--experiment", default=DEFAULT_EXPERIMENT)

    submit = _command(
        sub, "submit", _submit, common, "create one run of the compiled pipeline on Kubeflow", [kfp]
    )
    submit.add_argument("--image", help="run every step in this image (tag or digest)")
    submit.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE"
    )

    publish = _command(
        sub,
        "publish",
        _publish,
        common,
        f"upload the compiled pipeline as a new version of {PIPELINE_NAME} on Kubeflow",
        [kfp],
    )
    publish.add_argument(
        "--version",
        help="the version's name; default: the checkout's commit (a tree with uncommitted "
        "changes needs this)",
    )
    publish.add_argument(
        "--image",
        help="the image every step runs, tag or digest; default: "
        "ghcr.io/rankflow/rankflow:sha-<commit>, what CI pushes",
    )

    sched = _command(
        sub,
        "schedule",
        _schedule,
        common,
        f"create a recurring run of a published {PIPELINE_NAME} version (one at a time)",
        [kfp],
    )
    sched.add_argument(
        "--cron",
        required=True,
        help="KFP's 6-field cron, seconds first: '0 0 3 * * *' is 03:00 every day",
    )
    sched.add_argument("--name", default="rankflow-retrain", help="the recurring run's name")
    sched.add_argument("--version", help="the pipeline version to run; default: the newest")
    sched.add_argument(
        "--replace",
        action="store_true",
        help="swap an existing recurring run of this name for this one (new first, then old "
        "deleted)",
    )
    sched.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")

    query = _command(sub, "query", _query, common, "score raw rows on a running Triton over gRPC")
    query.add_argument("--input", type=Path, required=True, help=".parquet, .csv, .json or .jsonl")
    query.add_argument("--url", default=DEFAULT_URL)
    query.add_argument("--model", default=DEFAULT_ENDPOINT)
    query.add_argument("--limit", type=int, default=10, help="score the first N rows")
    query.add_argument("--timeout", type=float, default=10.0, help="seconds per request")

    serve = _command(
        sub, "serve", _serve, common, "run Triton on the local model store until Ctrl-C"
    )
    serve.add_argument("--store", type=Path, default=Path(DeployConfig.model_store))
    serve.add_argument("--http-port", type=int, default=DEFAULT_PORTS.http)
    serve.add_argument("--grpc-port", type=int, default=DEFAULT_PORTS.grpc)
    serve.add_argument("--metrics-port", type=int, default=DEFAULT_PORTS.metrics)
    serve.add_argument("--ready-timeout", type=float, default=300.0, help="seconds")
    serve.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restart a Triton that died at most this often in 5 minutes (0: never)",
    )

    back = _command(
        sub, "rollback", _rollback, common, "serve the previously deployed version again"
    )
    back.add_argument("--store", default=DeployConfig.model_store)
    back.add_argument("--model", default=DEFAULT_ENDPOINT)
    back.add_argument(
        "--triton-url", default="", help="HTTP host:port; default: the local `rankflow serve`"
    )

    contract = _command(
        sub,
        "contract",
        _contract,
        common,
        "print what a store version of an endpoint takes and returns",
    )
    contract.add_argument("--store", default=DeployConfig.model_store)
    contract.add_argument("--model", default=DEFAULT_ENDPOINT)
    contract.add_argument("--version", type=int, help="default: the serving version")

    drift = _command(
        sub,
        "drift",
        _drift,
        common,
        "compare the serving version's input counters with its training profiles (PSI); "
        "exits 3 when an input drifted",
    )
    drift.add_argument("--store", default=DeployConfig.model_store)
    drift.add_argument("--model", default=DEFAULT_ENDPOINT)
    drift.add_argument("--version", type=int, help="default: the serving version")
    drift.add_argument(
        "--metrics-url",
        help="Triton's Prometheus metrics endpoint; default: the local `rankflow serve` on "
        f"--store, else {DEFAULT_METRICS_URL}",
    )
    drift.add_argument(
        "--since", type=Path, help="an earlier scrape (--save): judge only the traffic after it"
    )
    drift.add_argument("--save", type=Path, help="write this scrape here, for a later --since")
    drift.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="PSI above which an input has drifted (0.1 moderate, 0.25 a shift to act on)",
    )
    drift.add_argument(
        "--min-rows", type=int, default=500, help="refuse to judge fewer served rows"
    )
    drift.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except RankflowError as err:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"rankflow {args.command}: {_one_line(str(err), debug=args.debug)}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"rankflow {args.command}: interrupted\n")
        return 130
    except Exception as err:  # a bug: still one line, unless asked for the traceback
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(
            f"rankflow {args.command}: unexpected {type(err).__name__}: {err} "
            "(rerun with --debug for the traceback)\n"
        )
        return 1


def _one_line(message: str, *, debug: bool) -> str:
    """Errors end a command in one line; a message with more (a server's log tail) says so."""
    first, *rest = message.splitlines() or [""]
    if rest and not debug:
        return f"{first} (+{len(rest)} more lines: rerun with --debug to see them)"
    return first


if __name__ == "__main__":
    raise SystemExit(main())
