"""Input pipeline throughput: SST-2 strings → padded training batches.

`--impl tfsft` (project venv): the library's own path, fresh (no cache from an
earlier run): `TextEncoder` (TF Text WordPiece, in-graph) → `encode_examples`
(batched tokenization into an in-memory cache) → `training_dataset` (shuffle,
length bucketing, per-batch padding) as configured by configs/sst2_minilm.yaml,
drawn until every example has been batched once.

`--impl hf` (`.venv-bench`): Hugging Face `tokenizers` (the Rust fast BERT
WordPiece built from the same vocab.txt): `encode_batch` over all texts
(parallel), then each batch of 32 padded to its longest example into NumPy
arrays (`input_ids`, `token_type_ids`, `attention_mask`).

Both report examples/s and the mean real length (a check that both tokenize
alike).

    python benchmarks/bench_pipeline.py --impl tfsft --examples 10000
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import CONFIG, data_dir, emit, read_sst2

BATCH_SIZE = 32
SEQUENCE_LENGTH = 128


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=["tfsft", "hf"], required=True)
    parser.add_argument("--examples", type=int, default=10000, help="the first N SST-2 training sentences")
    parser.add_argument("--model-dir", help="the MiniLM folder (its vocab.txt), for --impl hf")
    return parser.parse_args(argv)


def run_tfsft(texts: list[str], labels: list[int]) -> dict:
    import numpy as np

    from tfsft.experiment import load_config
    from tfsft.data.pipeline import encode_examples, training_dataset
    from tfsft.models.backbones import load_backbone
    from tfsft.tasks import get_task

    os.environ.setdefault("TFSFT_DATA_DIR", str(data_dir()))
    config = load_config(CONFIG)
    _, tokenizer = load_backbone(config.model)
    encoder = get_task(config).make_encoder(tokenizer, config.model.sequence_length)
    targets = np.asarray(labels, np.int32)
    batch_size = config.train.batch_size
    batches = len(texts) // batch_size

    start = time.perf_counter()
    split = encode_examples(encoder, texts, None, targets)
    dataset = training_dataset(
        split, pad_id=encoder.pad_id, batch_size=batch_size,
        bucket_boundaries=config.train.bucket_boundaries, sequence_length=config.model.sequence_length,
        seed=config.seed, shuffle_buffer=config.train.shuffle_buffer, static_shapes=config.train.jit_compile,
    )
    for features, _ in dataset.take(batches):
        features["token_ids"].numpy()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "examples": batches * batch_size, "mean_real_length": split.mean_tokens}


def run_hf(texts: list[str], model_dir: str) -> dict:
    import numpy as np
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(Path(model_dir) / "vocab.txt"), lowercase=True)
    tokenizer.enable_truncation(SEQUENCE_LENGTH)
    batches = len(texts) // BATCH_SIZE

    start = time.perf_counter()
    encodings = tokenizer.encode_batch(texts[: batches * BATCH_SIZE])
    for b in range(batches):
        chunk = encodings[b * BATCH_SIZE: (b + 1) * BATCH_SIZE]
        length = max(len(e.ids) for e in chunk)
        ids = np.zeros((BATCH_SIZE, length), np.int64)
        types = np.zeros((BATCH_SIZE, length), np.int64)
        mask = np.zeros((BATCH_SIZE, length), np.int64)
        for i, e in enumerate(chunk):
            n = len(e.ids)
            ids[i, :n], types[i, :n], mask[i, :n] = e.ids, e.type_ids, e.attention_mask
    seconds = time.perf_counter() - start
    mean_length = sum(len(e.ids) for e in encodings) / len(encodings)
    return {"seconds": seconds, "examples": batches * BATCH_SIZE, "mean_real_length": mean_length}


def main(argv=None) -> None:
    args = parse_args(argv)
    texts, labels = read_sst2("train", limit=args.examples)
    if args.impl == "tfsft":
        result = run_tfsft(texts, labels)
    else:
        if not args.model_dir:
            raise SystemExit("--impl hf needs --model-dir (the folder with vocab.txt)")
        result = run_hf(texts, args.model_dir)
    emit({"name": f"pipeline_{args.impl}", **result, "examples_per_s": result["examples"] / result["seconds"]})


if __name__ == "__main__":
    main()
