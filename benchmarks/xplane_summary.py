"""Where a profiled TensorFlow run spent its time: op self-time by op type, from the profiler's XSpace file.

`tf.profiler.experimental.start(dir)` … `stop()` writes `dir/plugins/profile/<run>/<host>.xplane.pb`.
Its host plane has one line per thread; the executor threads (`tf_Compute…`, `tf_inter_op…`) hold
one event per op run, named `<op name>:<op type>`, nested where a function op runs its body. An
op's *self time* is its duration minus its children's; summed by op type, the self times add up
to the time the executors were busy (intra-op threads run inside those ops, so they are counted
once, in the op that used them).

    python benchmarks/xplane_summary.py /tmp/profile --steps 20 [--out table.md]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

# Op types by what they compute (TF's CPU kernels; oneDNN's rewritten ones start with _Mkl / _Fused).
GROUPS = {
    "matmul": ("MatMul", "BatchMatMul", "Einsum", "Conv"),
    "softmax": ("Softmax",),
    "optimizer update": ("ResourceApply", "AssignVariable", "AssignAdd", "AssignSub", "ResourceScatter"),
    "cast": ("Cast",),
}


def group_of(op_type: str) -> str:
    """The group of an op type (`_MklFusedMatMul` → matmul), or `other`."""
    bare = op_type.lstrip("_").removeprefix("Mkl").removeprefix("Native").removeprefix("Fused")
    for group, prefixes in GROUPS.items():
        if bare.startswith(prefixes):
            return group
    return "other"


def self_times(events: list[tuple[int, int, str]]) -> dict[str, int]:
    """[(start, duration, op type)] on one thread → {op type: Σ self time}, nested events' time
    counted in the innermost event only."""
    totals: dict[str, int] = collections.Counter()
    stack: list[list] = []  # [end, op type, self time so far]
    for start, duration, op_type in sorted(events, key=lambda e: (e[0], -e[1])):
        while stack and stack[-1][0] <= start:
            end, kind, own = stack.pop()
            totals[kind] += own
        if stack:
            stack[-1][2] -= duration
        stack.append([start + duration, op_type, duration])
    for _, kind, own in stack:
        totals[kind] += own
    return totals


def op_self_times(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """An .xplane.pb file → ({op type: self time in ps}, {op type: runs}) over its executor threads."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    host = next((p for p in space.planes if p.name == "/host:CPU"), None)
    if host is None:
        raise ValueError(f"{path}: no /host:CPU plane (planes: {[p.name for p in space.planes]})")
    totals: dict[str, int] = collections.Counter()
    runs: dict[str, int] = collections.Counter()
    for line in host.lines:
        if not line.name.startswith("tf_") or "Eigen" in line.name:
            continue
        events = []
        for event in line.events:
            name = host.event_metadata[event.metadata_id].name
            if ":" not in name or name.startswith(("ThreadpoolListener", "ExecutorState")):
                continue
            op_type = name.rsplit(":", 1)[1]
            events.append((event.offset_ps, event.duration_ps, op_type))
            runs[op_type] += 1
        for op_type, own in self_times(events).items():
            totals[op_type] += own
    return totals, runs


def latest_xplane(folder: Path) -> Path:
    """The newest `*.xplane.pb` under `folder`."""
    files = sorted(folder.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {folder}: was the profiler started and stopped there?")
    return files[-1]


def summary(folder: Path, steps: int, top: int = 15) -> dict:
    """Per-step op time by group and by op type (the `top` costliest), in ms."""
    totals, runs = op_self_times(latest_xplane(folder))
    busy = sum(totals.values())
    if busy == 0:
        raise ValueError(f"{folder}: the profile holds no op events")
    groups: dict[str, int] = collections.Counter()
    for op_type, ps in totals.items():
        groups[group_of(op_type)] += ps
    per_step = lambda ps: ps / 1e9 / steps  # ps → ms per step
    return {
        "steps": steps,
        "op_ms_per_step": per_step(busy),
        "groups": {g: {"ms_per_step": per_step(ps), "share": ps / busy} for g, ps in groups.most_common()},
        "ops": [{"op": op, "group": group_of(op), "ms_per_step": per_step(ps), "share": ps / busy,
                 "runs_per_step": runs[op] / steps} for op, ps in collections.Counter(totals).most_common(top)],
    }


def markdown(result: dict) -> str:
    """The summary as two Markdown tables (groups, then op types)."""
    lines = [f"Op self time per step: {result['op_ms_per_step']:.1f} ms (over {result['steps']} steps)", "",
             "| group | ms / step | share |", "|---|---:|---:|"]
    lines += [f"| {g} | {v['ms_per_step']:.1f} | {v['share']:.1%} |" for g, v in result["groups"].items()]
    lines += ["", "| op type | group | ms / step | share | runs / step |", "|---|---|---:|---:|---:|"]
    lines += [f"| `{o['op']}` | {o['group']} | {o['ms_per_step']:.2f} | {o['share']:.1%} | {o['runs_per_step']:.0f} |"
              for o in result["ops"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder given to tf.profiler.experimental.start")
    parser.add_argument("--steps", type=int, required=True, help="training steps the profile covers")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be ≥ 1. Received: {args.steps}")
    text = markdown(summary(args.folder, args.steps, args.top))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
