"""``rankflow`` command line: run locally, compile, submit."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("rankflow")


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["epochs=2", "min_auc={\\"click\\": 0.6}"]`` -> typed pipeline arguments.

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
            raise SystemExit(f"--set takes NAME=VALUE, got {pair!r}")
        if name not in inputs:
            raise SystemExit(f"unknown pipeline parameter {name!r}; known: {sorted(inputs)}")
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
            raise SystemExit(f"parameter {name!r} expects {kind}, got {raw!r}") from err
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    from serving.deploy import DeployConfig
    from serving.serve import DEFAULT_PORTS

    parser = argparse.ArgumentParser(prog="rankflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline locally with kfp.local")
    run.add_argument("--run-dir", type=Path, default=Path("runs/latest"))
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument(
        "--resume",
        action="store_true",
        help="reuse the steps of the previous run in --run-dir that completed (same code and "
        "inputs): a failed or killed run restarts where it stopped",
    )
    comp = sub.add_parser("compile", help="compile the pipeline to IR YAML")
    comp.add_argument("--output", type=Path, help="default: the committed pipelines/compiled/ file")
    comp.add_argument("--data-pvc", help="mount this PersistentVolumeClaim on the data step")
    comp.add_argument(
        "--data-secret",
        help="inject this Secret's object-store credentials (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY) into the data step as environment variables",
    )
    comp.add_argument("--gpu-product", help="nvidia.com/gpu.product node label for GPU steps")
    submit = sub.add_parser("submit", help="submit the compiled pipeline to Kubeflow")
    submit.add_argument("--host", required=True)
    submit.add_argument("--experiment", default="rankflow")
    submit.add_argument("--namespace")
    submit.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE"
    )
    query = sub.add_parser("query", help="score raw rows on a running Triton over gRPC")
    query.add_argument("--input", type=Path, required=True, help=".parquet, .csv, .json or .jsonl")
    query.add_argument("--url", default="127.0.0.1:8001")
    query.add_argument("--model", default="rankflow")
    query.add_argument("--limit", type=int, default=10, help="score the first N rows")
    query.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    serve = sub.add_parser("serve", help="run Triton on the local model store until Ctrl-C")
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
    back = sub.add_parser("rollback", help="serve the previously deployed version again")
    back.add_argument("--store", default=DeployConfig.model_store)
    back.add_argument("--model", default="rankflow")
    back.add_argument(
        "--triton-url", default="", help="HTTP host:port; default: the local `rankflow serve`"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "query":
        return _query(args)
    if args.command == "serve":
        from serving.serve import RestartPolicy
        from serving.serve import serve as serve_store
        from serving.store import StoreError
        from serving.triton import TritonError, TritonPorts

        ports = TritonPorts(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port)
        try:
            return serve_store(
                args.store,
                ports,
                ready_timeout_s=args.ready_timeout,
                restarts=RestartPolicy(max_restarts=args.max_restarts),
            )
        except (TritonError, StoreError) as err:
            sys.stderr.write(f"rankflow serve: {err}\n")
            return 1
    if args.command == "rollback":
        from serving.deploy import DeployError, rollback

        try:
            result = rollback(
                args.model,
                config=DeployConfig(model_store=args.store, triton_url=args.triton_url),
            )
        except DeployError as err:
            sys.stderr.write(f"rankflow rollback: {err}\n")
            return 1
        sys.stdout.write(result.to_json() + "\n")
        return 0

    from pipelines.compile import COMPILED_PIPELINE, compile_pipeline

    if args.command == "compile":
        from pipelines.profile import ClusterProfile

        profile = ClusterProfile(
            data_pvc=args.data_pvc, data_secret=args.data_secret, gpu_product=args.gpu_product
        )
        path = compile_pipeline(args.output or COMPILED_PIPELINE, profile=profile)
        logger.info("compiled %s", path)
        return 0
    if args.command == "submit":
        from pipelines.submit import submit as submit_run

        run_id = submit_run(
            args.host,
            pipeline_yaml=COMPILED_PIPELINE,
            arguments=parse_overrides(args.overrides),
            experiment=args.experiment,
            namespace=args.namespace,
        )
        logger.info("run id: %s", run_id)
        return 0

    from pipelines.local import format_summary, run_local

    summary = run_local(
        run_dir=args.run_dir,
        arguments=parse_overrides(args.overrides),
        resume=args.resume,
    )
    sys.stdout.write(format_summary(summary) + "\n")
    sys.stdout.write(f"summary: {args.run_dir / 'summary.json'}\n")
    return 0


def _query(args: argparse.Namespace) -> int:
    """One JSON object per row: the row's index and a score per task."""
    from serving.client import ClientConfig, ClientError, RankflowClient, read_rows

    try:
        rows = read_rows(args.input).head(args.limit)
        client = RankflowClient(
            ClientConfig(url=args.url, model_name=args.model, timeout_s=args.timeout)
        )
        scores = client.score(rows)
    except ClientError as err:
        sys.stderr.write(f"rankflow query: {err}\n")
        return 1
    for i in range(len(rows)):
        record = {"row": i, **{task: round(float(v[i]), 6) for task, v in scores.items()}}
        sys.stdout.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
