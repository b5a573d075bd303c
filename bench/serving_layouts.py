"""Latency and correctness of the CPU serving layouts on the real Triton here.

    .venv/bin/python bench/serving_layouts.py [--requests 200] [--workdir DIR]

Builds small session-like artifacts (synthetic log -> NVTabular workflow -> ranker trained one
epoch, as tests/conftest.py does), exports three layouts of the same endpoint into one model
repository, loads them all on one Triton 2.51 (pytriton wheel: python backend + ensembles, no
TensorFlow backend) and sends the same raw rows to each, interleaved in a seeded random order so
that load from other processes on this shared machine hits every layout alike:

  a  single python model: NVTabular transform + SavedModel in one stub (the cpu flavour)
  b  plain Triton ensemble: merlin-systems' workflow model -> python model running the SavedModel's
     serving signature (the gpu flavour with the TensorFlow backend swapped for python)
  c  merlin-systems' default executor: a python model calling the workflow model and the
     SavedModel model through BLS. Its TensorFlow-backend model can't load here, so the same
     python model stands in for it under merlin's name and config.

Per layout and batch size: p50/p99/mean latency over ``--requests`` timed requests after
``--warmup``, ratios to in-process ``RankerScorer.score`` of the same rows (timed in the same
interleaving) and to layout a, and the largest |online - in-process| score over all responses.
Prints a table and writes bench/serving_layouts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Layout:
    key: str
    description: str
    model: str
    batched: bool  # inputs [batch, 1] (max_batch_size > 0) or unbatched [batch]
    outputs: dict[str, str]  # task -> output tensor name
    load: tuple[str, ...] = ()  # models Triton must load besides ``model`` (BLS callees)


def build_artifacts(workdir: Path, *, rows: int, seed: int) -> dict[str, Path]:
    """Prepared splits, fitted workflow, trained ranker under ``workdir`` (reused if present)."""
    from components.data.prepare import prepare_data
    from components.data.split import SplitConfig
    from components.data.synthetic import SyntheticConfig
    from components.features.workflow import FeatureConfig, run_feature_engineering
    from components.training.ranker import RankerConfig, train_ranker
    from rankflow.core.spec import DatasetSpec

    paths = {
        "spec": workdir / "prepared" / "spec.yaml",
        "test": workdir / "prepared" / "test",
        "workflow": workdir / "features" / "workflow",
        "model": workdir / "ranker",
    }
    if all(p.exists() for p in paths.values()):
        print(f"reusing artifacts in {workdir}")
        return paths
    splits = {name: workdir / "prepared" / name for name in ("train", "valid", "test")}
    prepare_data(
        "synthetic",
        spec_path=None,
        synthetic=SyntheticConfig(rows=rows, seed=seed, chunk_rows=10_000),
        split=SplitConfig(),
        outputs=splits,
        spec_out=paths["spec"],
    )
    features = {name: workdir / "features" / name for name in splits}
    run_feature_engineering(
        DatasetSpec.load(paths["spec"]),
        splits,
        workflow_dir=paths["workflow"],
        outputs=features,
        config=FeatureConfig(),
    )
    train_ranker(
        DatasetSpec.load(paths["spec"]),
        features["train"],
        features["valid"],
        model_dir=paths["model"],
        config=RankerConfig(epochs=1, batch_size=512, seed=seed),
    )
    return paths


def _merge(source: Path, repository: Path) -> None:
    for model in source.iterdir():
        model.rename(repository / model.name)
    source.rmdir()


def export_layouts(paths: dict[str, Path], repository: Path) -> list[Layout]:
    """All three layouts side by side in ``repository``."""
    from google.protobuf import text_format

    from rankflow.core.artifacts import atomic_dir
    from rankflow.core.spec import DatasetSpec
    from serving.ensemble import load_ensemble_artifacts, write_ensemble
    from serving.export import ExportConfig, export_cpu_repository

    spec = DatasetSpec.load(paths["spec"])
    repository.mkdir(parents=True)
    sources = {"workflow_dir": paths["workflow"], "model_dir": paths["model"]}
    tasks = spec.task_names

    export_cpu_repository(
        spec, **sources, repository=repository / ".a", config=ExportConfig(model_name="layout_a")
    )
    _merge(repository / ".a", repository)

    artifacts = load_ensemble_artifacts(tasks, **sources, drop=spec.label_columns)
    with atomic_dir(repository / ".b") as scratch:
        write_ensemble(
            artifacts,
            scratch,
            ExportConfig(model_name="layout_b"),
            ranker_backend="python",
            instance_kind="KIND_CPU",
        )
    _merge(repository / ".b", repository)

    # c: merlin-systems' executor exactly as it exports it (version 1: it ignores the version
    # of the executor and workflow models), its TF model re-declared as a python model.
    from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime

    artifacts = load_ensemble_artifacts(tasks, **sources, drop=spec.label_columns)
    staging = repository / ".c"
    _executor, nodes = TritonExecutorRuntime().export(
        artifacts.graph, str(staging), version=1, name="layout_c"
    )
    (ranker,) = [c for c in nodes if c.platform == "tensorflow_savedmodel"]
    ranker.ClearField("platform")
    ranker.backend = "python"
    (staging / ranker.name / "config.pbtxt").write_text(text_format.MessageToString(ranker))
    shutil.copyfile(
        HERE.parent / "serving" / "ranker_model.py", staging / ranker.name / "1" / "model.py"
    )
    _merge(staging, repository)

    return [
        Layout("a", "single python model", "layout_a", True, {t: t for t in tasks}),
        Layout(
            "b",
            "ensemble: python transform -> python SavedModel",
            "layout_b",
            True,
            {t: t for t in tasks},
        ),
        Layout(
            "c",
            "merlin executor (BLS) -> python models",
            "layout_c",
            False,
            {t: artifacts.heads[t] for t in tasks},
            # Ensembles load their steps; BLS callees must be loaded explicitly.
            load=tuple(c.name for c in nodes),
        ),
    ]


def triton_inputs(frame, dtypes: dict[str, np.dtype], *, batched: bool) -> list:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, dtype in dtypes.items():
        values = frame[name].to_numpy().astype(dtype)
        values = values.reshape(-1, 1) if batched else values.reshape(-1)
        datatype = "BYTES" if dtype == np.dtype(object) else grpcclient.np_to_triton_dtype(dtype)
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return inputs


def summarize(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def server_counters(client) -> dict[str, dict[str, int]]:
    """Triton's cumulative per-model counters: requests and time spent (ns) per phase."""
    counters = {}
    for model in client.get_inference_statistics(as_json=True).get("model_stats", []):
        stats = model.get("inference_stats", {})
        counters[model["name"]] = {
            "success": int(stats.get("success", {}).get("count", 0)),
            **{
                f"{phase}_ns": int(stats.get(phase, {}).get("ns", 0))
                for phase in (
                    "success",
                    "queue",
                    "compute_input",
                    "compute_infer",
                    "compute_output",
                )
            },
        }
    return counters


