"""`explain()`: why a fine-tuned classifier, regressor or tagger answers as it does, for one text.

For a run directory and a text: the model's answer; integrated-gradients
attributions of that answer to every word (`attributions.py`; baseline: the
[PAD] or [MASK] embedding at every word piece, [CLS]/[SEP] kept; the same
position, segment and casing inputs); and the attention maps of every layer and
head (`attention.py`). What is explained:

- text classification: the probability of the predicted class (or `label`);
- text regression: the score;
- token classification: for each chosen word (default: every word tagged as
  part of an entity, or every word for plain tags or when none is), the
  probability of its predicted tag at the word's first piece. Tags are decoded
  as `tfsft predict` decodes them (Viterbi over valid IOB2 by default).

Everything runs on a float32 copy of the model, the model checked to give its
own outputs when recomputed from its embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import yaml

from tfsft.interpret.attention import attention_maps
from tfsft.interpret.attributions import integrated_gradients, word_attributions, wordpiece_words
from tfsft.interpret.split import SUPPORTED_TASKS, EmbeddingSplit, InterpretError, float32_copy
from tfsft.models import fast_matmul
from tfsft.run_dir import RunDirError, load_run
from tfsft.tasks.token_classification.decoding import label_tables
from tfsft.tasks.token_classification.serving import decode_tags
from tfsft.tasks.token_classification.words import WORD_SPLITTERS

BASELINES = ("pad", "mask")


@dataclass
class Target:
    """One explained output and its attributions.

    Attributes:
        label: the class or tag whose probability is explained ("score" for regression).
        word: token classification: the index of the word whose tag it is; else None.
        output, baseline_output: F(x) and F(x') (probability, or score).
        token_attributions: (L,) per token of `Explanation.tokens`.
        word_attributions: (W,) per word of `Explanation.words`.
    """

    label: str
    word: Optional[int]
    output: float
    baseline_output: float
    token_attributions: np.ndarray
    word_attributions: np.ndarray

    @property
    def completeness_error(self) -> float:
        """|Σ attributions − (F(x) − F(x'))|, the integration error (shrinks as steps grow)."""
        return abs(float(self.token_attributions.sum()) - (self.output - self.baseline_output))

    def to_json(self) -> dict:
        return {"label": self.label, "word": self.word, "output": self.output, "baseline_output": self.baseline_output,
                "attribution_sum": float(self.token_attributions.sum()),
                "completeness_error": self.completeness_error,
                "token_attributions": self.token_attributions.tolist(),
                "word_attributions": self.word_attributions.tolist()}


@dataclass
class Explanation:
    """An answer of the model on one text, its attributions and its attention maps.

    Attributes:
        task: the run's task name.
        text, text_pair: the input.
        tokens: the L word pieces the model saw, [CLS] and [SEP] included.
        token_word: (L,) the word of each token, -1 for [CLS] / [SEP].
        words: the W words (token classification: as the run's word splitter
            splits the text; else the tokenizer's words, pieces joined).
        prediction: the answer: label and probabilities, score, or one tag per word.
        targets: what is explained, with its attributions.
        attention: (layers, heads, L, L) attention probabilities, query × key.
        steps, baseline: the integrated-gradients settings.
        output_name: "probability" or "score".
    """

    run_dir: str
    task: str
    text: str
    text_pair: Optional[str]
    tokens: list[str]
    token_word: np.ndarray
    words: list[str]
    prediction: dict
    targets: list[Target]
    attention: np.ndarray
    steps: int
    baseline: str
    output_name: str
    truncated: bool = False
    files: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_dir": self.run_dir, "task": self.task, "text": self.text, "text_pair": self.text_pair,
                "tokens": self.tokens, "token_word": self.token_word.tolist(), "words": self.words,
                "prediction": self.prediction, "steps": self.steps, "baseline": self.baseline,
                "output": self.output_name, "truncated": self.truncated,
                "targets": [target.to_json() for target in self.targets],
                "attention": {"layers": int(self.attention.shape[0]), "heads": int(self.attention.shape[1]),
                              "maps": np.round(self.attention, 5).tolist()}}


def check_run(path: Path) -> str:
    """The run's task name, checked to be one that can be explained (cheap: reads config.yaml only)."""
    config_file = path / "config.yaml"
    if not config_file.exists():
        raise RunDirError(f"{path}: no config.yaml; is this a finished run directory (`tfsft train` writes it)?")
    name = ((yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("task") or {}).get("name")
    if name not in SUPPORTED_TASKS:
        raise InterpretError(f"{path}: a {name} run; explanations and robustness reports support "
                             f"{', '.join(SUPPORTED_TASKS)} runs")
    return name


@dataclass
class _Inputs:
    """One text as the model sees it."""

    features: dict  # name → (1, L) int32
    tokens: list[str]
    token_word: np.ndarray  # (L,)
    words: list[str]
    truncated: bool = False
    word_position: Optional[np.ndarray] = None  # (W,) token classification: the first piece of each word


def _token_strings(tokenizer, ids) -> list[str]:
    return [tokenizer.id_to_token(int(i)) for i in ids]


def _text_inputs(run, text: str, text_pair: Optional[str]) -> _Inputs:
    encoder = run.task.make_encoder(run.tokenizer, run.config.model.sequence_length)
    if (text_pair is None) != (run.config.data.text_pair_column is None):
        raise InterpretError("this run classifies text pairs: give text_pair (--text-pair) too"
                             if text_pair is None else "this run classifies single texts; text_pair is not used")
    pair = None if text_pair is None else tf.constant([text_pair])
    features, truncated = tf.function(encoder)(tf.constant([text]), pair)
    features = {k: v.numpy() for k, v in features.items()}
    tokens = _token_strings(run.tokenizer, features["token_ids"][0])
    special = set(_token_strings(run.tokenizer, [run.tokenizer.cls_token_id, run.tokenizer.sep_token_id,
                                                 run.tokenizer.pad_token_id]))
    words, token_word = wordpiece_words(tokens, special, getattr(run.tokenizer, "suffix_indicator", "##"))
    return _Inputs(features, tokens, token_word, words, bool(truncated.numpy()[0]))


def _tagging_inputs(run, model, text: str, chosen: Optional[Sequence[int]]) -> _Inputs:
    words = WORD_SPLITTERS[run.task.options.word_splitter](tf.constant([text]))[0]  # (1, [W])
    strings = [w.decode("utf-8") for w in words.flat_values.numpy()]
    for i in chosen or []:
        if not 0 <= i < len(strings):
            raise InterpretError(f"word: {i} is out of range; the text has {len(strings)} words "
                                 f"(0–{len(strings) - 1}: {' '.join(strings)})")
    encoder = run.task.make_encoder(run.tokenizer, run.config.model.sequence_length)
    encoded = {k: v.numpy() for k, v in tf.function(encoder)(words).items()}
    if len(encoded["token_ids"]) > 1:
        raise InterpretError(f"the text has more word pieces than one window holds (model.sequence_length - 2 = "
                             f"{run.config.model.sequence_length - 2}); explain a shorter text")
    token_word, first = encoded["token_word"][0], encoded["token_first"][0]
    word_position = np.zeros(int(words.flat_values.shape[0]), np.int64)
    word_position[token_word[first]] = np.nonzero(first)[0]
    features = {k: encoded[k] for k in model.input}
    return _Inputs(features, _token_strings(run.tokenizer, features["token_ids"][0]), token_word.astype(np.int64),
                   strings, word_position=word_position)


def _classification_targets(run, outputs: np.ndarray, label: Optional[str]):
    """(prediction, class ids to explain, their names)."""
    if run.config.task.name == "text_regression":
        if label is not None:
            raise InterpretError("label: a regression run has one output, the score; give no label")
        return {"score": float(outputs[0, 0])}, [0], ["score"]
    probabilities = tf.nn.softmax(outputs[0]).numpy()
    names = run.task.label_names
    predicted = int(probabilities.argmax())
    prediction = {"label": names[predicted], "probabilities": dict(zip(names, probabilities.tolist()))}
    if label is None:
        return prediction, [predicted], [names[predicted]]
    for candidates in (names, run.task.labels):
        if label in candidates:
            return prediction, [candidates.index(label)], [names[candidates.index(label)]]
    raise InterpretError(f"label: {label!r} is not a class of this run; expected one of {names}")


def _tagging_targets(run, inputs: _Inputs, outputs: np.ndarray, words: Optional[Sequence[int]]):
    """(prediction, word indices to explain, their tag names, tag ids); tags decoded as the SavedModel does."""
    probabilities = tf.nn.softmax(outputs[0, inputs.word_position]).numpy()  # (W, C)
    _, types, begins = label_tables(run.task.labels)
    viterbi = run.task.options.decoding == "viterbi" and not run.task.plain
    sentence = tf.RaggedTensor.from_row_lengths(tf.constant(inputs.words), [len(inputs.words)])
    tag_ids = decode_tags(tf.constant(probabilities), sentence, tf.constant(types, tf.int32),
                          tf.constant(begins, tf.bool), viterbi).numpy().tolist()
    tags = [run.task.labels[k] for k in tag_ids]
    prediction = {"tags": [{"word": w, "tag": t, "probability": float(probabilities[i, k])}
                           for i, (w, t, k) in enumerate(zip(inputs.words, tags, tag_ids))]}
    if words is None:
        words = [i for i, tag in enumerate(tags) if tag != "O"] if not run.task.plain else []
        words = words or list(range(len(tags)))
    return prediction, list(words), [tags[i] for i in words], [tag_ids[i] for i in words]


@fast_matmul.fast_projections()
def explain(run_dir: str | Path, text: str, *, text_pair: Optional[str] = None, steps: int = 50,
            baseline: str = "pad", label: Optional[str] = None, words: Optional[Sequence[int]] = None,
            out_dir: str | Path | None = None, log: Callable[[str], None] = print) -> Explanation:
    """Explains the run's answer on `text`; writes HTML, PNG and JSON to `out_dir` (default `<run_dir>/explain`).

    Args:
        run_dir: a finished text classification, regression or token classification run.
        text: the input text (`text_pair`: the second text of pair tasks).
        steps: integration intervals m of integrated gradients (≥ 1; the
            completeness error shrinks as O(1/m²)).
        baseline: "pad" or "mask": the token whose embedding replaces every word piece in x'.
        label: classification: the class to explain (name or label value; default: the predicted one).
        words: token classification: indices of the words whose tags to explain.
        out_dir: where the report goes.
        log: where the summary lines go.

    Example:
        >>> e = explain("runs/sst2_minilm", "a gripping, beautifully acted film")
        >>> e.prediction["label"], dict(zip(e.words, e.targets[0].word_attributions))
    """
    from tfsft.interpret.report import write_explanation

    path = Path(run_dir)
    task_name = check_run(path)
    if steps < 1:
        raise InterpretError(f"steps must be ≥ 1. Received: steps={steps}")
    if baseline not in BASELINES:
        raise InterpretError(f"baseline must be one of {', '.join(BASELINES)}. Received: baseline={baseline!r}")
    run = load_run(path)
    model = float32_copy(run.model)
    split = EmbeddingSplit.of(model, task_name, getattr(run.config.task, "pooling", "first"))
    tagging = task_name == "token_classification"
    inputs = _tagging_inputs(run, model, text, words) if tagging else _text_inputs(run, text, text_pair)
    if not inputs.words:
        raise InterpretError(f"the text {text!r} has no words to explain")
    split.check(model, inputs.features)
    features = {k: tf.constant(v) for k, v in inputs.features.items()}
    outputs = np.asarray(split.forward(split.embed(features), features), np.float32)

    if tagging:
        prediction, target_words, names, classes = _tagging_targets(run, inputs, outputs, words)
        positions = inputs.word_position[target_words]
    else:
        if words is not None:
            raise InterpretError("words: only token classification explains chosen words; give label instead")
        prediction, classes, names = _classification_targets(run, outputs, label)
        target_words, positions = [None], None
    regression = task_name == "text_regression"

    def function(embeddings):  # (n, L, D) → (n, T): the explained outputs
        n = tf.shape(embeddings)[0]
        batch = {k: tf.repeat(v, n, axis=0) for k, v in features.items()}
        out = tf.cast(split.forward(embeddings, batch), tf.float32)
        if regression:
            return out[:, :1]
        probabilities = tf.nn.softmax(out, axis=-1)  # (n, C) or (n, L, C)
        if tagging:
            probabilities = tf.gather(probabilities, positions, axis=1)  # (n, T, C)
            return tf.reduce_sum(probabilities * tf.one_hot(classes, tf.shape(probabilities)[-1]), axis=-1)
        return tf.gather(probabilities, classes, axis=1)

    tokenizer = run.tokenizer
    replacement = tokenizer.pad_token_id if baseline == "pad" else tokenizer.mask_token_id
    baseline_ids = np.where(inputs.token_word >= 0, replacement, inputs.features["token_ids"][0])
    x = split.embed(features)[0]
    x_baseline = split.embed({"token_ids": tf.constant(baseline_ids[None], tf.int32)})[0]
    ig = integrated_gradients(function, x, x_baseline, steps)
    per_word = word_attributions(ig.attributions, inputs.token_word, len(inputs.words))
    targets = [Target(name, word, float(ig.outputs[t]), float(ig.baseline_outputs[t]), ig.attributions[t], per_word[t])
               for t, (name, word) in enumerate(zip(names, target_words))]
    explanation = Explanation(str(path), task_name, text, text_pair, inputs.tokens, inputs.token_word, inputs.words,
                              prediction, targets, attention_maps(split, features), steps, baseline,
                              "score" if regression else "probability", inputs.truncated)
    explanation.files = write_explanation(explanation, Path(out_dir) if out_dir else path / "explain")
    for target in targets:
        top = sorted(zip(target.word_attributions, inputs.words), key=lambda p: -abs(p[0]))[:5]
        about = f"{target.label}" + (f" of word {target.word} ({inputs.words[target.word]})" if tagging else "")
        log(f"{about}: {explanation.output_name} {target.output:.4f} (baseline {target.baseline_output:.4f}); "
            "top words " + ", ".join(f"{w} {a:+.3f}" for a, w in top) +
            f"; completeness error {target.completeness_error:.2g} at {steps} steps")
    log(f"Wrote {explanation.files['html']}")
    return explanation
