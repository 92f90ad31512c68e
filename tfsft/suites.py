"""Benchmark suites: fine-tune and score every task of GLUE or SuperGLUE, one table out.

`tfsft suite glue` lays each task's config, `configs/glue/<task>.yaml` (task,
data, training overrides), over `configs/glue/base.yaml` (model and training
defaults). A task config may give two data sections: `data`, local files,
used when they are all there (under `TFSFT_DATA_DIR`), and `tfds_data`, the
TFDS source used otherwise. Each task trains with `tfsft.training.train` into
`<run_dir>/<task>/` and is scored with its official metric (`SUITES`); the
table — Markdown and JSON, the published reference beside each figure — is
rewritten after every task.

Skipped, with the reason in the table: tasks that tfsft's tasks cannot express
(`SuiteTask.unsupported`) and tasks whose data is not reachable (local files
missing and TFDS not downloaded or offline). Resuming: a finished task leaves
`<run_dir>/<task>/suite.json` and is not trained again (delete that folder to
redo it); an interrupted one resumes inside `train` from its last backup.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from tfsft.config import ConfigError
from tfsft.data.readers import DataError, load_tfds_split, split_slice
from tfsft.experiment import config_from_mapping
from tfsft.training import train

MINILM = "MiniLM-L6-H384, GLUE dev"
BERT_SMALL = "BERT-small, GLUE test"


@dataclass(frozen=True)
class Metric:
    """A column of the table: `key` of the task's metrics on `split`, × 100.

    `split` "test" is the config's test split, e.g. MNLI mismatched
    (`data.tfds.test: validation_mismatched`).
    """

    label: str
    key: str
    split: str = "validation"
    reference: Optional[float] = None
    source: str = ""  # where the reference figure comes from


@dataclass(frozen=True)
class SuiteTask:
    """A task of a suite: `configs/<suite>/<name>.yaml`, its official metrics, or why it cannot run."""

    name: str
    title: str
    metrics: tuple[Metric, ...] = ()
    unsupported: str = ""


def _accuracy(reference=None, source=MINILM) -> Metric:
    return Metric("accuracy", "accuracy", reference=reference, source=source if reference is not None else "")


# References: /work/shared/data/README.md (MiniLM-L6-H384 GLUE dev; BERT-small GLUE test). That list gives
# one figure for MRPC (88.9) and QQP (90.6) without naming the metric; they stand beside F1 and accuracy.
SUITES: dict[str, tuple[SuiteTask, ...]] = {
    "glue": (
        SuiteTask("cola", "CoLA", (Metric("MCC", "mcc", reference=47.5, source=MINILM),)),
        SuiteTask("sst2", "SST-2", (_accuracy(91.5),)),
        SuiteTask("mrpc", "MRPC", (Metric("F1", "binary_f1", reference=88.9, source=MINILM), _accuracy())),
        SuiteTask("stsb", "STS-B", (Metric("Pearson", "pearson", reference=78.8, source=BERT_SMALL),
                                    Metric("Spearman", "spearman", reference=77.0, source=BERT_SMALL))),
        SuiteTask("qqp", "QQP", (Metric("F1", "binary_f1"), _accuracy(90.6))),
        SuiteTask("mnli", "MNLI", (Metric("matched accuracy", "accuracy", reference=83.3, source=MINILM),
                                   Metric("mismatched accuracy", "accuracy", split="test"))),
        SuiteTask("qnli", "QNLI", (_accuracy(90.5),)),
        SuiteTask("rte", "RTE", (_accuracy(68.8),)),
        SuiteTask("wnli", "WNLI", (_accuracy(),)),
        SuiteTask("ax", "AX", unsupported="diagnostic set with unlabelled test data only: the GLUE server scores "
                                          "an MNLI model's predictions on it"),
    ),
    "superglue": (
        SuiteTask("boolq", "BoolQ", (_accuracy(),)),
        SuiteTask("cb", "CB", (_accuracy(), Metric("F1 (macro)", "macro_f1"))),
        SuiteTask("rte", "RTE", (_accuracy(),)),
        SuiteTask("copa", "COPA", unsupported="multiple choice between two alternatives; tfsft has no "
                                              "multiple-choice task"),
        SuiteTask("multirc", "MultiRC", unsupported="scores answers from three texts (paragraph, question, answer) "
                                                    "with per-question EM and F1a; text_classification reads two"),
        SuiteTask("record", "ReCoRD", unsupported="cloze over a passage's entity candidates; tfsft has no such task"),
        SuiteTask("wic", "WiC", unsupported="needs the target word marked in both sentences; text_classification "
                                            "reads two plain texts"),
        SuiteTask("wsc", "WSC", unsupported="coreference of two marked spans; text_classification has no span "
                                            "markers"),
        SuiteTask("axb", "AX-b", unsupported="diagnostic test set without labels"),
        SuiteTask("axg", "AX-g", unsupported="diagnostic test set without labels"),
    ),
}


@dataclass
class TaskResult:
    """One task's line of the table."""

    task: str
    title: str
    status: str  # "done", "skipped", "failed" or "pending"
    reason: str = ""
    data: str = ""  # the source trained on
    minutes: Optional[float] = None
    figures: list[dict] = field(default_factory=list)  # label, value, reference, source, evaluated_on
    run_dir: str = ""


