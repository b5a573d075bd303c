"""Plots of a local run: ROC curve and reliability diagram per task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot_evaluation(evaluation: Mapping[str, Any], path: Path) -> Path:
    """One row per task: ROC (with the oracle AUC in the legend) and calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = evaluation["tasks"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4.2 * len(tasks)), squeeze=False)
    for row, (name, task) in zip(axes, tasks.items(), strict=True):
        fpr, tpr, _ = task["roc"]
        label = f"model AUC {task['auc']:.4f}"
        if task["oracle_auc"] is not None:
            label += f" (oracle {task['oracle_auc']:.4f})"
        row[0].plot(fpr, tpr, label=label)
        row[0].plot([0, 1], [0, 1], linestyle=":", color="grey")
        row[0].set(title=f"{name}: ROC", xlabel="false positive rate", ylabel="true positive rate")
        row[0].legend(loc="lower right")
        bins = task["calibration"]
        predicted = [b["mean_predicted"] for b in bins]
        observed = [b["observed_rate"] for b in bins]
        top = max(predicted + observed) * 1.05
        row[1].plot(predicted, observed, marker="o", label=f"ECE {task['ece']:.4f}")
        row[1].plot([0, top], [0, top], linestyle=":", color="grey")
        row[1].set(
            title=f"{name}: calibration (equal-mass bins)",
            xlabel="mean predicted probability",
            ylabel="observed rate",
        )
        row[1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
