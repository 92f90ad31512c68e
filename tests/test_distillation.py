"""train.distillation: the loss against the formula by hand, a student cut from its teacher, a tiny run, bad configs."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from tests.conftest import tiny_text_config, write_vocab
from tests.peft.tiny import classifier, features, tiny_bert
from tfsft.config import ConfigError, DistillationConfig
from tfsft.distillation import Distiller, copy_weights, find_backbone, truncated_backbone
from tfsft.experiment import config_from_mapping
from tfsft.peft.setup import parameter_count
from tfsft.tasks.token_classification import TokenClassificationOptions, TokenClassificationTask
from tfsft.training import evaluate, train


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_by_hand(teacher, student, temperature):
    """KL(softmax(teacher / T) ‖ softmax(student / T)) per row, in float64."""
    log_p, log_q = log_softmax(teacher / temperature), log_softmax(student / temperature)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def tagger(backbone):
    task = TokenClassificationTask(TokenClassificationOptions(labels=["O", "B-PER", "I-PER"], dropout=0.0), None)
    return task, task.build_model(backbone)


def compiled(distiller, loss):
    distiller.compile(optimizer="sgd", loss=loss)
    return distiller


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_the_classification_loss_is_alpha_t2_kl_plus_the_weighted_cross_entropy(float32_policy, precision):
    keras.config.set_dtype_policy(precision)
    student, teacher = classifier(tiny_bert()), classifier(tiny_bert())
    temperature, alpha = 3.0, 0.3
    distiller = compiled(Distiller(student, teacher, temperature=temperature, alpha=alpha),
                         keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, weight = features(), np.array([0, 1, 1]), np.array([1.0, 2.0, 0.5], np.float32)
    y_pred = distiller(x)
    loss = distiller.compute_loss(x, y, y_pred, weight, training=True)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    z_s = np.asarray(y_pred, np.float64)
    z_t = np.asarray(teacher(x, training=False), np.float64)
    cross_entropy = -(weight * log_softmax(z_s)[np.arange(3), y]).sum() / 3  # Keras' sum over batch size
    kl = (weight * kl_by_hand(z_t, z_s, temperature)).sum() / 3
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * cross_entropy
    assert kl > 1e-4  # two different random models
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_the_token_loss_counts_only_the_labelled_positions(float32_policy):
    _, student = tagger(tiny_bert())
    task, teacher = tagger(tiny_bert())
    temperature, alpha = 2.0, 0.5
    distiller = compiled(Distiller(student, teacher, temperature=temperature, alpha=alpha, token_level=True,
                                   reduction=task.loss().reduction), task.loss())
    x = features()  # example 0 has 2 padded positions
    y = np.array([[0, 1, 2, 3, 1, 0, 0],  # targets: label id + 1; 0 = [CLS]/[SEP], non-first subword, padding
                  [0, 2, 0, 3, 3, 1, 0],
                  [0, 1, 1, 1, 1, 2, 0]])
    weight = (y > 0).astype(np.float32)  # as TokenClassificationTask.encode writes them
    y_pred = distiller(x)
    loss = float(distiller.compute_loss(x, y, y_pred, weight, training=True))
    z_s, z_t = np.asarray(y_pred, np.float64), np.asarray(teacher(x), np.float64)
    mask = y > 0
    cross_entropy = -np.take_along_axis(log_softmax(z_s), np.maximum(y - 1, 0)[..., None], -1)[..., 0]
    kl = kl_by_hand(z_t, z_s, temperature)
    expected = (alpha * temperature ** 2 * kl[mask].mean()) + (1 - alpha) * cross_entropy[mask].mean()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    every_position = alpha * temperature ** 2 * kl.mean() + (1 - alpha) * cross_entropy.mean()
    assert (~mask).sum() == 8 and abs(loss - every_position) > 1e-4  # the mask matters


def test_alpha_0_is_the_task_loss_and_validation_scores_the_task_loss_alone(float32_policy):
    student, teacher = classifier(tiny_bert()), classifier(tiny_bert())
    task_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = features(), np.array([1, 0, 1])
    without = compiled(Distiller(student, teacher, temperature=2.0, alpha=0.0), task_loss)
    y_pred = without(x)
    np.testing.assert_allclose(float(without.compute_loss(x, y, y_pred, None, training=True)),
                               float(task_loss(y, y_pred)), rtol=1e-6)
    half = compiled(Distiller(student, teacher, temperature=2.0, alpha=0.5), task_loss)
    np.testing.assert_allclose(float(half.compute_loss(x, y, y_pred, None, training=False)),
                               float(task_loss(y, y_pred)), rtol=1e-6)
    assert float(half.compute_loss(x, y, y_pred, None, training=True)) != pytest.approx(float(task_loss(y, y_pred)))


def test_a_student_cut_from_a_3_layer_teacher_has_its_first_layers_weights_and_works(float32_policy):
    teacher_backbone = tiny_bert(num_layers=3)
    teacher = classifier(teacher_backbone)
    teacher.get_layer("logits").kernel.assign(np.random.default_rng(0).normal(size=(16, 2)))  # not a fresh init
    backbone = truncated_backbone(teacher_backbone, 2)
    student = classifier(backbone)
    copy_weights(teacher, student)
    assert backbone.num_layers == 2 and [layer.name for layer in backbone.transformer_layers] == [
        "transformer_layer_0", "transformer_layer_1"]
    copied = ["token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm",
              "transformer_layer_0", "transformer_layer_1", "pooled_dense"]
    for name in copied:
        ours, theirs = backbone.get_layer(name).weights, teacher_backbone.get_layer(name).weights
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert a is not b and np.array_equal(a.numpy(), b.numpy()), a.path
    for a, b in zip(student.get_layer("logits").weights, teacher.get_layer("logits").weights):
        assert np.array_equal(a.numpy(), b.numpy())
    one_layer = parameter_count(teacher_backbone.get_layer("transformer_layer_2").weights)
    assert parameter_count(student.weights) == parameter_count(teacher.weights) - one_layer
    logits = np.asarray(student(features()))
    assert logits.shape == (3, 2) and np.isfinite(logits).all()
    assert not np.allclose(logits, np.asarray(teacher(features())))  # one layer less
    whole = classifier(truncated_backbone(teacher_backbone, 3))  # all layers: the teacher itself
    copy_weights(teacher, whole)
    np.testing.assert_allclose(np.asarray(whole(features())), np.asarray(teacher(features())), atol=1e-6)


def test_more_student_layers_than_the_teacher_has_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.distillation\.student_layers: the teacher's BertBackbone has 2 "
                                          r"transformer layers. Received: 3"):
        truncated_backbone(tiny_bert(num_layers=2), 3)


# --- runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_vocab):
    """A finished 2-layer run: the teacher."""
    config = tiny_text_config(tmp_path_factory.mktemp("teacher"), tiny_vocab, max_steps=2, eval_every_steps=2)
    config.model.num_layers = 2
    return train(config, log=lambda _: None).run_dir


def student_config(folder, vocab, teacher, max_steps=2, **distillation):
    config = tiny_text_config(folder, vocab, max_steps=max_steps, eval_every_steps=2)
    config.train.distillation = DistillationConfig(teacher=str(teacher), **distillation)
    return config


class Watch(keras.callbacks.Callback):
    """What `fit` trains (the Distiller), as training begins."""

    def on_train_begin(self, logs=None):
        self.fitted_parameters = parameter_count(self.model.weights)
        self.trainable_parameters = parameter_count(self.model.trainable_weights)
        self.start = {name: [w.numpy().copy() for w in layer.weights] for name, layer in weighted_layers(
            self.model.student).items()}


def weighted_layers(model) -> dict:
    """The embeddings, the first transformer layer and the head of a classifier, by name."""
    backbone = find_backbone(model)
    return {"token_embedding": backbone.get_layer("token_embedding"),
            "transformer_layer_0": backbone.get_layer("transformer_layer_0"), "logits": model.get_layer("logits")}


def test_a_distilled_1_layer_student_trains_and_its_run_holds_the_student_alone(tmp_path, tiny_vocab, teacher_run):
    import tfsft  # noqa: F401  (registers tfsft's Keras classes for load_model)
    from tfsft.export import export, predict

    lines, watch = [], Watch()
    config = student_config(tmp_path, tiny_vocab, teacher_run, max_steps=4, student_layers=1, temperature=2, alpha=0.7)
    result = train(config, log=lines.append, callbacks=[watch])
    teacher = keras.saving.load_model(teacher_run / "model.keras")
    student = keras.saving.load_model(result.run_dir / "model.keras")
    one_layer = parameter_count(find_backbone(teacher).get_layer("transformer_layer_1").weights)
    student_parameters = parameter_count(student.weights)
    assert student_parameters == parameter_count(teacher.weights) - one_layer  # no teacher weights in model.keras
    assert watch.fitted_parameters == watch.trainable_parameters == student_parameters  # nor in what fit trains
    assert find_backbone(student).num_layers == 1
    assert (f"Distilling from {teacher_run} (T=2, alpha=0.7): teacher {parameter_count(teacher.weights):,} params, "
            f"student {student_parameters:,} params") in lines
    # started as the teacher's embeddings, layer 0 and head; training moved them
    theirs, ours = weighted_layers(teacher), weighted_layers(student)
    for name, start in watch.start.items():
        assert all(np.array_equal(a, b.numpy()) for a, b in zip(start, theirs[name].weights)), name
        assert any(not np.array_equal(a, b.numpy()) for a, b in zip(start, ours[name].weights)), name
    # the run directory is like any other: metrics, curves, no checkpoints; evaluate and export work
    assert result.metrics["split"] == "validation" and (result.run_dir / "curves.png").exists()
    assert not (result.run_dir / "checkpoints").exists() and not (result.run_dir / "backup").exists()
    assert json.loads((result.run_dir / "task.json").read_text())["labels"] == ["neg", "pos"]
    assert evaluate(result.run_dir, log=lambda _: None)["accuracy"] == result.metrics["accuracy"]
    path = export(result.run_dir, verify=False, log=lambda _: None)
    (row,) = predict(path, ["good film"])
    assert row["label"] in ("neg", "pos") and len(row["probabilities"]) == 2


def test_a_student_of_its_own_backbone_trains_with_the_teachers_soft_labels(tmp_path, tiny_vocab, teacher_run):
    lines = []
    result = train(student_config(tmp_path, tiny_vocab, teacher_run), log=lines.append)  # model.backbone: 1 layer
    assert any(line.startswith(f"Distilling from {teacher_run} (T=2, alpha=0.5)") for line in lines)
    student = keras.saving.load_model(result.run_dir / "model.keras")
    assert find_backbone(student).num_layers == 1 and result.steps == 2


def test_a_teacher_directory_without_model_keras_names_the_key(tmp_path, tiny_vocab, teacher_run):
    broken = tmp_path / "broken"
    shutil.copytree(teacher_run, broken)
    (broken / "model.keras").unlink()
    with pytest.raises(ConfigError, match=r"train\.distillation\.teacher: .*broken has no model\.keras; expected a "
                                          r"finished tfsft run directory"):
        train(student_config(tmp_path, tiny_vocab, broken), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"train\.distillation\.teacher: .*nowhere is not a directory"):
        train(student_config(tmp_path, tiny_vocab, tmp_path / "nowhere"), log=lambda _: None)


def test_another_label_set_or_tokenizer_names_the_key_and_both_values(tmp_path, tiny_vocab, teacher_run):
    config = student_config(tmp_path, tiny_vocab, teacher_run)
    config.task.labels = ["neg", "pos", "meh"]
    with pytest.raises(ConfigError, match=r"train\.distillation\.teacher: the teacher's labels \(task\.labels\) "
                                          r"differ from the student's: teacher .* \['neg', 'pos'\], student "
                                          r"\['neg', 'pos', 'meh'\]"):
        train(config, log=lambda _: None)
    other_vocab = tmp_path / "other_vocab.txt"
    other_vocab.write_text(write_vocab(tmp_path / "v.txt").read_text().replace("film\n", "cinema\n"))
    config = student_config(tmp_path, tiny_vocab, teacher_run)
    config.model.vocabulary = str(other_vocab)
    with pytest.raises(ConfigError, match=r"train\.distillation\.teacher: the teacher's tokenizer differs from the "
                                          r"student's .*first difference at id \d+: 'film' vs 'cinema'"):
        train(config, log=lambda _: None)


def test_bad_distillation_settings_are_reported_with_their_keys():
    raw = {"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
           "train": {"distillation": {"teacher": "", "temperature": 0, "alpha": 1.5, "student_layers": 0}}}
    with pytest.raises(ConfigError) as error:
        config_from_mapping(raw)
    keys = [key for key, _ in error.value.problems]
    assert keys == ["train.distillation.teacher", "train.distillation.temperature", "train.distillation.alpha",
                    "train.distillation.student_layers"]
    with pytest.raises(ConfigError, match=r"train\.distillation: distills text_classification and "
                                          r"token_classification models. Received: task.name 'text_regression'"):
        config_from_mapping({"task": {"name": "text_regression"}, "data": {"files": {"train": "x.tsv"}},
                             "train": {"distillation": {"teacher": "runs/x"}}})
    config = config_from_mapping({"task": {"name": "text_classification"}, "data": {"files": {"train": "x.tsv"}},
                                  "train": {"distillation": {"teacher": "runs/x"}}})
    assert config.train.distillation == DistillationConfig(teacher="runs/x", temperature=2.0, alpha=0.5)
