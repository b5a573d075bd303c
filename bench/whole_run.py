"""Whole run: per-step wall time of ``rankflow run`` (what ``make run`` runs) and its scaling.

Each run is the real CLI in a subprocess (``rankflow run --runs-dir <tmp>``) under ``/usr/bin/time``
for the peak resident memory of its largest process, deploying into a temporary model store so the
benchmark never touches ``runs/``. Per-step seconds come from the run's own ``summary.json``
(``timings_s``, measured by ``pipelines.local.StepTimer``). ``default`` is the run at the
pipeline's default settings (the "make run <= 3 min" target); the scaling runs vary only
``synthetic_rows`` and report seconds per million rows relative to the smallest size, so a
linear cost reads as 1.0 throughout.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Workspace, median, progress

logger = logging.getLogger(__name__)

TIME = Path("/usr/bin/time")


def _run(workspace: Workspace, name: str, overrides: list[str]) -> dict[str, Any]:
    runs_dir = workspace.root / f"runs-{name}"
    store = workspace.root / f"store-{name}"
    rss_file = workspace.root / f"run-{name}.maxrss"
    cli = Path(sys.executable).with_name("rankflow")
    # String parameters go through `--set` as JSON (rankflow.cli.parse_overrides).
    command = [
        str(cli),
        "run",
        "--runs-dir",
        str(runs_dir),
        "--set",
        f"model_store={store}",
    ]
    for override in overrides:
        command += ["--set", override]
    if TIME.exists():
        command = [str(TIME), "-f", "%M", "-o", str(rss_file), *command]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"rankflow run ({name}) failed:\n{done.stderr[-3000:]}")
    summary = json.loads((runs_dir / "latest" / "summary.json").read_text())
    peak_mb = int(rss_file.read_text().split()[-1]) / 1024.0 if rss_file.exists() else None
    rows = sum(summary["dataset"].values())
    shutil.rmtree(runs_dir, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    return {
        "name": name,
        "rows": rows,
        "overrides": overrides,
        "wall_s": wall,
        "steps_s": {k: v for k, v in summary["timings_s"].items() if k != "total"},
        "total_s": summary["timings_s"]["total"],
        "peak_rss_mb": peak_mb,
    }


def bench_whole_run(
    workspace: Workspace, *, default: bool, sizes: list[int], repeats: int
) -> dict[str, Any]:
    cases: list[tuple[str, list[str]]] = [("default", [])] if default else []
    cases += [(f"{rows}", [f"synthetic_rows={rows}"]) for rows in sizes]
    runs = []
    for name, overrides in progress(cases, desc="whole run"):
        attempts = [_run(workspace, name, overrides) for _ in range(repeats)]
        best = min(
            attempts, key=lambda a: abs(a["total_s"] - median([x["total_s"] for x in attempts]))
        )
        runs.append({**best, "repeats": repeats, "total_s_all": [a["total_s"] for a in attempts]})
        logger.info("whole run %s: %.1f s, peak %s MB", name, best["total_s"], best["peak_rss_mb"])
    scaling = [r for r in runs if r["name"] != "default"]
    if scaling:
        base = scaling[0]["total_s"] / scaling[0]["rows"]
        for r in scaling:
            r["s_per_million_rows"] = r["total_s"] / r["rows"] * 1e6
            r["cost_per_row_vs_smallest"] = (r["total_s"] / r["rows"]) / base
    result: dict[str, Any] = {"runs": runs}
    default_run = next((r for r in runs if r["name"] == "default"), None)
    if default_run:
        result["total_s"] = default_run["total_s"]
        # What `make run` costs after setup: the CLI's wall time, process start-ups included.
        result["wall_s"] = default_run["wall_s"]
    return result
