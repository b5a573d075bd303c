"""Plots of a local run: per binary task its ROC curve and reliability diagram; per regression
task its binned predicted-vs-observed means."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot_evaluation(evaluation: Mapping[str, Any], path: Path) -> Path:
    """One row per task (binary: ROC with the oracle AUC in the legend, and calibration;
    regression: mean predicted vs mean observed per equal-mass bin, and the metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = evaluation["tasks"]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10, 4.2 * len(tasks)), squeeze=False)
    for row, (name, task) in zip(axes, tasks.items(), strict=True):
        metrics = task["metrics"]
        on = f" (given {task['given']})" if task.get("given") else ""
        bins = task["calibration"]
        predicted = [b["mean_predicted"] for b in bins]
        observed = [b["observed_rate"] for b in bins]
        low = min(predicted + observed + [0.0])
        top = max(predicted + observed) * 1.05
        if task["kind"] == "binary":
            fpr, tpr, _ = task["roc"]
            label = f"model AUC {metrics['auc']:.4f}"
            if metrics.get("oracle_auc") is not None:
                label += f" (oracle {metrics['oracle_auc']:.4f})"
            row[0].plot(fpr, tpr, label=label)
            row[0].plot([0, 1], [0, 1], linestyle=":", color="grey")
            row[0].set(
                title=f"{name}{on}: ROC", xlabel="false positive rate", ylabel="true positive rate"
            )
            row[0].legend(loc="lower right")
            legend = f"ECE {metrics['ece']:.4f}, Σp/Σy {metrics['calibration_ratio']:.3f}"
            axis, xlabel, ylabel = row[1], "mean predicted probability", "observed rate"
        else:
            row[1].axis("off")
            lines = [f"{name}{on}"] + [
                f"{key}: {metrics[key]:.4f}"
                for key in ("rmse", "bayes_rmse", "mean_rmse", "mae", "r2", "oracle_r2")
                if metrics.get(key) is not None
            ]
            row[1].text(0.05, 0.95, "\n".join(lines), va="top", family="monospace")
            legend = f"R² {metrics['r2']:.4f}, Σp/Σy {metrics['calibration_ratio']:.3f}"
            axis, xlabel, ylabel = row[0], "mean prediction", "mean target"
        axis.plot(predicted, observed, marker="o", label=legend)
        axis.plot([low, top], [low, top], linestyle=":", color="grey")
        axis.set(title=f"{name}: calibration (equal-mass bins)", xlabel=xlabel, ylabel=ylabel)
        axis.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
