"""ETL: NVTabular fit + transform of the train split against pyarrow I/O and a pandas version.

Per log size, each repeat runs three contenders on the same train parquet, in a rotated order so
that load from other processes hits them alike:

* ``rankflow``: the feature step as shipped (``run_feature_engineering`` on the train split
  alone): NVTabular fits, and on the CPU the compiled workflow transforms (same output);
* ``nvtabular``: NVTabular alone, ``build_workflow`` fitted on train and its own transform
  applied to train, written with ``to_parquet`` (the step before the compiled transform);
* ``floor``: pyarrow reading the same parquet and writing it back out (same rows and columns);
* ``pandas``: the same transforms in plain pandas (``PandasWorkflow``), read and written with
  pyarrow.

The first size gets one untimed pass of each first (imports, first-call costs). rows/s = train
rows / wall seconds; the figures are medians over repeats, and the ratios are taken
between medians of the same run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import Workspace, median, parquet_rows, progress

if TYPE_CHECKING:
    import pandas as pd

    from rankflow.core.spec import DatasetSpec

logger = logging.getLogger(__name__)

#: NVTabular's Categorify conventions (23.08): 0 is reserved, 1 is null, 2 is out-of-vocabulary.
NULL_INDEX, OOV_INDEX, FIRST_INDEX = 1, 2, 3


@dataclass
class PandasWorkflow:
    """The transforms ``build_workflow`` builds, in plain pandas/numpy.

    Categorify: values seen at least ``freq_threshold`` times in train get contiguous codes from 3,
    most frequent first; nulls -> 1, unseen/rare -> 2 (int32). HashBucket: a hash of the value
    modulo the bucket count. Continuous: fill nulls with train's median, then (x - mean) / std of
    train. Targets pass through unchanged.
    """

    spec: DatasetSpec
    vocab: dict[str, pd.Index] = field(default_factory=dict)
    moments: dict[str, tuple[float, float]] = field(default_factory=dict)
    medians: dict[str, float] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> PandasWorkflow:
        import pandas as pd

        hashed = dict(self.spec.categorify.hash_buckets)
        threshold = self.spec.categorify.freq_threshold
        for column in self.spec.categorical_columns:
            if column in hashed:
                continue
            counts = frame[column].value_counts(dropna=True)
            counts = counts[counts >= threshold]
            # Most frequent first, ordered as NVTabular orders them: sorted by value, then by count
            # descending with the same (unstable) sort, so equal counts tie-break alike.
            table = pd.DataFrame({"value": counts.index, "size": counts.to_numpy()})
            table = table.sort_values("value", ignore_index=True)
            table = table.sort_values("size", ascending=False, ignore_index=True)
            self.vocab[column] = pd.Index(table["value"])
        for column in self.spec.continuous:
            # Nulls take the train median, as NVTabular's FillMedian does.
            self.medians[column] = float(frame[column].median())
            values = frame[column].fillna(self.medians[column]).to_numpy(dtype=np.float64)
            self.moments[column] = (float(values.mean()), float(values.std(ddof=1)))
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        hashed = dict(self.spec.categorify.hash_buckets)
        out: dict[str, np.ndarray] = {}
        for column in self.spec.categorical_columns:
            values = frame[column]
            if column in hashed:
                codes = pd.util.hash_array(values.astype(str).to_numpy()) % hashed[column]
                out[column] = codes.astype(np.int64)
                continue
            found = self.vocab[column].get_indexer(values)
            codes = np.where(found >= 0, found + FIRST_INDEX, OOV_INDEX)
            codes[values.isna().to_numpy()] = NULL_INDEX
            out[column] = codes.astype(np.int32)
        for column in self.spec.continuous:
            mean, std = self.moments[column]
            filled = frame[column].fillna(self.medians[column]).to_numpy(dtype=np.float64)
            out[column] = ((filled - mean) / (std or 1.0)).astype(np.float32)
        for task in self.spec.tasks:
            out[task.name] = frame[task.column].to_numpy()
        return pd.DataFrame(out)


def _read(path: Path):
    import pyarrow.dataset as ds

    files = sorted(str(f) for f in path.glob("*.parquet")) if path.is_dir() else [str(path)]
    return ds.dataset(files, format="parquet").to_table()


def run_floor(source: Path, out: Path) -> None:
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    pq.write_table(_read(source), out / "part_0.parquet")


def run_pandas(spec: DatasetSpec, source: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = _read(source).to_pandas()
    transformed = PandasWorkflow(spec).fit(frame).transform(frame)
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(transformed, preserve_index=False), out / "part_0.parquet")


def run_rankflow(spec: DatasetSpec, source: Path, out: Path) -> None:
    from components.features.workflow import FeatureConfig, run_feature_engineering

    run_feature_engineering(
        spec,
        {"train": source},
        workflow_dir=out / "workflow",
        outputs={"train": out / "train"},
        config=FeatureConfig(),
    )


def run_nvtabular(spec: DatasetSpec, source: Path, out: Path) -> None:
    from merlin.io import Dataset

    from components.features.workflow import build_workflow
    from rankflow.core.device import gpu_available

    engine = {"engine": "parquet", "part_size": "64MB", "cpu": not gpu_available()}
    with tempfile.TemporaryDirectory(prefix="rankflow-bench-categories-") as categories:
        workflow = build_workflow(spec, categories_dir=categories)
        workflow.fit(Dataset(str(source), **engine))
        transformed = workflow.transform(Dataset(str(source), **engine))
        transformed.to_parquet(str(out), shuffle=None, output_files=1)


def compare(spec: DatasetSpec, nvt_out: Path, pandas_out: Path) -> dict[str, Any]:
    """How far the pandas version agrees with NVTabular's output, row by row."""
    nvt = _read(nvt_out).to_pandas()
    pdf = _read(pandas_out).to_pandas()
    check: dict[str, Any] = {
        "same_rows": len(nvt) == len(pdf),
        "same_columns": sorted(nvt.columns) == sorted(pdf.columns),
    }
    if not (check["same_rows"] and check["same_columns"]):
        check["ok"] = False
        return check
    check["continuous_allclose"] = all(
        np.allclose(nvt[c].to_numpy(), pdf[c].to_numpy(), rtol=1e-4, atol=1e-4)
        for c in spec.continuous
    )
    check["targets_equal"] = all(
        np.array_equal(nvt[c].to_numpy(), pdf[c].to_numpy()) for c in spec.task_names
    )
    # Codes equal where both encoders agree on vocabulary order; the share says how often.
    check["categorical_code_match"] = {
        c: float((nvt[c].to_numpy() == pdf[c].to_numpy()).mean()) for c in spec.categorical_columns
    }
    check["categorical_equal"] = all(v == 1.0 for v in check["categorical_code_match"].values())
    check["ok"] = bool(check["continuous_allclose"] and check["targets_equal"])
    return check


