"""Shared helpers of the benchmark suite: artifacts built from scratch, timing statistics."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = logging.getLogger(__name__)

SEED = 11


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """p50 / p99 / mean in ms over request ``seconds``."""
    import numpy as np

    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def progress(iterable, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, leave=False, file=sys.stderr, **kwargs)


@dataclass
class Workspace:
    """Artifacts of one benchmark run, built on demand under ``root`` and never reused across runs.

    ``prepared(rows)`` -> the synthetic log of ``rows`` rows, validated and split;
    ``features(rows)`` -> its NVTabular features + fitted workflow; ``ranker(rows)`` -> a ranker
    trained one epoch on them. Each is built once per run (the serving and training benchmarks
    share them) with the project's own step functions.
    """

    root: Path
    seed: int = SEED
    _prepared: dict[tuple[int, bool], dict[str, Path]] = field(default_factory=dict)
    _features: dict[int, dict[str, Path]] = field(default_factory=dict)
    _rankers: dict[int, Path] = field(default_factory=dict)

    def prepared(self, rows: int, *, content: bool = False) -> dict[str, Path]:
        """``content``: the log with lists, text and cold ads (``SyntheticConfig.content``)."""
        if (rows, content) not in self._prepared:
            from components.data.prepare import prepare_data
            from components.data.split import SplitConfig
            from components.data.synthetic import SyntheticConfig

            root = self.root / f"prepared-{rows}{'-content' if content else ''}"
            outputs = {name: root / name for name in ("train", "valid", "test")}
            logger.info("generating a %d-row synthetic log", rows)
            prepare_data(
                "synthetic",
                spec_path=None,
                synthetic=SyntheticConfig(
                    rows=rows, seed=self.seed, chunk_rows=min(rows, 250_000), content=content
                ),
                split=SplitConfig(),
                outputs=outputs,
                spec_out=root / "spec.yaml",
            )
            self._prepared[rows, content] = {**outputs, "spec": root / "spec.yaml"}
        return self._prepared[rows, content]

    def features(self, rows: int) -> dict[str, Path]:
        if rows not in self._features:
            from components.features.workflow import FeatureConfig, run_feature_engineering
            from rankflow.core.spec import DatasetSpec

            prepared = self.prepared(rows)
            root = self.root / f"features-{rows}"
            outputs = {name: root / name for name in ("train", "valid", "test")}
            run_feature_engineering(
                DatasetSpec.load(prepared["spec"]),
                {name: prepared[name] for name in outputs},
                workflow_dir=root / "workflow",
                outputs=outputs,
                config=FeatureConfig(),
            )
            self._features[rows] = {**outputs, "workflow": root / "workflow"}
        return self._features[rows]

    def ranker(self, rows: int) -> Path:
        if rows not in self._rankers:
            from components.training.ranker import RankerConfig, train_ranker
            from rankflow.core.spec import DatasetSpec

            features = self.features(rows)
            model_dir = self.root / f"ranker-{rows}"
            logger.info("training the serving ranker on %d rows", rows)
            # Keras' per-epoch line goes to stderr: stdout carries the results table.
            with contextlib.redirect_stdout(sys.stderr):
                train_ranker(
                    DatasetSpec.load(self.prepared(rows)["spec"]),
                    features["train"],
                    features["valid"],
                    model_dir=model_dir,
                    config=RankerConfig(epochs=1, batch_size=1024, seed=self.seed),
                )
            self._rankers[rows] = model_dir
        return self._rankers[rows]


def parquet_rows(path: Path) -> int:
    import pyarrow.dataset as ds

    return int(ds.dataset(str(path), format="parquet").count_rows())
