"""The evaluation step's HTML page: every binary task's ROC curve, as inline SVG (no plotting
library in the step, and the Kubeflow UI renders the page as is)."""

from __future__ import annotations

from html import escape

from components.evaluation.evaluate import Evaluation

_SIZE = 320
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def roc_page(evaluation: Evaluation) -> str:
    """An HTML page with one ROC plot holding every binary task's curve."""
    binary = [t for t in evaluation.tasks.values() if t.roc is not None]
    paths, legend = [], []
    for i, task in enumerate(binary):
        fpr, tpr, _ = task.roc  # type: ignore[misc]
        points = " ".join(
            f"{x * _SIZE:.1f},{(1 - y) * _SIZE:.1f}" for x, y in zip(fpr, tpr, strict=True)
        )
        colour = _COLOURS[i % len(_COLOURS)]
        paths.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        auc = task.metrics["auc"]
        oracle = task.metrics.get("oracle_auc")
        label = f"{task.task}: AUC {auc:.4f}" + (f" (oracle {oracle:.4f})" if oracle else "")
        legend.append(f'<li style="color:{colour}">{escape(label)}</li>')
    diagonal = f'<line x1="0" y1="{_SIZE}" x2="{_SIZE}" y2="0" stroke="#999" stroke-dasharray="4"/>'
    body = (
        f'<svg width="{_SIZE}" height="{_SIZE}" viewBox="0 0 {_SIZE} {_SIZE}" '
        'style="border:1px solid #ccc">' + diagonal + "".join(paths) + "</svg>"
        if binary
        else "<p>No binary task: no ROC curve.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ROC curves</title></head>"
        "<body><h1>ROC curves (test split)</h1>"
        "<p>False positive rate across, true positive rate up; a task given another is drawn "
        "on that task's positives.</p>"
        f"{body}<ul>{''.join(legend)}</ul></body></html>\n"
    )
