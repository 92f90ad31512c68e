"""curves.png from a run's history: the kept interval is the best monitored one, marked on the plot."""

import math

import pytest

from tfsft.curves import kept_index, plot_curves, read_history

HISTORY = """epoch,accuracy,learning_rate,loss,val_accuracy,val_loss
0,0.6,0.001,0.70,0.70,0.62
1,0.8,0.0008,0.45,0.85,0.41
2,0.9,0.0005,0.30,0.83,0.47
3,0.95,0.0002,0.20,0.85,0.55
"""


def test_the_kept_interval_is_the_first_best_one():
    assert kept_index([0.7, 0.85, 0.83, 0.85], lower_is_better=False) == 1  # BestWeights keeps the first best
    assert kept_index([0.62, 0.41, 0.47, math.nan], lower_is_better=True) == 1
    assert kept_index([math.nan], lower_is_better=True) is None


@pytest.mark.parametrize("monitor, lower, step", [("val_accuracy", False, 40), ("val_loss", True, 40),
                                                  ("loss", True, 80)])
def test_plot_curves_marks_the_kept_step(tmp_path, monitor, lower, step):
    (tmp_path / "history.csv").write_text(HISTORY)
    out = tmp_path / "run" / "curves.png"
    assert plot_curves(tmp_path / "history.csv", out, monitor, interval_steps=20, lower_is_better=lower) == step
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_missing_values_read_as_nan(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,0.7,NA\n1,0.5,\n")
    history = read_history(tmp_path / "history.csv")
    assert history["loss"] == [0.7, 0.5] and all(math.isnan(v) for v in history["val_loss"])


def test_an_empty_history_draws_nothing(tmp_path):
    (tmp_path / "history.csv").write_text("")
    assert read_history(tmp_path / "history.csv") == {}
    assert plot_curves(tmp_path / "history.csv", tmp_path / "c.png", "loss", 10, True) is None
    assert not (tmp_path / "c.png").exists()
