"""TPU readiness checked on the CPU: fixed batch shapes, an XLA train step with static shapes, XLA = non-XLA.

The shipped SST-2 config, shrunk (tiny random BERT, 256 rows, 6 steps, no
dropout so both runs draw no random numbers), trained once as usual and once
with the TPU settings (`jit_compile`, hence fixed-shape batches and dense
embedding gradients, and `steps_per_execution: 3`): the logged losses agree to
a relative 1e-3.
"""

import csv

import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.conftest import REPO, tiny_model, tiny_train
from tfsft.data.pipeline import evaluation_dataset, static_lengths, training_dataset
from tfsft.experiment import config_from_mapping
from tfsft.models.backbones import load_backbone
from tfsft.optimization import make_optimizer
from tfsft.tasks import get_task
from tfsft.training import train


def shrunk_sst2(tmp_path, vocab, data_dir, name: str, **train_overrides):
    """configs/sst2_minilm.yaml with a tiny random model (no dropout), 256 rows and 6 steps."""
    raw = yaml.safe_load((REPO / "configs" / "sst2_minilm.yaml").read_text())
    raw["run_dir"] = str(tmp_path / name)
    raw["model"] = {**tiny_model(vocab), "dropout": 0.0}
    raw["task"]["dropout"] = 0.0
    raw["data"].update(data_dir=str(data_dir), max_examples=256)
    raw["train"] = tiny_train(eval_batch_size=256, **train_overrides)  # one validation batch per length: few XLA programs
    return config_from_mapping(raw)


def history(run) -> list[dict]:
    with open(run / "logs" / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_xla_with_the_tpu_input_settings_trains_like_the_usual_run(tmp_path, tiny_vocab, data_dir):
    usual = shrunk_sst2(tmp_path, tiny_vocab, data_dir, "usual")
    tpu = shrunk_sst2(tmp_path, tiny_vocab, data_dir, "tpu", jit_compile=True, steps_per_execution=3)
    lines = []
    train(usual, log=lambda _: None)
    train(tpu, log=lines.append)
    assert any(line.startswith("Training 6 steps (2 x 3;") for line in lines)
    expected, got = history(tmp_path / "usual"), history(tmp_path / "tpu")
    assert len(expected) == len(got) == 2
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in got], [float(r[key]) for r in expected], rtol=1e-3)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_vocab, data_dir):
    """The shrunk SST-2 config's task, model parts and encoded splits."""
    config = shrunk_sst2(tmp_path_factory.mktemp("tpu"), tiny_vocab, data_dir, "run", jit_compile=True)
    task = get_task(config)
    examples = task.read("train")
    task.fit_labels(examples)
    backbone, tokenizer = load_backbone(config.model)
    encoder = task.make_encoder(tokenizer, config.model.sequence_length)
    train_split = task.encode(examples, encoder, training=True)
    val_split = task.encode(task.read("validation"), encoder, training=False)
    return config, task, backbone, encoder, train_split, val_split


def test_every_batch_of_an_epoch_has_one_of_the_fixed_shapes(encoded):
    config, _, _, encoder, train_split, val_split = encoded
    lengths = static_lengths(config.train.bucket_boundaries, config.model.sequence_length)
    assert lengths == [16, 32]
    batch = config.train.batch_size
    dataset = training_dataset(train_split, pad_id=encoder.pad_id, batch_size=batch,
                               bucket_boundaries=config.train.bucket_boundaries,
                               sequence_length=config.model.sequence_length, seed=0, shuffle_buffer=256,
                               static_shapes=True)
    shapes = set()
    for x, y in dataset.take(train_split.size // batch):  # one epoch
        assert {v.shape for v in x.values()} == {(batch, x["token_ids"].shape[1])} and y.shape == (batch,)
        shapes.add(tuple(x["token_ids"].shape))
    assert shapes <= {(batch, length) for length in lengths} and len(shapes) == 2
    widths = {x["token_ids"].shape[1] for x, _ in evaluation_dataset(val_split, pad_id=encoder.pad_id,
                                                                      batch_size=64, lengths=lengths)}
    assert widths <= set(lengths)


def compiled_train_step(encoded, static_shapes: bool) -> str:
    """The HLO of one XLA-compiled train step on a fixed-shape batch."""
    config, task, backbone, encoder, train_split, _ = encoded
    model = task.build_model(backbone)
    model.compile(optimizer=make_optimizer(config.train, 10, static_shapes=static_shapes), loss=task.loss(),
                  metrics=task.metrics())
    x, y = next(iter(training_dataset(train_split, pad_id=encoder.pad_id, batch_size=8, bucket_boundaries=[16],
                                      sequence_length=32, seed=0, shuffle_buffer=256, static_shapes=True)))
    model.train_on_batch(x, y)  # builds the optimizer and metric variables
    step = tf.function(lambda x, y: model.train_step((x, y)), jit_compile=True)
    return step.experimental_get_compiler_ir(x, y)(stage="hlo")


def test_the_xla_train_step_has_no_dynamic_shapes(encoded):
    assert "<=" not in compiled_train_step(encoded, static_shapes=True), "a bounded dynamic dimension, e.g. f32[<=8]"
    # the check can fail: sparse embedding gradients (the one-device default) combine their rows with tf.unique
    assert "<=" in compiled_train_step(encoded, static_shapes=False)