def server_breakdown(before, after) -> dict[str, dict[str, float]]:
    """Per model, mean ms per request between two ``server_counters`` snapshots."""
    breakdown = {}
    for name, end in sorted(after.items()):
        start = before.get(name, dict.fromkeys(end, 0))
        count = end["success"] - start["success"]
        if count <= 0:
            continue
        mean = {k[:-3]: (end[k] - start[k]) / count / 1e6 for k in end if k.endswith("_ns")}
        breakdown[name] = {
            "requests": count,
            "server_ms": mean["success"],
            "queue_ms": mean["queue"],
            "compute_ms": mean["compute_input"] + mean["compute_infer"] + mean["compute_output"],
        }
    return breakdown


def measure(server, layouts, scorer, test, *, batch_sizes, requests, warmup, seed):
    import tritonclient.grpc as grpcclient
    from tqdm import tqdm

    client = grpcclient.InferenceServerClient(server.grpc_url)
    rng = random.Random(seed)
    results = []
    breakdowns = {}
    pool = test.head(max(batch_sizes)).reset_index(drop=True)
    for batch in batch_sizes:
        # Batch 64: the same 64 rows every request; batch 1: row i % 64 on request i.
        frames = (
            [pool.head(batch)]
            if batch > 1
            else [pool.iloc[i : i + 1].reset_index(drop=True) for i in range(len(pool))]
        )
        expected = [scorer.score(f) for f in frames]
        inputs = {
            layout.key: [
                triton_inputs(f, scorer.input_dtypes, batched=layout.batched) for f in frames
            ]
            for layout in layouts
        }
        times: dict[str, list[float]] = {key: [] for key in ["in-process", *inputs]}
        skew = dict.fromkeys(inputs, 0.0)
        errors = dict.fromkeys(inputs, 0)
        counters = server_counters(client)
        for i in tqdm(range(warmup + requests), desc=f"batch {batch}", leave=False):
            which = i % len(frames)
            order = list(times)
            rng.shuffle(order)
            for key in order:
                start = time.perf_counter()
                if key == "in-process":
                    scorer.score(frames[which])
                    elapsed = time.perf_counter() - start
                else:
                    layout = next(x for x in layouts if x.key == key)
                    try:
                        result = client.infer(layout.model, inputs[key][which])
                    except Exception as err:  # count and show, keep measuring the others
                        errors[key] += 1
                        if errors[key] == 1:
                            print(f"layout {key}: {err}", file=sys.stderr)
                        continue
                    elapsed = time.perf_counter() - start
                    for task in layout.outputs:
                        online = result.as_numpy(layout.outputs[task]).reshape(-1)
                        diff = float(np.abs(online - expected[which][task]).max())
                        skew[key] = max(skew[key], diff)
                if i >= warmup:
                    times[key].append(elapsed)
            if i == warmup - 1:
                counters = server_counters(client)
        breakdowns[batch] = server_breakdown(counters, server_counters(client))
        base = summarize(times["in-process"])
        results.append({"layout": "in-process", "batch": batch, **base})
        for layout in layouts:
            if not times[layout.key]:
                results.append({"layout": layout.key, "batch": batch, "errors": errors[layout.key]})
                continue
            stats = summarize(times[layout.key])
            results.append(
                {
                    "layout": layout.key,
                    "batch": batch,
                    **stats,
                    "x_in_process_p50": stats["p50_ms"] / base["p50_ms"],
                    "max_abs_diff": skew[layout.key],
                    "correct": skew[layout.key] <= TOLERANCE and not errors[layout.key],
                    "errors": errors[layout.key],
                }
            )
        for row in results:
            if row["batch"] == batch and row["layout"] != "in-process" and "p50_ms" in row:
                a = next(r for r in results if r["batch"] == batch and r["layout"] == "a")
                row["x_a_p50"] = row["p50_ms"] / a["p50_ms"]
    return results, breakdowns