def bench_etl(workspace: Workspace, *, sizes: list[int], repeats: int) -> dict[str, Any]:
    from rankflow.core.spec import DatasetSpec

    results = []
    for rows in sizes:
        prepared = workspace.prepared(rows)
        spec = DatasetSpec.load(prepared["spec"])
        source = prepared["train"]
        train_rows = parquet_rows(source)
        contenders = {
            "rankflow": lambda out, s=spec, src=source: run_rankflow(s, src, out),
            "nvtabular": lambda out, s=spec, src=source: run_nvtabular(s, src, out),
            "floor": lambda out, src=source: run_floor(src, out),
            "pandas": lambda out, s=spec, src=source: run_pandas(s, src, out),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        scratch = workspace.root / f"etl-{rows}"
        check: dict[str, Any] = {}
        if rows == sizes[0]:
            # One untimed pass of each on the first size: imports, Dask start-up, first-call costs.
            for name, run in contenders.items():
                run(scratch / f"{name}-warmup")
                shutil.rmtree(scratch / f"{name}-warmup", ignore_errors=True)
        for repeat in progress(range(repeats), desc=f"etl {rows} rows"):
            names = list(contenders)
            names = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in names:
                out = scratch / f"{name}-{repeat}"
                start = time.perf_counter()
                contenders[name](out)
                times[name].append(time.perf_counter() - start)
            if repeat == 0:
                check = compare(spec, scratch / "nvtabular-0", scratch / "pandas-0")
            for name in names:
                shutil.rmtree(scratch / f"{name}-{repeat}", ignore_errors=True)
        seconds = {name: median(values) for name, values in times.items()}
        rows_per_s = {name: train_rows / s for name, s in seconds.items()}
        results.append(
            {
                "log_rows": rows,
                "train_rows": train_rows,
                "repeats": repeats,
                "seconds": seconds,
                "seconds_all": times,
                "rows_per_s": rows_per_s,
                "x_floor": seconds["rankflow"] / seconds["floor"],
                "speedup_vs_pandas": seconds["pandas"] / seconds["rankflow"],
                "nvtabular_x_floor": seconds["nvtabular"] / seconds["floor"],
                "nvtabular_speedup_vs_pandas": seconds["pandas"] / seconds["nvtabular"],
                "pandas_check": check,
            }
        )
        logger.info("etl %d rows: %s", rows, results[-1]["rows_per_s"])
    return {"results": results}
