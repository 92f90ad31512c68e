"""A NumPy Llama forward pass on GGUF-layout weights, as llama.cpp computes it.

Independent of tfsft and KerasHub: the weights come straight from the file
(`gguf.GGUFReader` + `gguf.quants.dequantize`), in llama.cpp's layout (every
matrix (out, in), Q/K rows permuted by its converter), and RoPE is llama.cpp's
interleaved one, rotating the pairs (x[2j], x[2j+1]) of every head by
pos · base^(-2j/d). `rope="half"` rotates (x[j], x[j + d/2]) instead: the same
weights read as if nobody had permuted them (what a converter that forgets to
undo the permutation computes).

Per layer (pre-norm, RMSNorm(x) = x / sqrt(mean(x²) + eps) · g):
    h = x + W_o · attention(RoPE(W_q · n), RoPE(W_k · n), W_v · n),  n = RMSNorm(x)
    x = h + W_down · (silu(W_gate · m) ⊙ W_up · m),                   m = RMSNorm(h)
with causal grouped-query attention (query head i reads K/V head i // (H / H_kv));
logits = E · RMSNorm(x) with E = `output.weight`, or the token embedding when tied.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): HF Q/K rows → GGUF order."""
    return weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def read_gguf(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(hyperparameters, {tensor name: float32 (out, in) array}) of a `llama` GGUF file."""
    reader = gguf.GGUFReader(path)

    def value(key, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    heads = value("llama.attention.head_count")
    config = {
        "num_layers": value("llama.block_count"),
        "num_heads": heads,
        "num_kv_heads": value("llama.attention.head_count_kv", heads),
        "rope_base": value("llama.rope.freq_base", 10000.0),
        "eps": value("llama.attention.layer_norm_rms_epsilon"),
    }
    weights = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32) for t in reader.tensors}
    return config, weights


def _rms_norm(x, scale, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope(x, base, mode):
    """x (T, H, d) rotated by position t along the first axis."""
    length, _, dim = x.shape
    angles = np.arange(length)[:, None] * base ** (-np.arange(0, dim, 2) / dim)[None, :]  # (T, d/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if mode == "interleaved":
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
        return out
    first, second = x[..., : dim // 2], x[..., dim // 2:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def forward(config: dict, weights: dict[str, np.ndarray], token_ids, rope: str = "interleaved") -> np.ndarray:
    """Logits (T, vocab) of one sequence `token_ids` (T,), float32 (accumulated in float64)."""
    embedding = weights["token_embd.weight"].astype(np.float64)
    x = embedding[np.asarray(token_ids)]
    length, hidden = x.shape
    heads, kv_heads, eps = config["num_heads"], config["num_kv_heads"], config["eps"]
    dim = hidden // heads
    causal = np.triu(np.full((length, length), -np.inf), k=1)
    for i in range(config["num_layers"]):
        w = {name.split(".", 2)[2]: value for name, value in weights.items() if name.startswith(f"blk.{i}.")}
        n = _rms_norm(x, w["attn_norm.weight"], eps)
        q = _rope((n @ w["attn_q.weight"].T).reshape(length, heads, dim), config["rope_base"], rope)
        k = _rope((n @ w["attn_k.weight"].T).reshape(length, kv_heads, dim), config["rope_base"], rope)
        v = (n @ w["attn_v.weight"].T).reshape(length, kv_heads, dim)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(dim) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = np.einsum("hqk,khd->qhd", probs, v).reshape(length, hidden)
        x = x + attended @ w["attn_output.weight"].T
        m = _rms_norm(x, w["ffn_norm.weight"], eps)
        gate = m @ w["ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (m @ w["ffn_up.weight"].T)) @ w["ffn_down.weight"].T
    x = _rms_norm(x, weights["output_norm.weight"], eps)
    return (x @ weights.get("output.weight", embedding).T).astype(np.float32)