def table(results: list[dict], layouts: list[Layout]) -> str:
    names = {
        "in-process": "in-process RankerScorer.score",
        **{x.key: x.description for x in layouts},
    }
    lines = [
        f"{'layout':<52} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} "
        f"{'x in-proc':>9} {'x (a)':>6} {'max|diff|':>10} ok",
    ]
    for row in results:
        key = row["layout"]
        label = names[key] if key == "in-process" else f"{key}  {names[key]}"
        if "p50_ms" not in row:
            lines.append(f"{label:<52} {row['batch']:>5} all {row['errors']} requests failed")
            continue
        extra = (
            f"{row['x_in_process_p50']:>9.2f} {row['x_a_p50']:>6.3f} {row['max_abs_diff']:>10.2e} "
            f"{'yes' if row['correct'] else 'NO'}"
            if row["layout"] != "in-process"
            else f"{1.0:>9.2f} {'':>6} {'':>10}"
        )
        lines.append(
            f"{label:<52} {row['batch']:>5} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['mean_ms']:>8.2f} {extra}"
        )
    return "\n".join(lines)


def breakdown_table(breakdowns: dict[int, dict[str, dict[str, float]]]) -> str:
    lines = [f"{'Triton model (server side, timed requests)':<52} {'batch':>5} {'server ms':>9} "
             f"{'queue ms':>8} {'compute ms':>10}"]  # fmt: skip
    for batch, models in breakdowns.items():
        for name, row in models.items():
            lines.append(
                f"{name:<52} {batch:>5} {row['server_ms']:>9.2f} {row['queue_ms']:>8.2f} "
                f"{row['compute_ms']:>10.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30_000, help="synthetic log rows")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per layout")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the artifacts here")
    parser.add_argument("--out", type=Path, default=HERE / "serving_layouts.json")
    args = parser.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)
    import pyarrow.dataset as ds

    from rankflow.core.spec import DatasetSpec
    from serving.scorer import RankerScorer
    from serving.triton import TritonConfig, TritonServer

    scratch = Path(tempfile.mkdtemp(prefix="rankflow-bench-"))
    workdir = args.workdir or scratch / "artifacts"
    try:
        paths = build_artifacts(workdir, rows=args.rows, seed=args.seed)
        repository = scratch / "repository"
        layouts = export_layouts(paths, repository)
        spec = DatasetSpec.load(paths["spec"])
        scorer = RankerScorer(paths["workflow"], paths["model"], targets=spec.label_columns)
        test = ds.dataset(str(paths["test"]), format="parquet").to_table().to_pandas()
        config = TritonConfig(
            repository,
            models=tuple(m for x in layouts for m in (x.model, *x.load)),
            ready_timeout_s=900,
        )
        load_before = os.getloadavg()
        with TritonServer(config) as server:
            results, breakdowns = measure(
                server,
                layouts,
                scorer,
                test,
                batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
                requests=args.requests,
                warmup=args.warmup,
                seed=args.seed,
            )
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(table(results, layouts))
    print()
    print(breakdown_table(breakdowns))
    report = {
        "layouts": {x.key: {"description": x.description, "model": x.model} for x in layouts},
        "results": results,
        "server_side": {str(batch): models for batch, models in breakdowns.items()},
        "settings": {
            "rows": args.rows,
            "requests": args.requests,
            "warmup": args.warmup,
            "seed": args.seed,
            "tolerance": TOLERANCE,
            "client": "tritonclient.grpc, one request at a time, layouts interleaved randomly",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "python": platform.python_version(),
        },
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
