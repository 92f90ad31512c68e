"""Evaluation metrics, the printed table, `metrics.json` and the confusion matrix.

Metric implementations come from scikit-learn and SciPy (well-tested, standard
definitions); this module only selects and formats them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def classification_metrics(targets: np.ndarray, probabilities: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro F1, binary F1 (2 classes; positive = class 1) and MCC.

    Args:
        targets: (N,) int class ids.
        probabilities: (N, C) predicted probabilities.
        label_names: C display names.
    """
    from sklearn import metrics as skm

    predictions = probabilities.argmax(axis=-1)
    classes = list(range(len(label_names)))
    result = {
        "examples": int(len(targets)),
        "accuracy": float(skm.accuracy_score(targets, predictions)),
        "macro_f1": float(skm.f1_score(targets, predictions, average="macro", labels=classes, zero_division=0)),
        "mcc": float(skm.matthews_corrcoef(targets, predictions)),
    }
    if len(label_names) == 2:
        result["binary_f1"] = float(skm.f1_score(targets, predictions, pos_label=1, zero_division=0))
    result["confusion_matrix"] = skm.confusion_matrix(targets, predictions, labels=classes).tolist()
    return result


def regression_metrics(targets: np.ndarray, scores: np.ndarray) -> dict:
    """Pearson and Spearman correlation and mean squared error."""
    from scipy import stats

    return {
        "examples": int(len(targets)),
        "pearson": float(stats.pearsonr(targets, scores)[0]),
        "spearman": float(stats.spearmanr(targets, scores)[0]),
        "mse": float(np.mean((targets - scores) ** 2)),
    }


def format_table(metrics: dict, title: str = "metrics") -> str:
    """A two-column text table of the scalar metrics."""
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))]
    width = max([len(k) for k, _ in rows] + [len(title)])
    lines = [f"{title:<{width}}  value", f"{'-' * width}  ------"]
    for key, value in rows:
        lines.append(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return "\n".join(lines)


def write_metrics(metrics: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def plot_confusion_matrix(matrix: list[list[int]], label_names: list[str], path: Path) -> None:
    """Saves the confusion matrix (rows: true, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    size = max(3.0, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
