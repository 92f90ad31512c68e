"""MultiWorkerMirroredStrategy with two workers on 127.0.0.1: same weights as one worker; a killed worker resumes.

Every worker is its own Python process (`tfsft.launch.Workers`, what `tfsft
launch` uses). Tolerance: the chief's final weights are within 1e-5 (absolute)
of a one-worker run with the same global batch and seed; the runs move the
weights by more than 1e-3.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import tiny_model, tiny_train
from tfsft.config import save_config
from tfsft.experiment import config_from_mapping
from tfsft.launch import Workers, train_command

WORKER = Path(__file__).with_name("worker.py")
TOLERANCE = 1e-5


def weights(run: Path) -> list[np.ndarray]:
    return [w.numpy() for w in keras.saving.load_model(run / "model.keras", compile=False).weights]


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_vocab):
    """A tiny config (64 rows, global batch 8, 3 intervals of 4 steps) and its one-worker run."""
    root = tmp_path_factory.mktemp("multi_worker")
    rows = [{"text": t, "label": l} for t, l in
            [("good film", "pos"), ("bad dull film", "neg"), ("a very fun story", "pos"), ("boring", "neg")] * 16]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = {**tiny_model(tiny_vocab), "dropout": 0.0}
    config = config_from_mapping({
        "name": "mw", "run_dir": str(root / "one"), "model": model,
        "task": {"name": "text_classification", "dropout": 0.0},  # no dropout: no random numbers to differ
        "data": {"files": {"train": str(root / "train.jsonl"), "validation": str(root / "train.jsonl")}},
        "train": tiny_train(max_steps=12, eval_every_steps=4, clipnorm=0.01, shuffle_buffer=64),
    })
    save_config(config, root / "config.yaml")
    subprocess.run([sys.executable, str(WORKER), str(root / "config.yaml"), "--set", "train.strategy=default",
                    "--moved", str(root / "moved.json")], check=True, capture_output=True, timeout=600)
    assert json.loads((root / "moved.json").read_text()) > 1e-3, "training moves the weights far beyond the tolerance"
    return root, weights(root / "one")


def test_two_workers_finish_and_the_chief_equals_one_worker(setup):
    root, one = setup
    proc = subprocess.run([sys.executable, "-m", "tfsft.cli", "launch", "--workers", "2", str(root / "config.yaml"),
                           "--set", f"run_dir={root / 'two'}"], capture_output=True, text=True, timeout=600, check=False)
    log = proc.stdout
    assert proc.returncode == 0, (log + proc.stderr)[-3000:]
    assert "[worker 0] Training 12 steps" in log and "[worker 1] Training 12 steps" in log
    assert "strategy CollectiveAllReduceStrategy (2 replicas)" in log  # = MultiWorkerMirroredStrategy
    assert max_difference(one, weights(root / "two")) < TOLERANCE
    assert (root / "two" / "metrics.json").exists() and not (root / "two" / "workers").exists()
    assert not (root / "two" / "backup").exists()


def test_a_killed_worker_and_a_restarted_cluster_resume_from_the_last_backup(setup):
    root, one = setup
    run = root / "resumed"
    out = io.StringIO()
    crash = [sys.executable, str(WORKER), str(root / "config.yaml"), "--set", f"run_dir={run}",
             "--set", "train.strategy=multi_worker", "--crash-worker", "1", "--crash-step", "10"]
    crashing = Workers([crash] * 2, out=out)
    assert crashing.wait() != 0, "worker 1 was killed at step 10; the chief is stopped"
    for backup in (run / "backup", run / "workers" / "worker_1" / "backup"):
        assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2, out.getvalue()[-3000:]
    assert not (run / "model.keras").exists()

    out = io.StringIO()
    workers = Workers([train_command(str(root / "config.yaml"), [f"run_dir={run}"])] * 2, out=out)
    assert workers.wait() == 0, out.getvalue()[-3000:]
    log = out.getvalue()
    assert "[worker 0] Resuming from step 8" in log and "[worker 1] Resuming from step 8" in log
    assert max_difference(one, weights(run)) < TOLERANCE
    assert not (run / "workers").exists()
