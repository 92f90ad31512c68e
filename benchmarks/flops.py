"""Model FLOPs of BERT-style encoder training, and model FLOPs utilisation (MFU).

Per token, one training step (forward + backward) costs about

    6·N + 12·L·d·T   FLOPs

(Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1; PaLM
appendix B): N non-embedding parameters, each used in one multiply-add (2
FLOPs) forward and two backward; plus the attention scores QKᵀ and the
weighted sum AV, 2·2·L·d·T forward per token over a sequence of T positions,
×3 with the backward pass. MFU = achieved model FLOPs/s ÷ peak FLOPs/s.

Standard library only (used by both benchmark environments and the tests).
"""

from __future__ import annotations

import json
from pathlib import Path


def bert_non_embedding_params(num_layers: int, hidden_dim: int, intermediate_dim: int) -> int:
    """Parameters of the Transformer layers (no embeddings, pooler or head).

    Per layer: Q, K, V, O projections 4·(d² + d); feed-forward d·f + f + f·d + d;
    two layer norms 2·2d.

    Example:
        >>> bert_non_embedding_params(6, 384, 1536)   # MiniLM-L6-H384
        10646784
    """
    d, f = hidden_dim, intermediate_dim
    per_layer = 4 * (d * d + d) + (d * f + f + f * d + d) + 4 * d
    return num_layers * per_layer


def training_flops_per_token(non_embedding_params: int, num_layers: int, hidden_dim: int,
                             sequence_length: float) -> float:
    """6·N + 12·L·d·T: forward + backward FLOPs per token.

    Args:
        non_embedding_params: N.
        num_layers: L.
        hidden_dim: d.
        sequence_length: T, the (mean padded) length the attention runs over.
    """
    return 6.0 * non_embedding_params + 12.0 * num_layers * hidden_dim * sequence_length


def bert_config(folder: str | Path) -> dict:
    """`num_layers`, `hidden_dim`, `intermediate_dim` and N from a Hugging Face `config.json`."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    sizes = {
        "num_layers": int(config["num_hidden_layers"]),
        "hidden_dim": int(config["hidden_size"]),
        "intermediate_dim": int(config["intermediate_size"]),
    }
    sizes["non_embedding_params"] = bert_non_embedding_params(**sizes)
    return sizes


def model_flops_per_s(result: dict, tokens_key: str = "real_tokens_per_s") -> float:
    """Model FLOPs/s of a training result (needs the fields `training_result` + `bert_config` write).

    Args:
        result: one training measurement.
        tokens_key: `real_tokens_per_s` (useful work: MFU) or
            `padded_tokens_per_s` (all positions computed, padding included).
    """
    per_token = training_flops_per_token(
        result["non_embedding_params"], result["num_layers"], result["hidden_dim"], result["mean_padded_length"]
    )
    return per_token * result[tokens_key]
