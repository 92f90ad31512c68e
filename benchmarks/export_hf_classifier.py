"""A tfsft text-classification run → a Hugging Face `BertForSequenceClassification` folder.

For the serving comparison against `pipeline("text-classification")` on the
*same fine-tuned weights* (`bench_hf_serving.py`). Runs in `.venv` (reads the
run with tfsft; writes `model.safetensors` with `safetensors.numpy`, no torch).
KerasHub 0.32 exports no BERT to Transformers, so this is the reverse of
`keras_hub/src/utils/transformers/convert_bert.py`:

* Embeddings, layer norms, biases: copied as they are.
* Dense kernels: Keras stores (in, out), PyTorch's `nn.Linear` (out, in): transposed.
  The attention projections are `EinsumDense` kernels — query/key/value
  (D, H, K) → (H·K, D); attention output (H, K, D) → (D, H·K); their biases
  (H, K) → (H·K,).
* `hidden_act: gelu_pytorch_tanh`: KerasHub's `BertBackbone` computes the tanh
  approximation of GELU (`gelu_approximate`), not the erf GELU of HF's `gelu`.
* The head. tfsft computes `Dense(dropout(pool(sequence)))`; HF's class always
  computes `classifier(dropout(tanh(pooler.dense(sequence[:, 0]))))`.
  - `task.pooling: pooler`: the backbone's pretrained pooler is HF's pooler: exact.
  - `task.pooling: first` (the shipped configs): `pooler.dense` = 2⁻²⁰·I with zero
    bias and `classifier` = 2²⁰·W. For |h| < 256, tanh(2⁻²⁰·h) rounds to
    2⁻²⁰·h in float32 (and bfloat16): tanh(y) = y·(1 − y²/3 + …) with
    y² < 2⁻²⁴, below half a unit in the last place; scaling by powers of two is
    exact. So the HF model computes tfsft's logits, plus one 384×384 matmul and
    a tanh that tfsft does not run (≈ 0.1 % of MiniLM's FLOPs per example).
    Not for float16 (2²⁰·W overflows its 65,504 range).
  - `task.pooling: mean`: not expressible in the stock class; refused.
* Tokenizer: the run's own WordPiece vocabulary (`vocab.txt`) with the run's
  lowercasing, `strip_accents: false` (KerasHub's `BertTokenizer` lowercases
  without stripping accents, HF's default would strip them), Chinese
  characters split (both), and `model_max_length` = the run's
  `model.sequence_length` (so `truncation=True` cuts where tfsft does).
* `id2label`: the run's label names.

Also writes `tfsft_reference.json` in the folder, for `bench_hf_serving.py
--verify`: the first `--reference` SST-2 dev sentences with tfsft's token ids
and logits (float32: the Keras model rebuilt in float32; and as trained, e.g.
mixed_bfloat16, which is what the SavedModel computes), and the token ids of
every SST-2 dev sentence (all the serving benchmark sends).

    .venv/bin/python benchmarks/export_hf_classifier.py runs/sst2_minilm --out /tmp/tfsft-bench/hf_sst2_minilm
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from common import SCRATCH, data_dir, emit, read_sst2

POOLER_SCALE = 2.0 ** -20  # `pooling: first`: pooler.dense = POOLER_SCALE · I, classifier = W / POOLER_SCALE
REFERENCE_FILE = "tfsft_reference.json"
DEFAULT_OUT = SCRATCH / "hf_sst2_minilm"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished tfsft text_classification run (BERT backbone)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the Hugging Face folder to write")
    parser.add_argument("--reference", type=int, default=64,
                        help="SST-2 dev sentences for tfsft_reference.json (0: none)")
    args = parser.parse_args(argv)
    if args.reference < 0:
        parser.error(f"--reference must be ≥ 0. Received: {args.reference}")
    if not Path(args.run_dir).is_dir():
        parser.error(f"run_dir: {args.run_dir} is not a folder")
    return args


def _numpy(variable) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(variable), dtype=np.float32)


def find_backbone(model):
    """The KerasHub `BertBackbone` inside a tfsft task model (ValueError if there is none)."""
    import keras_hub

    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.BertBackbone)]
    if len(found) != 1:
        kinds = ", ".join(type(layer).__name__ for layer in model.layers)
        raise ValueError(f"expected one KerasHub BertBackbone in {model.name}; its layers are: {kinds}")
    return found[0]


def backbone_tensors(backbone) -> dict[str, np.ndarray]:
    """HF `BertModel` tensors (names under `bert.`) from a KerasHub `BertBackbone`, pooler included."""
    out = {}

    def linear(name, kernel, bias):  # Keras (in, out) kernel → nn.Linear (out, in)
        k = _numpy(kernel)
        out[f"{name}.weight"] = k.T
        out[f"{name}.bias"] = _numpy(bias).reshape(-1)

    def norm(name, layer):
        out[f"{name}.weight"], out[f"{name}.bias"] = _numpy(layer.gamma), _numpy(layer.beta)

    out["embeddings.word_embeddings.weight"] = _numpy(backbone.get_layer("token_embedding").embeddings)
    out["embeddings.position_embeddings.weight"] = _numpy(
        backbone.get_layer("position_embedding").position_embeddings)
    out["embeddings.token_type_embeddings.weight"] = _numpy(backbone.get_layer("segment_embedding").embeddings)
    norm("embeddings.LayerNorm", backbone.get_layer("embeddings_layer_norm"))
    hidden = backbone.hidden_dim
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"transformer_layer_{i}")
        attention = block._self_attention_layer
        prefix = f"encoder.layer.{i}"
        for role in ("query", "key", "value"):  # kernel (D, H, K) → (D, H·K)
            dense = getattr(attention, f"{role}_dense")
            out[f"{prefix}.attention.self.{role}.weight"] = _numpy(dense.kernel).reshape(hidden, -1).T
            out[f"{prefix}.attention.self.{role}.bias"] = _numpy(dense.bias).reshape(-1)
        dense = attention.output_dense  # kernel (H, K, D) → (H·K, D)
        out[f"{prefix}.attention.output.dense.weight"] = _numpy(dense.kernel).reshape(-1, hidden).T
        out[f"{prefix}.attention.output.dense.bias"] = _numpy(dense.bias).reshape(-1)
        norm(f"{prefix}.attention.output.LayerNorm", block._self_attention_layer_norm)
        linear(f"{prefix}.intermediate.dense", block._feedforward_intermediate_dense.kernel,
               block._feedforward_intermediate_dense.bias)
        linear(f"{prefix}.output.dense", block._feedforward_output_dense.kernel, block._feedforward_output_dense.bias)
        norm(f"{prefix}.output.LayerNorm", block._feedforward_layer_norm)
    pooler = backbone.get_layer("pooled_dense")
    linear("pooler.dense", pooler.kernel, pooler.bias)
    return {f"bert.{name}": value for name, value in out.items()}


def head_tensors(model, backbone, pooling: str) -> dict[str, np.ndarray]:
    """`classifier.*` (and, for `pooling: first`, the identity-scaled `bert.pooler.dense.*`)."""
    logits = model.get_layer("logits")
    kernel, bias = _numpy(logits.kernel), _numpy(logits.bias)  # (D, labels), (labels,)
    if pooling == "pooler":
        return {"classifier.weight": kernel.T, "classifier.bias": bias}
    if pooling == "first":
        hidden = backbone.hidden_dim
        return {"bert.pooler.dense.weight": (POOLER_SCALE * np.eye(hidden)).astype(np.float32),
                "bert.pooler.dense.bias": np.zeros(hidden, np.float32),
                "classifier.weight": (kernel.T / POOLER_SCALE).astype(np.float32),
                "classifier.bias": bias}
    raise ValueError(f"task.pooling: {pooling!r} has no BertForSequenceClassification form (its head pools "
                     "the [CLS] vector through the pooler); export runs with pooling first or pooler")


def hf_tensors(model, pooling: str) -> dict[str, np.ndarray]:
    """Every tensor of the HF `BertForSequenceClassification`, contiguous float32."""
    backbone = find_backbone(model)
    tensors = {**backbone_tensors(backbone), **head_tensors(model, backbone, pooling)}
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()}


def hf_config(backbone, label_names: list[str], pad_token_id: int) -> dict:
    """`config.json` of the exported `BertForSequenceClassification`."""
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": backbone.vocabulary_size,
        "hidden_size": backbone.hidden_dim,
        "num_hidden_layers": backbone.num_layers,
        "num_attention_heads": backbone.num_heads,
        "intermediate_size": backbone.intermediate_dim,
        "hidden_act": "gelu_pytorch_tanh",  # KerasHub BERT: keras.activations.gelu(approximate=True)
        "hidden_dropout_prob": backbone.dropout,
        "attention_probs_dropout_prob": backbone.dropout,
        "max_position_embeddings": backbone.max_sequence_length,
        "type_vocab_size": backbone.num_segments,
        "layer_norm_eps": 1e-12,  # KerasHub BertBackbone's
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": pad_token_id,
        "problem_type": "single_label_classification",
        "id2label": {str(i): name for i, name in enumerate(label_names)},
        "label2id": {name: i for i, name in enumerate(label_names)},
        "dtype": "float32",
    }


def tokenizer_files(tokenizer, sequence_length: int) -> dict[str, str]:
    """File name → text of the HF WordPiece tokenizer that tokenizes as the run's KerasHub one."""
    vocabulary = tokenizer.get_vocabulary()
    special = {"unk_token": tokenizer.oov_token if hasattr(tokenizer, "oov_token") else "[UNK]",
               "sep_token": tokenizer.sep_token, "pad_token": tokenizer.pad_token,
               "cls_token": tokenizer.cls_token, "mask_token": tokenizer.mask_token}
    missing = [token for token in special.values() if token not in vocabulary]
    if missing:
        raise ValueError(f"the run's vocabulary lacks {missing}")
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(tokenizer.lowercase),
        "strip_accents": bool(getattr(tokenizer, "strip_accents", False)),  # KerasHub BERT: False
        "tokenize_chinese_chars": bool(getattr(tokenizer, "split_on_cjk", True)),
        "do_basic_tokenize": True,
        "model_max_length": sequence_length,
        **special,
    }
    return {"vocab.txt": "".join(token + "\n" for token in vocabulary),
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
            "special_tokens_map.json": json.dumps(special, indent=2) + "\n"}


