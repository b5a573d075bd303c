"""results.json, BENCHMARKS.md and the PNG plots from one run's results."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
#: The committed analysis appended to the generated report.
ANALYSIS = Path(__file__).resolve().parent / "analysis.md"
REAL_LOGS = Path(__file__).resolve().parent / "real_logs.md"
REAL_LOGS_START = "<!-- bench-real: start (written by `make bench-real`) -->"
REAL_LOGS_END = "<!-- bench-real: end -->"
PACKAGES = (
    "nvtabular",
    "merlin-core",
    "merlin-dataloader",
    "merlin-models",
    "tensorflow-cpu",
    "tritonclient",
    "nvidia-pytriton",
    "pandas",
    "pyarrow",
    "numpy",
)

#: The issue's targets. Each: (stage, description, function of the results -> (value, met) or None).
ETL_FLOOR_MAX = 3.0
ETL_PANDAS_MIN = 3.0
TRAINING_FLOOR_MAX = 1.2
SERVING_BATCH = 512
SERVING_RATIO_MAX = 1.3
SERVING_P99_BATCH = 64
SERVING_P99_MAX_MS = 5.0
RUN_MAX_S = 180.0
EMBED_BARE_MAX = 1.2
CONTENT_RATIO_MAX = 1.3
CONTENT_P99_MAX_MS = 15.0
CONTENT_P99_CELL = "batch 1, unseen query"


def machine_info(*, quick: bool, started: datetime, wall_s: float) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "mode": "quick" if quick else "full",
        "quick": quick,
        "date": started.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "cpu_count": os.cpu_count(),
        "loadavg_start": None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, its measured value and whether it is met (None: not measured)."""
    rows: list[dict[str, Any]] = []

    def add(stage: str, target: str, value: float | None, met: bool | None, unit: str) -> None:
        rows.append({"stage": stage, "target": target, "value": value, "met": met, "unit": unit})

    for r in results.get("etl", {}).get("results", []):
        size = f"{r['log_rows']:,}-row log"
        add(
            "etl",
            f"feature step <= {ETL_FLOOR_MAX:g}x parquet I/O floor ({size})",
            r["x_floor"],
            r["x_floor"] <= ETL_FLOOR_MAX,
            "x",
        )
        add(
            "etl",
            f"feature step >= {ETL_PANDAS_MIN:g}x faster than pandas ({size})",
            r["speedup_vs_pandas"],
            r["speedup_vs_pandas"] >= ETL_PANDAS_MIN,
            "x",
        )
    for r in results.get("training", {}).get("results", []):
        add(
            "training",
            f"dataloader <= {TRAINING_FLOOR_MAX:g}x compute floor (batch {r['batch_size']})",
            r["x_floor"],
            r["x_floor"] <= TRAINING_FLOOR_MAX,
            "x",
        )
    serving = results.get("serving", {}).get("triton", [])

    def judged(cell: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
        # perf_analyzer's C++ client adds the least of its own to the latency, so it judges the
        # serving targets when it ran; the python client's figures stay in the tables.
        if cell and cell.get("perf_analyzer"):
            return cell["perf_analyzer"], "perf_analyzer"
        return cell, "python client"

    cell = next((r for r in serving if r["batch"] == SERVING_BATCH and r["concurrency"] == 1), None)
    measured, client = judged(cell)
    ratio = measured.get("x_in_process_p50") if measured else None
    add(
        "serving",
        f"Triton p50 <= {SERVING_RATIO_MAX:g}x in-process (batch {SERVING_BATCH}, {client})",
        ratio,
        None if ratio is None else ratio <= SERVING_RATIO_MAX,
        "x",
    )
    cell = next(
        (r for r in serving if r["batch"] == SERVING_P99_BATCH and r["concurrency"] == 1), None
    )
    measured, client = judged(cell)
    p99 = measured["p99_ms"] if measured else None
    add(
        "serving",
        f"Triton p99 <= {SERVING_P99_MAX_MS:g} ms (batch {SERVING_P99_BATCH}, concurrency 1, "
        f"{client})",
        p99,
        None if p99 is None else p99 <= SERVING_P99_MAX_MS,
        "ms",
    )
    content = results.get("content", {})
    embed = content.get("embed")
    add(
        "content",
        f"embed-content <= {EMBED_BARE_MAX:g}x the bare model's batched forward pass",
        embed["x_bare"] if embed else None,
        None if not embed else embed["x_bare"] <= EMBED_BARE_MAX,
        "x",
    )
    endpoint = content.get("endpoint", {})
    # perf_analyzer judges where it ran (as in serving); else the python client's cells.
    perf = {k: v for k, v in endpoint.get("perf_analyzer", {}).items() if isinstance(v, dict)}
    client = "perf_analyzer" if perf else "python client"
    name = f"batch {endpoint.get('batch', '?')}"
    cell = endpoint.get(name)
    ratio = (
        perf[name]["x_in_process_p50"]
        if name in perf
        else (cell["x_in_process_p50"] if cell else None)
    )
    add(
        "content",
        f"endpoint with list and text inputs p50 <= {CONTENT_RATIO_MAX:g}x in-process "
        f"({name}, {client})",
        ratio,
        None if ratio is None else ratio <= CONTENT_RATIO_MAX,
        "x",
    )
    cell = endpoint.get(CONTENT_P99_CELL)
    p99 = (
        perf[CONTENT_P99_CELL]["p99_ms"]
        if CONTENT_P99_CELL in perf
        else (cell["triton"]["p99_ms"] if cell else None)
    )
    add(
        "content",
        f"endpoint p99 <= {CONTENT_P99_MAX_MS:g} ms at batch 1 with one query text never seen "
        f"before ({client})",
        p99,
        None if p99 is None else p99 <= CONTENT_P99_MAX_MS,
        "ms",
    )
    run_s = results.get("whole_run", {}).get("wall_s")
    add(
        "whole run",
        f"make run <= {RUN_MAX_S / 60:g} min",
        run_s,
        None if run_s is None else run_s <= RUN_MAX_S,
        "s",
    )
    return rows


def _met(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[met]


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _agreement(check: dict[str, Any]) -> str:
    if not check.get("ok"):
        return "**no**"
    if check.get("categorical_equal"):
        return "yes (all codes equal)"
    return "yes (codes differ where counts tie)"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(payload: dict[str, Any], plots: dict[str, Path], base: Path = ROOT) -> str:
    """The BENCHMARKS.md text; plot links are relative to ``base`` (the file's directory)."""
    info = payload["machine"]
    results = payload["results"]
    goals = payload["targets"]
    command = "python -m bench --quick" if info["quick"] else "python -m bench"
    lines = [
        "# Benchmarks",
        "",
        f"Numbers from a **{info['mode']}** run (`{command}`) "
        f"on {info['date']}, {info['cpu_count']} CPU(s), no GPU, Python {info['python']}; "
        f"the suite took {info['wall_s']:.0f} s. `make bench` recomputes everything from a fresh "
        "synthetic log (nothing is cached); raw figures are in `bench/results.json`.",
        "",
        "Every figure is a median over repeats, and every ratio is between two contenders measured "
        "in the same run, interleaved, so background load on a shared machine hits both alike.",
        "",
    ]
    if info["quick"]:
        lines += [
            "> Quick (smoke) run: small sizes and few repeats. These numbers show the suite works, "
            "not how fast the stack is; run `make bench` for the real figures.",
            "",
        ]
    lines += ["## Targets", ""]
    lines += _table(
        ["stage", "target", "measured", "status"],
        [
            [
                g["stage"],
                g["target"],
                f"{_num(g['value'])} {g['unit']}" if g["value"] is not None else "-",
                _met(g["met"]),
            ]
            for g in goals
        ],
    )

    etl = results.get("etl")
    if etl:
        lines += ["", "## ETL: NVTabular fit + transform", ""]
        lines += [
            "Fit on the train split and transform it, written as parquet (rows/s of train rows): "
            "`rankflow` is the feature step as shipped (NVTabular fit, compiled transform on the "
            "CPU), `NVTabular` is NVTabular's own transform (before). Both "
            "against the floor (pyarrow reading the same parquet and writing it back) and the same "
            f"transforms in plain pandas. Target: ≤ {ETL_FLOOR_MAX:g}× the floor, ≥ "
            f"{ETL_PANDAS_MIN:g}× faster than pandas.",
            "",
        ]
        lines += _table(
            [
                "log rows",
                "train rows",
                "rankflow rows/s",
                "NVTabular rows/s",
                "floor rows/s",
                "pandas rows/s",
                "rankflow × floor",
                "NVTabular × floor",
                "rankflow vs pandas",
                "pandas = NVTabular",
            ],
            [
                [
                    f"{r['log_rows']:,}",
                    f"{r['train_rows']:,}",
                    _num(r["rows_per_s"].get("rankflow")),
                    _num(r["rows_per_s"]["nvtabular"]),
                    _num(r["rows_per_s"]["floor"]),
                    _num(r["rows_per_s"]["pandas"]),
                    _num(r["x_floor"]),
                    _num(r.get("nvtabular_x_floor")),
                    _num(r["speedup_vs_pandas"]),
                    _agreement(r["pandas_check"]),
                ]
                for r in etl["results"]
            ],
        )
        lines += [
            "",
            '"pandas = NVTabular": same rows, same columns, continuous values allclose and targets '
            "equal, checked on the first repeat's outputs; categorical codes follow NVTabular's "
            "conventions (0 reserved, 1 null, 2 OOV, then most frequent first), and the share of "
            "equal codes per column is in results.json.",
        ]
    training = results.get("training")
    if training:
        lines += ["", "## Training: the default ranker", ""]
        lines += [
            f"Examples/s of `build_ranker(RankerConfig())` trained through `split_loader` (as "
            "`train_ranker` is: the split's arrays in memory on the CPU, `mm.Loader` on the GPU) "
            f"on the processed train split of a {training['rows']:,}-row log, against the same "
            "model fed the same rows from in-memory `tf.data` tensors (the compute floor). "
            f"Target: ≤ {TRAINING_FLOOR_MAX:g}× the floor.",
            "",
        ]
        lines += _table(
            ["batch", "steps (warm-up)", "dataloader ex/s", "in-memory ex/s", "× floor"],
            [
                [
                    str(r["batch_size"]),
                    f"{r['steps']} ({r['warmup_steps']})",
                    _num(r["examples_per_s"]["dataloader"]),
                    _num(r["examples_per_s"]["in_memory"]),
                    _num(r["x_floor"]),
                ]
                for r in training["results"]
            ],
        )
    serving = results.get("serving")
    if serving:
        lines += ["", "## Serving: Triton gRPC", ""]
        lines += [
            f"The ranker exported by `export_cpu_repository` on the real Triton, scored over gRPC "
            f"({serving['client']}), {serving['requests_per_cell']} timed requests per cell, "
            "against in-process `RankerScorer.score` of the same rows (the floor; interleaved "
            f"with the concurrency-1 requests). Targets: p50 ≤ {SERVING_RATIO_MAX:g}× in-process "
            f"at batch {SERVING_BATCH}; p99 ≤ {SERVING_P99_MAX_MS:g} ms at batch "
            f"{SERVING_P99_BATCH}, concurrency 1.",
            "",
        ]
        floor = {r["batch"]: r for r in serving["in_process"]}
        lines += _table(
            [
                "batch",
                "concurrency",
                "p50 ms",
                "p99 ms",
                "rows/s",
                "in-process p50 ms",
                "× in-process p50",
                "scores = in-process",
            ],
            [
                [
                    str(r["batch"]),
                    str(r["concurrency"]),
                    _num(r["p50_ms"]),
                    _num(r["p99_ms"]),
                    _num(r["rows_per_s"]),
                    _num(floor.get(r["batch"], {}).get("p50_ms")),
                    _num(r.get("x_in_process_p50")),
                    "yes" if r["correct"] else f"**no** ({r['max_abs_diff']:.1e})",
                ]
                for r in serving["triton"]
            ],
        )
        measured = [r for r in serving["triton"] if r.get("perf_analyzer")]
        if measured:
            lines += [
                "",
                f"Same cells through {serving['perf_analyzer']}; the server columns are Triton's "
                "own split of the average request (ms).",
                "",
            ]
            lines += _table(
                [
                    "batch",
                    "concurrency",
                    "p50 ms",
                    "p99 ms",
                    "rows/s",
                    "× in-process p50",
                    "server queue",
                    "compute input",
                    "compute infer",
                    "compute output",
                    "client + network",
                ],
                [
                    [
                        str(r["batch"]),
                        str(r["concurrency"]),
                        _num(p["p50_ms"]),
                        _num(p["p99_ms"]),
                        _num(p["rows_per_s"]),
                        _num(p.get("x_in_process_p50")),
                        _num(p["server_ms"]["queue"]),
                        _num(p["server_ms"]["compute_input"]),
                        _num(p["server_ms"]["compute_infer"]),
                        _num(p["server_ms"]["compute_output"]),
                        _num(sum(p["client_ms"].values())),
                    ]
                    for r in measured
                    for p in [r["perf_analyzer"]]
                ],
            )
    content = results.get("content")
    if content:
        embed, endpoint = content["embed"], content["endpoint"]
        lines += ["", "## Content: the language model offline and online", ""]
        if content.get("measured"):
            lines += [
                f"Measured on {content['measured']} (`python -m bench --only content`), apart "
                "from the run the other sections come from.",
                "",
            ]
        lines += [
            f"A synthetic catalogue of {embed.get('ads', embed['items']):,} ads with titles "
            f"({embed['rows']:,}-row log). `embed_content` (no cache: read, tokenise, forward, "
            "pool, project, seal) "
            f"against ONNX Runtime's batched forward pass alone over the same {embed['texts']:,} "
            "distinct texts, tokenised beforehand (the floor); best of "
            f"{embed['repeats']}. Target: ≤ {EMBED_BARE_MAX:g}× the floor.",
            "",
        ]
        lines += _table(
            ["texts", "step s", "bare forward s", "step texts/s", "bare texts/s", "× bare"],
            [
                [
                    f"{embed['texts']:,}",
                    _num(min(embed["step_s"])),
                    _num(min(embed["bare_forward_s"])),
                    _num(embed["texts_per_s"]["step"]),
                    _num(embed["texts_per_s"]["bare_forward"]),
                    _num(embed["x_bare"]),
                ]
            ],
        )
        lines += [
            "",
            f"The endpoint of a {endpoint['rows']:,}-row synthetic log with content (lists, ad "
            "titles, queries, cold ads; cpu flavour: table lookup, cold items and queries "
            "embedded in the request, lists unpadded) on the real Triton over gRPC against the "
            "same "
            "`RankerScorer` in process, interleaved, the same rows to both, a new sample each "
            f"request; {endpoint['requests']} timed requests a cell after {endpoint['warmup']}. "
            f"Targets: p50 ≤ {CONTENT_RATIO_MAX:g}× in-process at batch {endpoint['batch']}; "
            f"p99 ≤ {CONTENT_P99_MAX_MS:g} ms at batch 1 with a query never seen before (each "
            "request embeds its text). A log query repeats as real head queries do, and comes "
            "from the endpoint's text cache.",
            "",
        ]
        cells = [(k, v) for k, v in endpoint.items() if isinstance(v, dict) and "triton" in v]
        lines += _table(
            [
                "cell",
                "Triton p50 ms",
                "Triton p99 ms",
                "in-process p50 ms",
                "in-process p99 ms",
                "× in-process p50",
                "scores = in-process",
            ],
            [
                [
                    name,
                    _num(c["triton"]["p50_ms"]),
                    _num(c["triton"]["p99_ms"]),
                    _num(c["in_process"]["p50_ms"]),
                    _num(c["in_process"]["p99_ms"]),
                    _num(c["x_in_process_p50"]),
                    "yes" if c["correct"] else f"**no** ({c['max_skew']:.1e})",
                ]
                for name, c in cells
            ],
        )
        perf = {k: v for k, v in endpoint.get("perf_analyzer", {}).items() if isinstance(v, dict)}
        if perf:
            lines += [
                "",
                "The same rows through perf_analyzer (C++ gRPC client; a fresh server, so every "
                "unseen query is embedded); the batch rows cycle, so their texts are cached, "
                "and the floor is the scorer on the same batches cached in process; the server "
                "columns are Triton's own split of the average request (ms).",
                "",
            ]
            lines += _table(
                [
                    "cell",
                    "p50 ms",
                    "p99 ms",
                    "in-process p50 ms",
                    "× in-process p50",
                    "server queue",
                    "compute input",
                    "compute infer",
                    "compute output",
                ],
                [
                    [
                        name,
                        _num(p["p50_ms"]),
                        _num(p["p99_ms"]),
                        _num(p.get("in_process_p50_ms")),
                        _num(p["x_in_process_p50"]),
                        _num(p["server_ms"]["queue"]),
                        _num(p["server_ms"]["compute_input"]),
                        _num(p["server_ms"]["compute_infer"]),
                        _num(p["server_ms"]["compute_output"]),
                    ]
                    for name, p in perf.items()
                ],
            )
    lines += ["", "## Whole run: `rankflow run` (what `make run` runs)", ""]
    whole = results.get("whole_run")
    if whole and whole.get("runs"):
        steps = list(dict.fromkeys(k for r in whole["runs"] for k in r["steps_s"]))
        lines += [
            "The real CLI in a subprocess (temporary run directory and model store), per-step wall "
            "time from the run's own `summary.json` (wall: the whole CLI, process start-ups and "
            "pipeline compile included; the target judges it), peak RSS of its largest process "
            "from `/usr/bin/time`. `default` is the pipeline's default settings (target: ≤ "
            f'{RUN_MAX_S / 60:g} min); the others vary `synthetic_rows` only. "cost/row" is '
            "seconds per row relative to the smallest scaling run: 1.0 throughout means linear.",
            "",
        ]
        lines += _table(
            [
                "run",
                "rows",
                "wall s",
                "steps total s",
                *[f"{s} s" for s in steps],
                "peak RSS MB",
                "s per 1M rows",
                "cost/row vs smallest",
            ],
            [
                [
                    r["name"],
                    f"{r['rows']:,}",
                    _num(r["wall_s"], 1),
                    _num(r["total_s"], 1),
                    *[_num(r["steps_s"].get(s), 1) for s in steps],
                    _num(r["peak_rss_mb"], 0),
                    _num(r.get("s_per_million_rows"), 1),
                    _num(r.get("cost_per_row_vs_smallest")),
                ]
                for r in whole["runs"]
            ],
        )
    else:
        lines += [
            "Not measured in this run (the quick mode leaves it out: each pipeline run takes "
            "minutes; `python -m bench --quick --only whole_run --run-rows 30000` smoke-tests it).",
        ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [
            f"![{name}]({Path(os.path.relpath(path, base)).as_posix()})"
            for name, path in plots.items()
        ]
    if REAL_LOGS.is_file():
        # Written by `make bench-real` (bench/real.py), which splices a new one in here.
        lines += ["", REAL_LOGS_START, REAL_LOGS.read_text().strip(), REAL_LOGS_END]
    if ANALYSIS.is_file():
        # Hand-written: what was profiled, what changed and why; its figures cite measured runs.
        lines += ["", ANALYSIS.read_text().strip()]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    etl = results.get("etl", {}).get("results", [])
    if etl:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = ("rankflow", "nvtabular", "floor", "pandas")
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar(
                [j + i * width for j in range(len(etl))],
                [r["rows_per_s"].get(name, 0.0) for r in etl],
                width,
                label=name,
            )
        ax.set_xticks([j + width for j in range(len(etl))], [f"{r['log_rows']:,}" for r in etl])
        ax.set_yscale("log")
        ax.set_xlabel("log rows")
        ax.set_ylabel("train rows/s (log scale)")
        ax.set_title("ETL fit + transform")
        ax.legend()
        paths["etl"] = out_dir / "etl.png"
        fig.tight_layout()
        fig.savefig(paths["etl"], dpi=100)
        plt.close(fig)
    training = results.get("training", {}).get("results", [])
    if training:
        fig, ax = plt.subplots(figsize=(7, 4))
        batches = [r["batch_size"] for r in training]
        for name in ("dataloader", "in_memory"):
            ax.plot(batches, [r["examples_per_s"][name] for r in training], "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("examples/s")
        ax.set_title("Training: split_loader vs in-memory tf.data tensors")
        ax.legend()
        paths["training"] = out_dir / "training.png"
        fig.tight_layout()
        fig.savefig(paths["training"], dpi=100)
        plt.close(fig)
    serving = results.get("serving", {}).get("triton", [])
    if serving:
        fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
        for concurrency in sorted({r["concurrency"] for r in serving}):
            cells = [r for r in serving if r["concurrency"] == concurrency]
            batches = [r["batch"] for r in cells]
            lat.plot(batches, [r["p50_ms"] for r in cells], "o-", label=f"p50, conc {concurrency}")
            lat.plot(batches, [r["p99_ms"] for r in cells], "x--", label=f"p99, conc {concurrency}")
            thr.plot(batches, [r["rows_per_s"] for r in cells], "o-", label=f"conc {concurrency}")
        floor = results["serving"]["in_process"]
        lat.plot(
            [r["batch"] for r in floor], [r["p50_ms"] for r in floor], "k:", label="in-process p50"
        )
        for ax in (lat, thr):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.legend(fontsize=7)
        lat.set_yscale("log")
        lat.set_ylabel("latency ms")
        thr.set_ylabel("rows/s")
        lat.set_title("Triton gRPC latency")
        thr.set_title("Triton gRPC throughput")
        paths["serving"] = out_dir / "serving.png"
        fig.tight_layout()
        fig.savefig(paths["serving"], dpi=100)
        plt.close(fig)
    runs = [r for r in results.get("whole_run", {}).get("runs", []) if r["name"] != "default"]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        rows = [r["rows"] for r in runs]
        ax.plot(rows, [r["total_s"] for r in runs], "o-", label="rankflow run total")
        linear = [runs[0]["total_s"] * n / rows[0] for n in rows]
        ax.plot(rows, linear, "k:", label="linear from the smallest run")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("synthetic rows")
        ax.set_ylabel("wall seconds")
        ax.set_title("Whole run scaling")
        ax.legend()
        paths["whole_run"] = out_dir / "whole_run.png"
        fig.tight_layout()
        fig.savefig(paths["whole_run"], dpi=100)
        plt.close(fig)
    return paths


def write_report(
    results: dict[str, Any],
    *,
    quick: bool,
    started: datetime,
    wall_s: float,
    out: Path,
    markdown: Path,
    plots_dir: Path,
) -> dict[str, Any]:
    payload = {
        "machine": machine_info(quick=quick, started=started, wall_s=wall_s),
        "targets": targets(results),
        "results": results,
    }
    payload["machine"]["loadavg_start"] = results.get("loadavg_start")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    paths = plot(results, plots_dir)
    markdown.write_text(render_markdown(payload, paths, markdown.resolve().parent))
    logger.info("wrote %s, %s and %d plot(s)", out, markdown, len(paths))
    return payload


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
