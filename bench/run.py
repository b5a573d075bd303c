"""The benchmark suite's entry point.

    python -m bench [--quick] [--only etl,training,serving] [--out bench/results.json]

Builds everything it measures from a fresh seeded synthetic log in a temporary directory (nothing
is cached between runs), runs the selected benchmarks, writes ``--out`` (results + machine info),
``BENCHMARKS.md`` and ``bench/plots/*.png``, and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import SEED, Workspace, peak_rss_mb
from bench.report import ROOT, render_markdown, utc_now, write_report

logger = logging.getLogger(__name__)

STAGES = ("etl", "training", "serving", "content", "whole_run")


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts of one mode."""

    etl_sizes: tuple[int, ...]
    etl_repeats: int
    model_rows: int  # the log the training and serving benchmarks use
    batch_sizes: tuple[int, ...]
    train_steps: int
    train_warmup: int
    train_repeats: int
    serving_batches: tuple[int, ...]
    serving_concurrency: tuple[int, ...]
    serving_requests: int
    serving_warmup: int
    content_rows: int  # the content log (lists, text, cold ads) of the content benchmark
    content_ads: int  # the catalogue the content step's throughput is measured on
    embed_repeats: int
    content_requests: int
    content_warmup: int
    run_default: bool  # time `rankflow run` at the pipeline's defaults (the `make run` target)
    run_sizes: tuple[int, ...]  # scaling runs: synthetic_rows
    run_repeats: int


FULL = Plan(
    etl_sizes=(1_000_000, 10_000_000),
    etl_repeats=3,
    model_rows=1_000_000,
    batch_sizes=(512, 1024, 4096),
    train_steps=150,
    train_warmup=20,
    train_repeats=3,
    serving_batches=(1, 64, 512),
    serving_concurrency=(1, 4, 8),
    serving_requests=400,
    serving_warmup=20,
    content_rows=400_000,
    content_ads=20_000,
    embed_repeats=3,
    content_requests=400,
    content_warmup=20,
    run_default=True,
    run_sizes=(100_000, 1_000_000, 10_000_000),
    run_repeats=1,
)
QUICK = Plan(
    etl_sizes=(100_000,),
    etl_repeats=2,
    model_rows=100_000,
    batch_sizes=(1024,),
    train_steps=30,
    train_warmup=5,
    train_repeats=2,
    serving_batches=(1, 64),
    serving_concurrency=(1, 4),
    serving_requests=50,
    serving_warmup=5,
    content_rows=20_000,
    content_ads=2_000,
    embed_repeats=1,
    content_requests=30,
    content_warmup=3,
    # Whole pipeline runs take minutes each: out of the quick mode unless --run-rows asks.
    run_default=False,
    run_sizes=(),
    run_repeats=1,
)


def run_suite(plan: Plan, stages: tuple[str, ...], workspace: Workspace) -> dict[str, Any]:
    results: dict[str, Any] = {"loadavg_start": os.getloadavg(), "stage_wall_s": {}}
    for stage in stages:
        start = time.perf_counter()
        logger.info("benchmark: %s", stage)
        if stage == "etl":
            from bench.etl import bench_etl

            results["etl"] = bench_etl(
                workspace, sizes=list(plan.etl_sizes), repeats=plan.etl_repeats
            )
        elif stage == "training":
            from bench.training import bench_training

            results["training"] = bench_training(
                workspace,
                rows=plan.model_rows,
                batch_sizes=list(plan.batch_sizes),
                steps=plan.train_steps,
                warmup=plan.train_warmup,
                repeats=plan.train_repeats,
            )
        elif stage == "serving":
            from bench.serving import bench_serving

            results["serving"] = bench_serving(
                workspace,
                rows=plan.model_rows,
                batch_sizes=list(plan.serving_batches),
                concurrencies=list(plan.serving_concurrency),
                requests=plan.serving_requests,
                warmup=plan.serving_warmup,
            )
        elif stage == "content":
            from bench.content import CONTENT_BATCH, bench_content

            results["content"] = bench_content(
                workspace,
                rows=plan.content_rows,
                ads=plan.content_ads,
                embed_repeats=plan.embed_repeats,
                batch=CONTENT_BATCH,
                requests=plan.content_requests,
                warmup=plan.content_warmup,
            )
        elif stage == "whole_run":
            if not (plan.run_default or plan.run_sizes):
                logger.info("whole run: not in this mode (--run-rows N to add a scaling run)")
                continue
            from bench.whole_run import bench_whole_run

            results["whole_run"] = bench_whole_run(
                workspace,
                default=plan.run_default,
                sizes=list(plan.run_sizes),
                repeats=plan.run_repeats,
            )
        results["stage_wall_s"][stage] = time.perf_counter() - start
    results["loadavg_end"] = os.getloadavg()
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (CI: a few minutes)")
    parser.add_argument(
        "--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--plots", type=Path, default=ROOT / "bench" / "plots")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--run-rows",
        help="comma-separated synthetic_rows of the whole-run scaling runs (overrides the mode's)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary artifacts")
    args = parser.parse_args(argv)

    stages = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        parser.error(f"--only takes a subset of {','.join(STAGES)}, got {args.only!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    plan = QUICK if args.quick else FULL
    if args.run_rows:
        sizes = tuple(int(r) for r in args.run_rows.split(",") if r.strip())
        plan = dataclasses.replace(plan, run_sizes=sizes)
    started = utc_now()
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="rankflow-bench-"))
    try:
        results = run_suite(plan, stages, Workspace(root, seed=args.seed))
    finally:
        if args.keep:
            logger.info("artifacts kept in %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    payload = write_report(
        results,
        quick=args.quick,
        started=started,
        wall_s=time.perf_counter() - start,
        out=args.out,
        markdown=args.markdown,
        plots_dir=args.plots,
    )
    print(render_markdown(payload, {}))
    return 0