def write_folder(model, tokenizer, label_names: list[str], pooling: str, sequence_length: int, out: Path) -> Path:
    """Writes config.json, model.safetensors and the tokenizer files of the HF classifier to `out`."""
    from safetensors.numpy import save_file

    backbone = find_backbone(model)
    if len(label_names) != model.get_layer("logits").units:
        raise ValueError(f"{len(label_names)} label names for {model.get_layer('logits').units} logits")
    tensors = hf_tensors(model, pooling)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(backbone, label_names, tokenizer.pad_token_id)
    config["tfsft"] = {"pooling": pooling, "pooler_scale": POOLER_SCALE if pooling == "first" else None,
                       "sequence_length": sequence_length}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name, text in tokenizer_files(tokenizer, sequence_length).items():
        (out / name).write_text(text, encoding="utf-8")
    return out


def token_ids(encoder, texts: list[str], batch_size: int = 128) -> list[list[int]]:
    """tfsft's token ids of each text, [CLS] … [SEP], unpadded."""
    ids = []
    for start in range(0, len(texts), batch_size):
        features, _ = encoder(texts[start:start + batch_size])
        lengths = features["padding_mask"].numpy().sum(axis=1)
        ids += [row[:n].tolist() for row, n in zip(features["token_ids"].numpy(), lengths)]
    return ids


