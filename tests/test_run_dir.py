"""What a finished run directory holds, and that its model loads with plain Keras after `import tfsft`."""

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import tiny_text_config
from tfsft.training import train

PACKAGE = Path(__file__).resolve().parents[1] / "tfsft"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_vocab):
    return train(tiny_text_config(tmp_path_factory.mktemp("run"), tiny_vocab), log=lambda _: None).run_dir


def registered_classes() -> list[str]:
    """Every class in tfsft decorated with `@keras.saving.register_keras_serializable(package="tfsft")`."""
    names = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any("register_keras_serializable" in ast.unparse(d)
                                                      for d in node.decorator_list):
                names.append(node.name)
    return sorted(names)


def test_import_tfsft_registers_every_keras_class_without_the_training_stack():
    names = registered_classes()
    assert {"FusedAdamW", "WarmupLinearDecay", "SequencePooling", "TagCrossentropy"} <= set(names)
    heavy = ("tfsft.training", "tfsft.export", "tensorflow_datasets", "seqeval")
    code = ("import json, sys, keras, tfsft; "
            "print(json.dumps([[n, keras.saving.get_registered_object('tfsft>' + n) is not None] for n in sys.argv[1:]]"
            f" + [[m, m in sys.modules] for m in {heavy!r}]))")
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = dict(json.loads(proc.stdout.splitlines()[-1]))
    assert [n for n in names if not found[n]] == [], "not registered after `import tfsft`"
    assert not any(found[m] for m in heavy), found


def test_model_keras_loads_with_keras_alone_after_import_tfsft(finished_run):
    from tfsft.run_dir import load_run

    loaded = load_run(finished_run)
    features, _ = loaded.task.make_encoder(loaded.tokenizer, 32)(["good film", "dull"])
    expected = loaded.model({k: features[k] for k in loaded.model.input}).numpy()
    code = ("import sys, json, numpy as np, keras, tfsft; "
            "model = keras.models.load_model(sys.argv[1]); "
            "x = {k: np.array(v, 'int32') for k, v in json.loads(sys.stdin.read()).items()}; "
            "print(json.dumps(np.asarray(model(x)).tolist()))")
    inputs = {k: features[k].numpy().tolist() for k in loaded.model.input}
    proc = subprocess.run([sys.executable, "-c", code, str(finished_run / "model.keras")], input=json.dumps(inputs),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(json.loads(proc.stdout.splitlines()[-1]), expected, atol=1e-5)


def test_finished_run_keeps_one_copy_of_the_weights_and_no_optimizer_state(finished_run):
    assert not (finished_run / "checkpoints").exists(), "model.keras holds the best weights"
    assert not (finished_run / "backup").exists(), "the backup (optimizer state) is deleted at the end"
    with zipfile.ZipFile(finished_run / "model.keras") as archive:
        assert not json.loads(archive.read("config.json")).get("compile_config")  # no optimizer, loss or metrics
        weights = archive.extract("model.weights.h5", finished_run / "unzipped")
    with h5py.File(weights) as h5:
        assert "optimizer" not in h5
        values = []
        h5.visititems(lambda name, item: values.append(item.size * item.dtype.itemsize)
                      if isinstance(item, h5py.Dataset) else None)
    from tfsft.run_dir import load_run

    parameters = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in load_run(finished_run).model.weights)
    assert sum(values) == parameters  # exactly the model's weights


def test_keep_backup_keeps_the_resume_state(tmp_path, tiny_vocab):
    run = train(tiny_text_config(tmp_path, tiny_vocab, keep_backup=True), log=lambda _: None).run_dir
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    assert os.listdir(run / "backup")


def test_a_monitor_that_is_not_logged_is_a_config_error(tmp_path):
    from tfsft.config import ConfigError
    from tfsft.training import BestWeights

    callback = BestWeights(tmp_path / "best.weights.h5", "val_f1")
    with pytest.raises(ConfigError, match=r"train.monitor: 'val_f1' is not logged; the logged metrics are loss, "
                                          r"val_accuracy"):
        callback.on_epoch_end(0, {"loss": 0.5, "val_accuracy": 0.7})


def test_a_kerashub_task_model_reloads_without_optimizer_warnings(tmp_path):
    """KerasHub task models compile themselves when built; the saved file has no optimizer state for that."""
    import warnings

    import keras_hub

    from tfsft.run_dir import load_model, without_training_state

    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=8)
    model = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    model.fit({"token_ids": np.ones((2, 8), "int32"), "padding_mask": np.ones((2, 8), "int32")},
              np.ones((2, 8), "int32"), verbose=0)
    with without_training_state(model):
        model.save(tmp_path / "model.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = load_model(tmp_path / "model.keras")
    assert not [w for w in caught if "optimizer" in str(w.message)], [str(w.message) for w in caught]
    np.testing.assert_allclose(reloaded.backbone.get_weights()[0], backbone.get_weights()[0])
