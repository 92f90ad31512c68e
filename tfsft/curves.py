"""`curves.png`: training and validation curves of a run, with the kept checkpoint marked.

Read from `logs/history.csv` (Keras' `CSVLogger`: one row per interval of
`train.eval_every_steps` steps). The left panel has the training and
validation loss, the right one the monitored metric (when it is not a loss),
both against the optimizer step at the end of each interval. The interval
whose weights the run kept (`model.keras`: the best `train.monitor` value,
the one early stopping restores) is marked, so overfitting shows as a
validation curve that turns while the training curve goes on down.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


def _number(text) -> float:
    """A logged value; NaN for an empty cell or CSVLogger's "NA" (a metric missing that interval)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_history(path: Path) -> dict[str, list[float]]:
    """Column → one value per interval (NaN where a row has none); `epoch` counts the intervals from 0."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    return {c: [_number(row.get(c)) for row in rows] for c in columns}


def kept_index(values: list[float], lower_is_better: bool) -> int | None:
    """The first interval with the best finite value (what `BestWeights` keeps), None when there is none."""
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    best = min(v for v, _ in finite) if lower_is_better else max(v for v, _ in finite)
    return next(i for v, i in finite if v == best)


def plot_curves(history_csv: Path, out: Path, monitor: str, interval_steps: int, lower_is_better: bool) -> int | None:
    """Writes `out` (PNG) from `history_csv`; returns the step of the kept interval (None without one).

    Args:
        history_csv: the run's `logs/history.csv`.
        out: the PNG to write.
        monitor: the logged metric that chose the kept weights (`val_accuracy`, `val_loss`, `loss`, ...).
        interval_steps: optimizer steps per row of the history.
        lower_is_better: whether a lower `monitor` is better (a loss or an error).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(history_csv)
    if not history.get("epoch"):
        return None
    steps = [interval_steps * (int(epoch) + 1) for epoch in history["epoch"]]
    kept = kept_index(history.get(monitor, []), lower_is_better)
    metric = monitor.removeprefix("val_")
    panels = ["loss"] + ([metric] if "loss" not in metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        for column, label in ((name, "training"), (f"val_{name}", "validation")):
            if column in history:
                ax.plot(steps, history[column], marker="o", markersize=3, label=label)
        if kept is not None:
            ax.axvline(steps[kept], color="grey", linestyle="--", linewidth=1,
                       label=f"kept: step {steps[kept]} (best {monitor})")
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return None if kept is None else steps[kept]