def select_tasks(suite: str, names: Optional[Sequence[str]] = None) -> list[SuiteTask]:
    """The suite's tasks (all, or `names` in suite order). Raises ValueError naming an unknown suite or task."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    known = {t.name: t for t in SUITES[suite]}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"suite {suite}: unknown task(s) {', '.join(map(repr, unknown))}; {suite} has "
                         f"{', '.join(known)}")
    return [t for t in SUITES[suite] if not names or t.name in names]


def read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(str(path), [("", f"cannot read the file: {e.strerror}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [("", "expected a mapping at the top level")])
    return raw


def merged(base: dict, override: dict) -> dict:
    """`override` laid over `base`, mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def unreachable(data) -> Optional[str]:
    """Why a `DataConfig`'s source cannot be read here, or None."""
    if data.use_files():
        missing = [str(path) for path in (data.resolve_path(split_slice(p)[0]) for p in data.files.values())
                   if not path.exists()]
        hint = "" if data.resolved_data_dir() else " (TFSFT_DATA_DIR is not set)"
        return f"files not found: {', '.join(missing)}{hint}" if missing else None
    try:
        load_tfds_split(data.tfds.name, data.tfds.train, data.tfds.data_dir, [])
    except DataError as e:
        return str(e)
    return None


def choose_source(raw: dict, overrides: Sequence[str], where: str):
    """`(config, [])` for the first reachable data section (`data`, then `tfds_data`), else `(None, reasons)`."""
    sections = [raw[key] for key in ("data", "tfds_data") if key in raw]
    if not sections:
        raise ConfigError(where, [("data", "give data (local files) or tfds_data (a TFDS source)")])
    reasons = []
    for data in sections:
        mapping = {**{k: v for k, v in raw.items() if k != "tfds_data"}, "data": data}
        config = config_from_mapping(copy.deepcopy(mapping), overrides, source=where)
        reason = unreachable(config.data)
        if reason is None:
            return config, []
        reasons.append(reason)
    return None, reasons


def source_of(data, split: str) -> str:
    """`glue/cola/dev.tsv` or `tfds:glue/cola[validation]`."""
    if data.use_files():
        return data.files.get(split, "?")
    return f"tfds:{data.tfds.name}[{getattr(data.tfds, split)}]"


def run_task(entry: SuiteTask, base: dict, config_dir: Path, task_dir: Path, overrides: Sequence[str],
             log: Callable[[str], None]) -> TaskResult:
    """Trains and scores one task (or reports why not, or what it scored before)."""
    result = TaskResult(entry.name, entry.title, "skipped", run_dir=str(task_dir))
    if entry.unsupported:
        result.reason = entry.unsupported
        return result
    done = task_dir / "suite.json"
    if done.exists():
        log(f"done earlier: {done} (delete {task_dir} to train it again)")
        return TaskResult(**json.loads(done.read_text(encoding="utf-8")))
    where = str(config_dir / f"{entry.name}.yaml")
    raw = merged(base, {"name": entry.name, **read_yaml(Path(where)), "run_dir": str(task_dir)})
    config, reasons = choose_source(raw, overrides, where)
    if config is None:
        result.reason = "; ".join(reasons)
        return result
    result.data = source_of(config.data, "train")
    log(f"training on {result.data} → {task_dir}")
    trained = train(config, log=log)
    scored = {"validation": trained.metrics, "test": trained.test_metrics}
    for metric in entry.metrics:
        values = scored[metric.split]
        result.figures.append({
            "label": metric.label, "value": 100 * values[metric.key], "reference": metric.reference,
            "source": metric.source, "evaluated_on": f"{source_of(config.data, metric.split)} ({values['examples']:,})",
        })
    result.status, result.minutes = "done", trained.seconds / 60
    done.write_text(json.dumps(asdict(result), indent=1) + "\n", encoding="utf-8")
    return result


