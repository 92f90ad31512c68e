"""Instruction tuning: readers, templates, loss masks, truncation, and a tiny train() end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

from tfsft.config import ConfigError
from tfsft.data.pipeline import training_dataset
from tfsft.data.readers import DataError
from tfsft.experiment import config_from_mapping
from tfsft.models.llama import LlamaBytePairTokenizer
from tfsft.tasks.instruction_tuning.encoding import InstructionEncoder, fit_to_window
from tfsft.tasks.instruction_tuning.options import InstructionTuningOptions
from tfsft.tasks.instruction_tuning.packing import PackedCausalLM, pack_rows, packed_split
from tfsft.tasks.instruction_tuning.records import Conversation, Turn, read_file
from tfsft.tasks.instruction_tuning.task import InstructionTuningTask
from tfsft.tasks.instruction_tuning.templates import TemplateError, make_template
from tfsft.training import evaluate, train
from tests.conftest import tiny_train

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ s", "e r", "o n", "Ċ Ċ", "p o", "po s", "n e", "ne g"]
SST2_PROMPT = "Classify the sentiment of this movie review as positive or negative.\nReview: {sentence}"
LABELS = {"0": "negative", "1": "positive"}


def vocabulary() -> dict[str, int]:
    """The three specials, the 256 byte symbols and the merged tokens."""
    tokens = SPECIALS + list(bytes_to_unicode()[1]) + [m.replace(" ", "") for m in MERGES]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def tokenizer(chat_tokens: bool = True):
    """A tiny GPT-2 tokenizer (end token <|endoftext|>); ChatML markers kept whole when `chat_tokens`."""
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary(), merges=MERGES,
                                          unsplittable_tokens=SPECIALS if chat_tokens else SPECIALS[:1])


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, records):
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def options(**kwargs) -> InstructionTuningOptions:
    return InstructionTuningOptions(**kwargs)


# ----------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------


def test_reads_prompt_completion_jsonl(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": "2+2?", "completion": "4"}, {"prompt": "Hi", "completion": "Hello"}])
    examples = read_file(str(path), options())
    assert examples.conversations == [Conversation((Turn("2+2?", "4"),)), Conversation((Turn("Hi", "Hello"),))]
    assert examples.lines == [1, 2] and examples.where(1) == f"{path}:2" and examples.formats == ["prompt_completion"]


def test_reads_alpaca_json_list_with_output_or_response(tmp_path):
    records = [{"instruction": "Add", "input": "1, 2", "output": "3"}, {"instruction": "Greet", "output": "Hi"}]
    examples = read_file(str(write(tmp_path / "a.json", json.dumps(records, indent=2))), options())
    assert [c.turns[0] for c in examples.conversations] == [Turn("Add", "3", "1, 2"), Turn("Greet", "Hi")]
    assert examples.where(1) == f"{tmp_path / 'a.json'} record 2"
    responses = read_file(str(write(tmp_path / "r.json", json.dumps([{"instruction": "A", "input": "", "response": "B"}]))),
                          options())
    assert responses.conversations[0].turns[0] == Turn("A", "B")


def test_reads_alpaca_seed_instances_as_one_example_each(tmp_path):
    record = {"instruction": "Antonym?", "instances": [{"input": "hot", "output": "cold"}, {"input": "up", "output": "down"}]}
    examples = read_file(str(jsonl(tmp_path / "s.jsonl", [record])), options())
    assert [c.turns[0] for c in examples.conversations] == [Turn("Antonym?", "cold", "hot"), Turn("Antonym?", "down", "up")]
    assert examples.lines == [1, 1]


def test_reads_multi_turn_chat_messages(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye!"}]
    examples = read_file(str(jsonl(tmp_path / "c.jsonl", [{"messages": messages}])), options())
    assert examples.conversations == [Conversation((Turn("Hi", "Hello"), Turn("Bye", "Bye!")), "Be brief.")]


def test_table_rows_become_prompts_through_format_templates(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\na gripping film \t1\ndull \t0\n")
    opts = options(prompt_template=SST2_PROMPT, completion_template="{label_name}", label_names=LABELS)
    examples = read_file(str(path), opts)
    assert examples.conversations[0].turns[0] == Turn(SST2_PROMPT.format(sentence="a gripping film"), "positive")
    assert examples.conversations[1].turns[0].response == "negative" and examples.lines == [2, 3]


def test_slices_and_max_examples(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)])
    assert [c.turns[0].prompt for c in read_file(f"{path}[-2:]", options()).conversations] == ["p8", "p9"]
    assert len(read_file(f"{path}[:80%]", options()).conversations) == 8
    head = read_file(f"{path}[2:]", options(), max_examples=3)
    assert [c.turns[0].prompt for c in head.conversations] == ["p2", "p3", "p4"] and head.source == f"{path}[2:]"


@pytest.mark.parametrize("records, message", [
    ([{"messages": [{"role": "robot", "content": "x"}]}], "message 1: unknown role 'robot'; expected one of system"),
    ([{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}],
     "message 2: unexpected user message; expected assistant"),
    ([{"messages": [{"role": "user", "content": "x"}]}], "must end with an assistant message"),
    ([{"prompt": "a", "completion": "b"}, {"prompt": "c"}], ":2: missing key 'completion'; the record has prompt"),
    ([{"prompt": "a", "completion": " "}], ":1: empty response; expected a non-empty string"),
    ([{"instruction": "a", "input": "b"}], ":1: missing key 'output|response'"),
    ([{"question": "a", "answer": "b"}], ":1: cannot tell the format; expected the key(s) prompt + completion"),
    ([{"prompt": 3, "completion": "b"}], ":1: 'prompt' must be a string. Received: 3"),
])
def test_bad_records_are_errors_naming_file_and_record(tmp_path, records, message):
    path = jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError, match=str(path).replace(".", r"\.") + ".*") as error:
        read_file(str(path), options())
    assert message in str(error.value)


def test_empty_responses_are_counted_when_skipped_in_their_slice(tmp_path):
    records = [{"prompt": "a", "completion": ""}, {"prompt": "b", "completion": "c"}, {"prompt": "d", "completion": "e"}]
    path = jsonl(tmp_path / "d.jsonl", records)
    examples = read_file(str(path), options(), skip_empty=True)
    assert examples.skipped_empty == 1 and examples.lines == [2, 3]
    assert read_file(f"{path}[1:]", options()).skipped_empty == 0  # the empty example lies outside the slice
    assert read_file(f"{path}[:2]", options(), skip_empty=True).lines == [2]


def test_template_that_does_not_fit_the_data_is_an_error(tmp_path):
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nfine\t1\nbad\t7\n")
    with pytest.raises(DataError, match=r"t\.tsv:2: task\.prompt_template/completion_template use column\(s\) "
                                         r"sentenc, which the data lacks; it has sentence, label"):
        read_file(str(path), options(prompt_template="{sentenc}", completion_template="{label}"))
    labelled = options(prompt_template="{sentence}", completion_template="{label_name}", label_names=LABELS)
    with pytest.raises(DataError, match=r"t\.tsv:3: label '7' is not in task\.label_names \(0, 1\)"):
        read_file(str(path), labelled)


def test_options_are_validated_with_the_config(tmp_path):
    raw = {"task": {"name": "instruction_tuning", "prompt_template": "{a", "label_names": {0: "neg"}, "metrics": ["bleu", "bleu"]},
           "data": {"files": {"train": "x.jsonl"}}}
    with pytest.raises(ConfigError) as error:
        config_from_mapping(raw)
    text = str(error.value)
    for expected in ("task.completion_template: give prompt_template and completion_template together",
                     "task.prompt_template: not a valid format template", "task.label_names: unused",
                     "task.metrics: must not repeat a metric"):
        assert expected in text


def test_real_instruction_files(data_dir):
    root = data_dir / "instruct"
    with pytest.raises(DataError, match=r"code_alpaca_2k\.json record 238: empty response"):
        read_file(str(root / "codealpaca/code_alpaca_2k.json"), options())
    code = read_file(str(root / "codealpaca/code_alpaca_2k.json"), options(), skip_empty=True)
    assert len(code) + code.skipped_empty == 2017 and code.formats == ["alpaca"]
    held_out = read_file(str(root / "codealpaca/code_alpaca_2k.json[-200:]"), options(), skip_empty=True)
    assert (len(held_out), held_out.skipped_empty) == (199, 1)  # record 1860 is empty
    assert len(read_file(str(root / "gpteacher/codegen-instruct.json"), options())) == 4535
    seed = read_file(str(root / "alpaca_seed/seed_tasks.jsonl"), options())
    assert len(seed) >= 175 and seed.lines[-1] == 175
    sst2 = read_file(str(data_dir / "sst2/dev.tsv"), options(prompt_template=SST2_PROMPT, completion_template="{label_name}",
                                                             label_names=LABELS))
    assert len(sst2) == 872 and {c.turns[0].response for c in sst2.conversations} == {"positive", "negative"}


# ----------------------------------------------------------------------------
# Templates
# ----------------------------------------------------------------------------

ONE = Conversation((Turn("Add 2 and 3.", "5"),))


def text(segments, trainable=None):
    return "".join(s.text for s in segments if trainable is None or s.trainable == trainable)


def test_chatml_renders_system_user_assistant_and_marks_the_response():
    segments = make_template("chatml", "<|endoftext|>").render(ONE, "Be brief.")
    assert text(segments) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nAdd 2 and 3.<|im_end|>\n"
                              "<|im_start|>assistant\n5<|im_end|>")
    assert text(segments, trainable=True) == "5<|im_end|>"


def test_chatml_multi_turn_trains_every_assistant_turn():
    chat = Conversation((Turn("Hi", "Hello"), Turn("Bye", "Ciao")))
    segments = make_template("chatml", "<|endoftext|>").render(chat)
    assert text(segments) == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                              "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nCiao<|im_end|>")
    assert text(segments, trainable=True) == "Hello<|im_end|>Ciao<|im_end|>"


def test_alpaca_and_plain():
    alpaca = make_template("alpaca", "</s>")
    with_input = Conversation((Turn("Add.", "5", "2, 3"),))
    assert text(alpaca.render(with_input)) == "### Instruction:\nAdd.\n\n### Input:\n2, 3\n\n### Response:\n5</s>"
    assert text(alpaca.render(ONE, "Sys")) == "Sys\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n5</s>"
    assert text(make_template("plain", "</s>").render(ONE)) == "Add 2 and 3.\n5</s>"
    with pytest.raises(TemplateError, match="template alpaca renders one turn; this conversation has 2"):
        alpaca.render(Conversation((Turn("a", "b"), Turn("c", "d"))))


@pytest.mark.parametrize("name", ["chatml", "alpaca", "plain"])
def test_served_prompt_is_the_training_text_up_to_the_response(name):
    template = make_template(name, "<|endoftext|>")
    rendered = template.render_prompts(tf.constant(["Add 2 and 3."]), system="Be brief.").numpy()[0].decode()
    assert rendered == text(template.render(ONE, "Be brief."), trainable=False)


# ----------------------------------------------------------------------------
# Token ids, loss masks, truncation
# ----------------------------------------------------------------------------


def encoder_for(tok, name="chatml", length=64, system=None):
    return InstructionEncoder(tok, length, make_template(name, "<|endoftext|>"), system)


@pytest.fixture(scope="module")
def chatml(tok):
    return encoder_for(tok)


def split_of(encoder, conversations, train_on_prompt=False, training=True):
    task = InstructionTuningTask(options(train_on_prompt=train_on_prompt), data_config=None)
    examples = type("Examples", (), {"conversations": conversations, "where": lambda self, i: f"x:{i}"})()
    return task.encode(examples, encoder, training=training)


def test_loss_weights_cover_the_response_and_its_end_token_only(chatml):
    encoder = chatml
    split = split_of(encoder, [ONE])
    features, targets, weights = next(iter(split.dataset))
    ids, targets, weights = features["token_ids"].numpy(), targets.numpy(), weights.numpy()
    full = encoder.tokenize([text(encoder.template.render(ONE))])[0]
    np.testing.assert_array_equal(ids, full[:-1])
    np.testing.assert_array_equal(targets, full[1:])
    answer = encoder.tokenize(["5"])[0]
    im_end = encoder.token_id("<|im_end|>")
    assert targets[-1] == im_end and weights[-1] == 1.0  # the model learns to stop
    np.testing.assert_array_equal(targets[weights == 1], np.append(answer, im_end))
    assert weights[: len(targets) - len(answer) - 1].sum() == 0  # prompt and template: weight 0


def test_train_on_prompt_weights_every_token_but_validation_scores_responses(chatml):
    split = split_of(chatml, [ONE], train_on_prompt=True)
    assert np.all(next(iter(split.dataset))[2].numpy() == 1.0)
    validation = split_of(chatml, [ONE], train_on_prompt=True, training=False)
    assert next(iter(validation.dataset))[2].numpy().sum() == 2  # "5" and <|im_end|>


def test_padding_gets_weight_zero(chatml):
    split = split_of(chatml, [ONE, Conversation((Turn("A much longer question here?", "yes"),))])
    batches = training_dataset(split, pad_id=chatml.pad_id, batch_size=2, bucket_boundaries=[], sequence_length=64,
                               seed=0, shuffle_buffer=2)
    features, _, weights = next(iter(batches))  # both examples, padded to the longer
    padded = features["padding_mask"].numpy() == 0
    assert padded.any(axis=1).tolist().count(True) == 1
    assert np.all(weights.numpy()[padded] == 0) and np.all(features["token_ids"].numpy()[padded] == chatml.pad_id)


def test_segments_tokenize_as_the_whole_string_and_as_served():
    # tfsft's Llama tokenizer: GPT-2's exact word split, under which "\n\n" + "word" ≠ "\n\nword".
    tok = LlamaBytePairTokenizer(vocabulary=vocabulary(), merges=MERGES, unsplittable_tokens=SPECIALS)
    conversations = [ONE, Conversation((Turn("Name two  colours, please.", " Red and\nblue.", "in English"),))]
    encoder = encoder_for(tok, length=200, system="You help.")
    tokens = encoder.encode(conversations, str)
    whole = encoder.tokenize([text(encoder.template.render(c, "You help.")) for c in conversations])
    for ids, expected in zip(tokens.ids, whole):
        np.testing.assert_array_equal(ids, expected)
    served = encoder.prompt_ids(tf.constant(["Add 2 and 3."])).numpy()[0]
    np.testing.assert_array_equal(served, tokens.ids[0][~tokens.response[0]])


def test_chatml_needs_whole_chat_markers():
    with pytest.raises(ValueError, match="template chatml needs '<\\|im_start\\|>' as one token, but the tokenizer makes"):
        encoder_for(tokenizer(chat_tokens=False))


def test_fit_to_window_cuts_the_prompt_from_the_left_then_the_response_from_the_right():
    ids = np.arange(10)
    response = np.array([0] * 6 + [1] * 4, bool)  # 6 prompt tokens, 4 response (+ end) tokens
    np.testing.assert_array_equal(fit_to_window(ids, response, 10)[0], ids)
    np.testing.assert_array_equal(fit_to_window(ids, response, 7)[0], [3, 4, 5, 6, 7, 8, 9])  # prompt cut, response kept
    kept, flags = fit_to_window(ids, response, 6)  # the response needs more than half: prompt keeps 3
    np.testing.assert_array_equal(kept, [3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(flags, [0, 0, 0, 1, 1, 1])


def test_truncation_is_counted(tok):
    long = Conversation((Turn("word " * 40, "ok"),))
    encoder = encoder_for(tok, length=40)
    split = split_of(encoder, [ONE, long])
    assert split.truncated == 1 and split.size == 2
    features, targets, weights = list(split.dataset)[1]
    response = np.append(encoder.tokenize(["ok"])[0], encoder.token_id("<|im_end|>"))
    assert features["token_ids"].shape[0] == 40  # the window: L inputs
    np.testing.assert_array_equal(targets.numpy()[-len(response):], response)  # the response is kept whole
    assert weights.numpy().sum() == len(response)


# ----------------------------------------------------------------------------
# Packing
# ----------------------------------------------------------------------------


def test_pack_rows_first_fit_decreasing():
    rows = pack_rows([5, 3, 7, 2, 8, 1], capacity=10)
    assert rows == [[4, 3], [2, 1], [0, 5]]
    assert sorted(i for row in rows for i in row) == list(range(6))


def test_packed_rows_carry_segments_and_positions():
    ids = [np.array([1, 2, 3, 4]), np.array([5, 6, 7]), np.array([8, 9])]
    weights = [np.array([0, 0, 1, 1]), np.array([0, 1, 1]), np.array([0, 1])]
    split = packed_split(ids, weights, capacity=5, truncated=0)
    rows = list(split.dataset)
    assert split.size == 2 == len(rows)
    features, targets, w = rows[0]  # the 3-position example, then the 2-position one
    np.testing.assert_array_equal(features["token_ids"], [1, 2, 3, 5, 6])
    np.testing.assert_array_equal(targets, [2, 3, 4, 6, 7])
    np.testing.assert_array_equal(w, [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(features["segment_ids"], [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(features["positions"], [0, 1, 2, 0, 1])


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_a_packed_example_has_its_unpacked_logits(architecture):
    keras.utils.set_random_seed(0)
    if architecture == "llama":
        backbone = keras_hub.models.LlamaBackbone(vocabulary_size=50, num_layers=2, num_query_heads=4,
                                                  num_key_value_heads=2, hidden_dim=32, intermediate_dim=64)
        causal_lm = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    else:
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=2, num_heads=4, hidden_dim=32,
                                                 intermediate_dim=64, max_sequence_length=16, dropout=0.0)
        causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    rng = np.random.default_rng(1)
    for weight in causal_lm.weights:  # std 0.3: logits that a leak across examples would visibly change
        weight.assign(rng.normal(0.0, 0.3, weight.shape))
    model = PackedCausalLM(causal_lm)
    first, second = np.array([3, 5, 7, 9, 11]), np.array([4, 6, 8])
    packed = model({"token_ids": np.concatenate([first, second])[None], "padding_mask": np.ones((1, 8), "int32"),
                    "segment_ids": np.array([[1] * 5 + [2] * 3]), "positions": np.array([[0, 1, 2, 3, 4, 0, 1, 2]])})
    for part, ids in ((packed[0, :5], first), (packed[0, 5:], second)):
        alone = causal_lm({"token_ids": ids[None], "padding_mask": np.ones((1, len(ids)), "int32")})[0]
        np.testing.assert_allclose(part, alone, atol=1e-5)
    assert len(model.weights) == len(causal_lm.weights)


# ----------------------------------------------------------------------------
# End to end: train() on tiny random models
# ----------------------------------------------------------------------------


def bpe_files(tmp_path):
    vocab = write(tmp_path / "vocab.json", json.dumps(vocabulary()))
    merges = write(tmp_path / "merges.txt", "#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return str(vocab), str(merges)


def sst2_like(tmp_path):
    rows = [("a gripping film", 1), ("dull and long", 0), ("great fun", 1), ("boring", 0)] * 6
    write(tmp_path / "train.tsv", "sentence\tlabel\n" + "".join(f"{s} \t{l}\n" for s, l in rows))
    write(tmp_path / "dev.tsv", "sentence\tlabel\n" + "".join(f"{s} \t{l}\n" for s, l in rows[:4]))


def tiny_config(tmp_path, architecture, task):
    vocab, merges = bpe_files(tmp_path)
    model = {"backbone": "random", "architecture": architecture, "vocabulary": vocab, "merges": merges,
             "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "intermediate_dim": 32, "sequence_length": 48,
             "dropout": 0.0}
    return config_from_mapping({
        "name": "tiny_instruct", "run_dir": str(tmp_path / "run"), "model": model,
        "task": {"name": "instruction_tuning", "prompt_template": "Review: {sentence}",
                 "completion_template": "{label_name}", "label_names": LABELS, "max_new_tokens": 4,
                 "metrics": ["exact_match", "rouge_l", "bleu", "chrf"], **task},
        "data": {"files": {"train": str(tmp_path / "train.tsv"), "validation": str(tmp_path / "dev.tsv")}},
        "train": tiny_train(max_steps=3, eval_every_steps=3, learning_rate=3e-3),
    })


def test_train_tiny_gpt2_plain_template_end_to_end(tmp_path):
    sst2_like(tmp_path)
    result = train(tiny_config(tmp_path, "gpt2", {"template": "plain"}), log=lambda _: None)
    metrics = result.metrics
    assert metrics["examples"] == 4 and metrics["response_tokens"] > 4  # label tokens + <|endoftext|>
    assert np.isclose(metrics["perplexity"], np.exp(metrics["cross_entropy"]))
    assert 0 <= metrics["exact_match"] <= 1 and 0 <= metrics["rouge_l"] <= 1 and metrics["generated_examples"] == 4
    rows = [json.loads(line) for line in (result.run_dir / "generations.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "Review: a gripping film" and rows[0]["reference"] == "positive" and "output" in rows[0]
    state = json.loads((result.run_dir / "task.json").read_text())
    assert state["template"] == "plain" and state["eos"] == "<|endoftext|>" and state["sample_prompts"]
    history = (result.run_dir / "logs" / "history.csv").read_text()
    assert "val_loss" in history and "val_sparse_categorical_accuracy" in history


def test_train_tiny_llama_auto_chatml_packed_then_evaluate_the_run(tmp_path):
    sst2_like(tmp_path)
    task = {"system_prompt": "Answer in one word.", "metrics": ["exact_match"], "packing": True}
    config = tiny_config(tmp_path, "llama", task)
    config = replace(config, model=replace(config.model, sequence_length=128),  # room for several per row
                     train=replace(config.train, max_steps=None, eval_every_steps=None, epochs=2))
    lines = []
    result = train(config, log=lines.append)
    rows = int(next(line for line in lines if " rows of 128 tokens or fewer" in line).split()[0])
    assert rows < 24 and result.steps == 2 * max(1, rows // 8)  # an epoch passes over the packed rows, batch 8
    state = json.loads((result.run_dir / "task.json").read_text())
    assert state["template"] == "chatml" and state["template_source"] == "the tokenizer's ChatML tokens"
    assert state["system_prompt"] == "Answer in one word."
    again = evaluate(result.run_dir, log=lambda _: None)  # task state reloaded from the run directory
    assert np.isclose(again["cross_entropy"], result.metrics["cross_entropy"], rtol=1e-4)
    assert again["exact_match"] == result.metrics["exact_match"]


# ----------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct (GGUF) on the shared data: `make test-slow`
# ----------------------------------------------------------------------------


def smollm2_task(data_dir, config_file: str):
    """The task of a shipped SmolLM2 config and its encoder (no length limit)."""
    from tfsft.experiment import load_config

    config = load_config(config_file, [f"data.data_dir={data_dir}"])
    task = InstructionTuningTask(config.task, config.data)
    _, tokenizer = task.build_backbone(config.model, None, None)
    return task, task.make_encoder(tokenizer, 100_000)


@pytest.mark.slow
@pytest.mark.parametrize("config_file, least_equal", [("configs/sst2_smollm2_instruct.yaml", 1.0),
                                                       ("configs/codealpaca_smollm2.yaml", 0.99)])
def test_smollm2_chatml_segments_tokenize_as_the_whole_text(data_dir, config_file, least_equal):
    task, encoder = smollm2_task(data_dir, config_file)
    assert task.resolved == {"template": "chatml", "eos": "<|im_end|>", "template_source": "the model's chat template",
                             "system_prompt": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}
    assert encoder.stop_ids == (2,) and encoder.pad_id != 2  # <|im_end|>; the pad differs from it
    examples = task.read("validation")
    tokens = encoder.encode(examples.conversations, examples.where)
    whole = encoder.tokenize([text(encoder.template.render(c, encoder.system)) for c in examples.conversations])
    same = [np.array_equal(a, b) for a, b in zip(tokens.ids, whole)]
    assert np.mean(same) >= least_equal


@pytest.mark.slow
def test_smollm2_sst2_trains_and_scores_every_answer(data_dir, tmp_path):
    from tfsft.experiment import load_config

    config = load_config("configs/sst2_smollm2_instruct.yaml", [
        f"data.data_dir={data_dir}", f"run_dir={tmp_path / 'run'}", "data.max_examples=32", "train.max_steps=2",
        "train.eval_every_steps=2", "train.verbose=0"])
    metrics = train(config, log=lambda _: None).metrics
    assert metrics["examples"] == 32 and metrics["generated_examples"] == 32 and metrics["truncated"] == 0
    assert metrics["response_tokens"] == 64  # "positive" / "negative" is one token, then <|im_end|>
    assert 0.0 <= metrics["exact_match"] <= 1.0 and np.isfinite(metrics["perplexity"])
