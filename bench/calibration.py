"""Which calibrator: beta, Platt, temperature or isotonic, each fitted on a run's validation
split and judged on its test split, for every binary task.

    python -m bench.calibration [RUN_DIR ...]     # default: runs/latest

A run directory is what ``rankflow run`` leaves (``make run``: ``runs/latest``; ``make
bench-real``: ``build/bench-real/<log>/runs/latest``). The trained ranker serves beta-calibrated
probabilities; with its calibration set to the identity it scores what calibration was fitted
on, so every calibrator starts from the same scores. A given task is fitted and
judged on its given task's positives, as the training and evaluation steps do.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_isotonic(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weighted pool-adjacent-violators on ``z``, interpolated linearly between block centres
    (as an in-graph export would have to)."""
    order = np.argsort(z, kind="stable")
    z, y, w = z[order], y[order], w[order]
    values: list[float] = []
    weights: list[float] = []
    sums: list[float] = []  # weighted sum of z per block, for its centre
    for zi, yi, wi in zip(z, y, w, strict=True):
        values.append(float(yi))
        weights.append(float(wi))
        sums.append(float(zi * wi))
        while len(values) > 1 and values[-2] >= values[-1]:
            wt = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wt
            weights[-2], sums[-2] = wt, sums[-2] + sums[-1]
            del values[-1], weights[-1], sums[-1]
    centres = np.asarray(sums) / np.asarray(weights)
    levels = np.clip(np.asarray(values), _EPS, 1 - _EPS)
    return lambda x: np.interp(x, centres, levels)


@dataclass(frozen=True)
class Scores:
    """One binary task's uncalibrated logits, labels and weights on a split's rows."""

    z: np.ndarray
    y: np.ndarray
    w: np.ndarray


def compare(
    valid: Scores, test: Scores, *, served: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Each calibrator fitted on ``valid``, judged on ``test``: ECE, log-loss, Σp/Σy.
    ``served``: what the ranker itself serves on the test rows (beta, its shift then set so the
    mean matches train and valid pooled), judged beside them."""
    from components.evaluation import metrics as m
    from components.training.ranker import fit_beta, fit_platt

    beta = fit_beta(_sigmoid(valid.z), valid.y, valid.w)
    a, b = fit_platt(valid.z, valid.y, valid.w)
    t, _ = fit_platt(valid.z, valid.y, valid.w, shift=False)
    isotonic = fit_isotonic(valid.z, valid.y, valid.w)
    candidates = {
        **({"served": served} if served is not None else {}),
        "none": _sigmoid(test.z),
        "temperature": _sigmoid(t * test.z),
        "platt": _sigmoid(a * test.z + b),
        "beta": _sigmoid(
            beta[0] * np.log(_sigmoid(test.z)) - beta[1] * np.log(_sigmoid(-test.z)) + beta[2]
        ),
        "isotonic": isotonic(test.z),
    }
    return {
        name: {
            "ece": m.expected_calibration_error(test.y, p, test.w),
            "logloss": m.logloss(test.y, p, test.w),
            "calibration_ratio": m.calibration_ratio(test.y, p, test.w),
        }
        for name, p in candidates.items()
    }


def _artifacts(run_dir: Path) -> dict[str, Path]:
    found = sorted((run_dir / "artifacts").glob("*/train-ranker/ranker"))
    if not found:
        raise SystemExit(f"error: no trained ranker under {run_dir}/artifacts: pass a run dir")
    root = found[-1].parent.parent
    return {
        "spec": root / "prepare-data" / "dataset_spec",
        "ranker": root / "train-ranker" / "ranker",
        "valid": root / "engineer-features" / "valid_features",
        "test": root / "engineer-features" / "test_features",
    }


def measure(run_dir: Path) -> dict[str, dict[str, object]]:
    from components.training.ranker import (
        label_columns,
        read_labels,
        reset_calibration,
        sample_weights,
    )
    from rankflow.core.artifacts import load_ranker, predict
    from rankflow.core.spec import DatasetSpec

    paths = _artifacts(run_dir)
    spec = DatasetSpec.load(paths["spec"])
    model = load_ranker(paths["ranker"])
    served = {split: predict(model, paths[split]) for split in ("valid", "test")}
    reset_calibration(model)
    splits: dict[str, Mapping[str, np.ndarray]] = {}
    for split in ("valid", "test"):
        labels = read_labels(paths[split], label_columns(spec))
        splits[split] = {
            "served": served[split],
            "raw": predict(model, paths[split]),
            "labels": labels,
            "weights": sample_weights(spec, labels),
        }
    out: dict[str, dict[str, object]] = {}
    for task in spec.tasks:
        if task.kind != "binary":
            continue
        scores, served = {}, {}
        for split, data in splits.items():
            keep = data["weights"][task.name] > 0
            served[split] = data["served"][task.name][keep]
            scores[split] = Scores(
                _logit(data["raw"][task.name][keep]),
                data["labels"][task.name][keep],
                data["weights"][task.name][keep],
            )
        out[task.name] = {
            "valid_rows": int(scores["valid"].y.size),
            "test_rows": int(scores["test"].y.size),
            "calibrators": compare(scores["valid"], scores["test"], served=served["test"]),
        }
    return out


def render(results: Mapping[str, Mapping[str, Mapping[str, object]]]) -> str:
    lines = [
        "| run | task | valid rows | calibrator | test ECE | test log-loss | test Σp/Σy |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for run, tasks in results.items():
        for task, row in tasks.items():
            for name, v in row["calibrators"].items():  # type: ignore[union-attr]
                lines.append(
                    f"| {run} | {task} | {row['valid_rows']:,} | {name} | {v['ece']:.4f} | "
                    f"{v['logloss']:.5f} | {v['calibration_ratio']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="*", type=Path, default=[ROOT / "runs" / "latest"])
    args = parser.parse_args(argv)
    import datetime

    results = {str(run): measure(run) for run in args.runs}
    runs = " ".join(str(run) for run in args.runs)
    sys.stdout.write(
        f"Measured on {datetime.date.today().isoformat()} with `python -m bench.calibration {runs}`"
        " (fitted on each run's validation split, judged on its test split; `served`: what the"
        " ranker serves, beta calibration with its mean set to train and valid pooled).\n\n"
        + render(results)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