def run_suite(suite: str, *, config_dir=None, run_dir=None, tasks: Optional[Sequence[str]] = None,
              overrides: Sequence[str] = (), log: Callable[[str], None] = print) -> list[TaskResult]:
    """Runs the suite's tasks in order; writes `<run_dir>/results.md` and `results.json` after each.

    Args:
        suite: "glue" or "superglue".
        config_dir: where `base.yaml` and the task configs are (default `configs/<suite>`).
        run_dir: where the task runs and the table go (default `runs/<suite>`).
        tasks: task names to run (default all).
        overrides: `key=value` settings for every task (as `tfsft train --set`).

    Raises:
        RuntimeError: after the table is written, when a task failed.

    Example:
        >>> run_suite("glue", tasks=["cola", "stsb"])   # runs/glue/results.md
    """
    chosen = select_tasks(suite, tasks)
    config_dir = Path(config_dir or Path("configs") / suite)
    root = Path(run_dir or Path("runs") / suite)
    base = read_yaml(config_dir / "base.yaml")
    results = [TaskResult(t.name, t.title, "pending") for t in chosen]
    start = time.time()
    for number, entry in enumerate(chosen, start=1):
        prefix = f"[{number}/{len(chosen)}] {entry.title}"
        log(f"{prefix}: {len(chosen) - number} task(s) after this one; {(time.time() - start) / 60:.1f} min so far")
        try:
            results[number - 1] = run_task(entry, base, config_dir, root / entry.name, overrides,
                                           lambda line, p=prefix: log(f"{p} | {line}"))
        except Exception as e:  # noqa: BLE001 (recorded in the table; the suite goes on and fails at the end)
            results[number - 1] = TaskResult(entry.name, entry.title, "failed", f"{type(e).__name__}: {e}",
                                             run_dir=str(root / entry.name))
        row = results[number - 1]
        log(f"{prefix}: {row.status}" + (f" — {row.reason}" if row.reason else "")
            + "".join(f"; {f['label']} {f['value']:.2f}" for f in row.figures))
        write_table(suite, results, root, base, overrides)
    log(format_table(suite, results) + f"\n(written to {root / 'results.md'} and results.json)")
    failed = [r.title for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError(f"suite {suite}: {', '.join(failed)} failed; reasons in {root / 'results.md'}")
    return results


def format_table(suite: str, results: list[TaskResult]) -> str:
    """The Markdown table: one row per figure, one per skipped, failed or pending task."""
    lines = ["| task | metric | tfsft | reference | reference from | evaluated on | training |",
             "| --- | --- | ---: | ---: | --- | --- | ---: |"]
    for row in results:
        if row.status != "done":
            reason = " ".join(row.reason.split()).replace("|", "\\|")  # one line, no column breaks
            lines.append(f"| {row.title} | {row.status}{': ' + reason if reason else ''} | | | | | |")
        for k, figure in enumerate(row.figures):
            reference = "—" if figure["reference"] is None else f"{figure['reference']:.1f}"
            minutes = f"{row.minutes:.1f} min" if k == 0 else ""
            lines.append(f"| {row.title if k == 0 else ''} | {figure['label']} | {figure['value']:.2f} | {reference} "
                         f"| {figure['source']} | {figure['evaluated_on']} | {minutes} |")
    return "\n".join(lines)


def write_table(suite: str, results: list[TaskResult], root: Path, base: dict, overrides: Sequence[str]) -> None:
    """`results.md` (title, settings, table) and `results.json` under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    backbone = base.get("model", {}).get("backbone", "the default backbone")
    minutes = sum(r.minutes or 0 for r in results)
    settings = f"; `--set {' '.join(overrides)}`" if overrides else ""
    text = (f"# {suite} with tfsft\n\nBackbone `{backbone}`{settings}; {minutes:.1f} min of training "
            f"({sum(r.status == 'done' for r in results)} of {len(results)} tasks done). Figures × 100.\n\n"
            + format_table(suite, results) + "\n")
    (root / "results.md").write_text(text, encoding="utf-8")
    summary = {"suite": suite, "backbone": backbone, "overrides": list(overrides), "minutes": minutes,
               "tasks": [asdict(r) for r in results]}
    (root / "results.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
