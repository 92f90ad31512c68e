"""Command line: `tfsft train|launch|pretrain|suite|baseline|evaluate|export|serving-config|predict|generate`,
`tfsft explain|robustness`.

Each command is a thin wrapper over the Python function of the same name, so
the CLI and the API are the same thing underneath. Expected failures (bad
config, bad data, missing files) print one clear message and exit with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings

from tfsft import quiet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfsft", description="Supervised fine-tuning on TensorFlow + Keras 3.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune from a YAML config, then evaluate on the validation split")
    p.add_argument("config", help="experiment YAML file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.learning_rate=3e-5 (repeatable)")
    p.add_argument("--export", action="store_true", help="export a SavedModel after training")

    p = sub.add_parser("launch", help="multi-worker training on this machine: N `tfsft train` workers on 127.0.0.1 "
                                      "(docs/distributed.md)")
    p.add_argument("config", help="experiment YAML file (see configs/)")
    p.add_argument("--workers", type=int, default=2, help="how many workers (default 2); worker 0 is the chief")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every worker (repeatable)")
    p.add_argument("--export", action="store_true", help="the chief exports a SavedModel after training")

    p = sub.add_parser("pretrain", help="train a tokenizer, pretrain (masked_lm / causal_lm), save <run_dir>/preset")
    p.add_argument("config", help="pretraining YAML file (see configs/pretrain_*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")

    p = sub.add_parser("suite", help="fine-tune and score every task of a benchmark suite (glue, superglue); "
                                     "one table out")
    p.add_argument("suite", help="glue or superglue")
    p.add_argument("--task", dest="tasks", action="append", help="run only this task (repeatable; default: all)")
    p.add_argument("--config-dir", help="where base.yaml and <task>.yaml are (default: configs/<suite>)")
    p.add_argument("--run-dir", help="the task runs and results.md / results.json (default: runs/<suite>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every task's config (repeatable)")

    _add_generate_parser(sub)

    p = sub.add_parser("evaluate", help="evaluate a finished run on a split (of the data it was trained with)")
    p.add_argument("run_dir")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument("--data-dir", help="read the config's data files from this folder instead")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.files.test=other.txt (repeatable)")

    p = sub.add_parser("baseline", help="score the configured model before fine-tuning (e.g. an LLM zero-shot)")
    p.add_argument("config")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")

    p = sub.add_parser("export", help="export a finished run as a TF Serving SavedModel")
    p.add_argument("run_dir")
    p.add_argument("--no-verify", action="store_true", help="skip the fresh-process reload check")
    p.add_argument("--version", type=int, help="version to write (replacing it); default: the next free one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's config, e.g. --set export.quantize=int8 (repeatable)")

    _add_serving_config_parser(sub)
    _add_interpret_parsers(sub)

    p = sub.add_parser("predict", help="run an exported model (or a run's export, or a served one) on text; "
                                       "JSON lines out")
    p.add_argument("path", nargs="?", help="SavedModel folder, export folder or run directory (not with --server)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="input text (repeatable)")
    source.add_argument("--input", help="file with one text per line ('-' for stdin)")
    source.add_argument("--question", action="append", help="question answering: a question (repeatable)")
    p.add_argument("--text-pair", action="append", help="second text for pair tasks (repeatable)")
    p.add_argument("--context", action="append", help="question answering: the context of each --question")
    p.add_argument("--server", help="ask a TF Serving model server instead: HOST:PORT (gRPC) or "
                                    "http://HOST:PORT (REST)")
    p.add_argument("--model", help="with --server: the served model's name")
    p.add_argument("--words", action="store_true",
                   help="token classification: each text is words already split, separated by spaces "
                        "(the export's serve_tokens signature)")
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="show TensorFlow's start-up notices and the warnings tfsft hides")
    return parser


def _add_interpret_parsers(sub) -> None:
    p = sub.add_parser("explain", help="why a classifier or tagger answers as it does: integrated-gradients word "
                                       "attributions and attention maps (HTML, PNG, JSON; docs/interpretability.md)")
    p.add_argument("run_dir", help="a text_classification, text_regression or token_classification run")
    p.add_argument("--text", required=True, help="the text to explain")
    p.add_argument("--text-pair", help="the second text, for pair tasks")
    p.add_argument("--steps", type=int, default=50, help="integrated-gradients steps (default 50)")
    p.add_argument("--baseline", choices=["pad", "mask"], default="pad",
                   help="the token embedding every word piece starts from (default pad)")
    p.add_argument("--label", help="classification: the class to explain (default: the predicted one)")
    p.add_argument("--word", dest="words", type=int, action="append",
                   help="token classification: index of a word whose tag to explain (repeatable; default: "
                        "every word tagged as an entity)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/explain)")

    p = sub.add_parser("robustness", help="the task's metric and the flipped predictions under casing, typo, "
                                          "punctuation and whitespace perturbations (table, PNG, JSON)")
    p.add_argument("run_dir", help="a text_classification, text_regression or token_classification run")
    p.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    p.add_argument("--seed", type=int, default=0, help="perturbation seed (default 0)")
    p.add_argument("--rate", type=float, default=0.1,
                   help="probability that casing, typos and whitespace touch each word or gap (default 0.1)")
    p.add_argument("--perturbation", dest="perturbations", action="append",
                   help="casing, typos, punctuation or whitespace (repeatable; default: all)")
    p.add_argument("--data-dir", help="read the run's data files from this folder instead")
    p.add_argument("--out", help="output folder (default: RUN_DIR/robustness_SPLIT)")


def _add_serving_config_parser(sub) -> None:
    p = sub.add_parser("serving-config", help="write the TF Serving models.config of an export root")
    p.add_argument("export_root", help="folder of <model>/<version>/ exports (export.export_dir)")
    p.add_argument("--output", help="default: EXPORT_ROOT/models.config")
    p.add_argument("--base-path", default="/models",
                   help="EXPORT_ROOT as the server sees it (default /models, as in serving/docker-compose.yml)")
    p.add_argument("--label", action="append", default=[], metavar="MODEL:LABEL=VERSION",
                   help="e.g. sst2:stable=3 (repeatable); replaces that model's default labels (stable = the "
                        "version before the newest, canary = the newest; stable alone for one version)")


def _serving_config(args) -> None:
    from tfsft.serving.models_config import parse_labels, write_models_config

    path = write_models_config(args.export_root, args.output, parse_labels(args.label), args.base_path)
    print(f"Wrote {path}")


def _predict_rows(args, texts: list[str], pairs):
    """Rows of the SavedModel at `args.path`, or of the model served at `--server`."""
    if args.server is None:
        if args.path is None or args.model:
            raise ValueError("predict takes a SavedModel path, or --server HOST:PORT with --model NAME")
        from tfsft.export import predict

        return predict(args.path, texts, pairs)
    if args.path is not None or not args.model:
        raise ValueError("predict --server HOST:PORT takes --model NAME and no path")
    from tfsft.serving.client import Client

    with Client(args.server) as client:
        return client.predict(args.model, texts, pairs)


def _predict_answers(args) -> None:
    """`predict --question Q --context C ...`: question answering, JSON lines out."""
    if args.context is None or len(args.context) != len(args.question):
        raise ValueError(f"--context given {len(args.context or [])} times for {len(args.question)} questions; "
                         "give one per --question")
    if args.server is not None or args.path is None:
        raise ValueError("predict --question takes a SavedModel path (not --server)")
    from tfsft.export import predict_inputs

    for row in predict_inputs(args.path, {"question": args.question, "context": args.context}):
        print(json.dumps(row, ensure_ascii=False))


def _add_generate_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text with an instruction-tuned run, or continue a prompt with a "
                                        "`tfsft pretrain` GPT-2")
    p.add_argument("path", help="instruction_tuning run directory, or a `tfsft pretrain` run directory or its "
                                "preset/ folder")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same output)")
    tuned = p.add_argument_group("instruction-tuned runs (the trained chat template is applied)")
    tuned.add_argument("--chat", action="store_true", help="chat: one user message per stdin line, until EOF")
    tuned.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's task.max_new_tokens")
    tuned.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    tuned.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    tuned.add_argument("--top-p", type=float, default=1.0, help="nucleus probability mass")
    tuned.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    pretrained = p.add_argument_group("`tfsft pretrain` GPT-2 runs")
    pretrained.add_argument("--sampler", default="greedy", choices=["greedy", "top_k", "top_p"])
    pretrained.add_argument("--max-length", type=int, default=64, help="total tokens, prompt included")
    pretrained.add_argument("--k", type=int, default=10, help="top_k: sample among the k most likely tokens")
    pretrained.add_argument("--p", type=float, default=0.9, help="top_p: nucleus probability mass")
    pretrained.add_argument("--no-stop", action="store_true",
                            help="keep generating past <|endoftext|> up to --max-length")


def _chat_messages():
    """User messages from stdin, one a line (a "> " prompt on a terminal), until EOF."""
    while True:
        if sys.stdin.isatty():
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


def _generate(args) -> None:
    from tfsft.generation import is_instruction_run

    if is_instruction_run(args.path):
        _generate_instruction(args)
        return
    if args.chat or not args.prompt:
        raise ValueError(f"{args.path}: not an instruction_tuning run, so --prompt is required and --chat "
                         "is not available (GPT-2 continuation)")
    from tfsft.generation import generate

    for text in generate(args.path, args.prompt, sampler=args.sampler, max_length=args.max_length,
                         k=args.k, p=args.p, seed=args.seed, stop_at_end=not args.no_stop):
        print(json.dumps({"text": text}, ensure_ascii=False))


def _generate_instruction(args) -> None:
    """`--prompt`: one JSON line per prompt; `--chat`: replies as plain text, one per message."""
    from tfsft.generation import load_generator
    from tfsft.tasks.instruction_tuning.text_generation import chat

    if bool(args.chat) == bool(args.prompt):
        raise ValueError("give --prompt (one or more) or --chat")
    generator = load_generator(args.path)
    options = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
               "top_p": args.top_p, "seed": args.seed or 0, "stop": args.stop}
    if args.chat:
        one_turn = not generator.module.encoder.template.multi_turn
        print("chat: one message per line, Ctrl-D ends" + ("; this template renders one turn, so each message "
              "is answered on its own" if one_turn else ""), file=sys.stderr)
        rows = chat(generator, _chat_messages(), **options)
    else:
        rows = generator.generate(args.prompt, **options)
    for row in rows:
        if row["prompt_truncated"]:
            print("tfsft: warning: the prompt was cut from the left to fit the model", file=sys.stderr)
        print(row["completion"] if args.chat else json.dumps(row, ensure_ascii=False), flush=True)


def _predict_words(args) -> None:
    """`predict --words`: pre-split words (split at whitespace) through the serve_tokens signature."""
    if args.server is not None or args.path is None or args.text_pair is not None:
        raise ValueError("predict --words takes a SavedModel path (not --server) and no --text-pair")
    from tfsft.export import predict_words

    for row in predict_words(args.path, [text.split() for text in args.text or _read_lines(args.input)]):
        print(json.dumps(row, ensure_ascii=False))


def _read_lines(path: str) -> list[str]:
    """One text per line, blank lines included: output line i answers input line i."""
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8-sig")
    with handle:
        return [line.rstrip("\r\n") for line in handle]


def run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from tfsft.experiment import load_config
        from tfsft.export import export
        from tfsft.training import train

        result = train(load_config(args.config, args.overrides))
        if args.export and result.chief:  # in multi-worker training only the chief exports
            export(result.run_dir)
    elif args.command == "launch":
        from tfsft.experiment import load_config
        from tfsft.launch import launch

        load_config(args.config, args.overrides)  # a bad config is reported once, not by every worker
        return launch(args.config, args.workers, args.overrides, export=args.export, verbose=args.verbose)
    elif args.command == "pretrain":
        from tfsft.experiment import load_config
        from tfsft.training import pretrain

        pretrain(load_config(args.config, args.overrides))
    elif args.command == "suite":
        from tfsft.suites import run_suite

        run_suite(args.suite, config_dir=args.config_dir, run_dir=args.run_dir, tasks=args.tasks,
                  overrides=args.overrides)
    elif args.command == "generate":
        _generate(args)
    elif args.command == "baseline":
        from tfsft.experiment import load_config
        from tfsft.training import baseline

        baseline(load_config(args.config, args.overrides), args.split)
    elif args.command == "evaluate":
        from tfsft.training import evaluate

        evaluate(args.run_dir, args.split, data_dir=args.data_dir, overrides=args.overrides)
    elif args.command == "export":
        from tfsft.export import export

        export(args.run_dir, verify=not args.no_verify, version=args.version, overrides=args.overrides)
    elif args.command == "serving-config":
        _serving_config(args)
    elif args.command == "explain":
        from tfsft.interpret import explain

        explain(args.run_dir, args.text, text_pair=args.text_pair, steps=args.steps, baseline=args.baseline,
                label=args.label, words=args.words, out_dir=args.out)
    elif args.command == "robustness":
        from tfsft.interpret import robustness
        from tfsft.interpret.perturbations import PERTURBATIONS

        robustness(args.run_dir, args.split, seed=args.seed, rate=args.rate,
                   perturbations=args.perturbations or PERTURBATIONS, out_dir=args.out, data_dir=args.data_dir)
    elif args.command == "predict" and args.question:
        _predict_answers(args)
    elif args.command == "predict" and args.words:
        _predict_words(args)
    elif args.command == "predict":
        texts = args.text or _read_lines(args.input)
        pairs = args.text_pair
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"--text-pair given {len(pairs)} times for {len(texts)} texts; give one per text")
        for row in _predict_rows(args, texts, pairs):
            print(json.dumps(row, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    from tfsft.config import ConfigError
    from tfsft.data.readers import DataError

    expected = (ConfigError, DataError, FileNotFoundError, ValueError, RuntimeError)
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with _output(args.verbose):
            return run(args)
    except KeyboardInterrupt:
        print("tfsft: interrupted; a `tfsft train` run resumes from its last backup when started again",
              file=sys.stderr)
        return 130
    except expected as e:
        if os.environ.get("TFSFT_DEBUG"):
            raise
        print(f"tfsft: error: {e}", file=sys.stderr)
        return 2


def _output(verbose: bool):
    """`--verbose`: TensorFlow's start-up notices (held back by `import tfsft`) and every warning;
    else the notices stay out of stderr for the whole command, and Keras' warning that a finite
    validation or test dataset ran out of data (it does, by design) is not shown."""
    if verbose:
        for line in quiet.HELD_BACK:
            print(line, file=sys.stderr)
        return contextlib.nullcontext()
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    return quiet.NoticeFilter()


if __name__ == "__main__":
    sys.exit(main())