def reference(model, encoder, texts: list[str]) -> dict:
    """tfsft's token ids (unpadded) and logits on `texts`, in float32 and as trained."""
    from tfsft.models import precision

    features, _ = encoder(texts)
    inputs = {name: features[name] for name in model.input}
    as_trained = np.asarray(model(inputs, training=False), np.float32)
    float32 = np.asarray(precision.with_dtype(model, "float32")(inputs, training=False), np.float32)
    return {"texts": texts, "token_ids": token_ids(encoder, texts),
            "logits_float32": float32.tolist(), "logits_as_trained": as_trained.tolist(),
            "compute_dtype_as_trained": find_backbone(model).dtype_policy.compute_dtype}


def export_run(run_dir: Path, out: Path, reference_count: int = 64) -> dict:
    """Exports `run_dir` to `out` (and writes `tfsft_reference.json`); returns a summary."""
    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    from tfsft.run_dir import load_run

    loaded = load_run(run_dir)
    task = loaded.config.task
    if getattr(task, "name", None) != "text_classification":
        raise ValueError(f"{run_dir}: task {getattr(task, 'name', None)!r}; this exports text_classification runs")
    if loaded.config.data.text_pair_column is not None:
        raise ValueError(f"{run_dir}: sentence-pair runs are not handled here")
    sequence_length = loaded.config.model.sequence_length
    write_folder(loaded.model, loaded.tokenizer, list(loaded.task.label_names), task.pooling, sequence_length, out)
    summary = {"name": "export_hf_classifier", "run_dir": str(run_dir), "out": str(out), "pooling": task.pooling,
               "label_names": list(loaded.task.label_names), "sequence_length": sequence_length,
               "lowercase": bool(loaded.tokenizer.lowercase)}
    if reference_count:
        texts, _ = read_sst2("dev", limit=reference_count)
        encoder = loaded.task.make_encoder(loaded.tokenizer, sequence_length)
        dev, _ = read_sst2("dev")  # every sentence the serving benchmark sends: tokenized alike?
        ref = {**reference(loaded.model, encoder, texts), "label_names": list(loaded.task.label_names),
               "run_dir": str(run_dir), "dev_texts": dev, "dev_token_ids": token_ids(encoder, dev)}
        (out / REFERENCE_FILE).write_text(json.dumps(ref) + "\n", encoding="utf-8")
        summary["reference"] = str(out / REFERENCE_FILE)
    return summary


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        summary = export_run(Path(args.run_dir), Path(args.out), args.reference)
    except ValueError as e:
        sys.exit(f"export_hf_classifier: {e}")
    print(f"wrote {args.out}", file=sys.stderr)
    emit(summary)


if __name__ == "__main__":
    main()
