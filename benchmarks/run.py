"""Benchmarks: pathexpand against TransformerLens on the same weights, side by side.

    python benchmarks/run.py [--only TASK[,TASK]] [--shapes NAME[,NAME]] [--quick] [--json FILE]

Tasks come from every ``benchmarks/bench_*.py`` module (``TASKS = [Task, ...]``, see
``common.py``). Every (task, shape, implementation) runs in a fresh subprocess, which

1. builds its inputs (setup: not timed, not counted),
2. runs the task once on a tiny model to warm up the libraries it uses,
3. resets the process's peak-RSS counter (Linux ``/proc/self/clear_refs`` ← 5), notes its RSS,
4. runs the task once, timed (``time.perf_counter``),
5. reports the wall time and the task's peak memory = peak RSS (``VmHWM``) − RSS before the
   task, i.e. everything the task itself held at its peak, torch buffers included.

Where ``clear_refs`` is not writable the peak is ``ru_maxrss`` (lifetime peak, an upper
bound) and the table says so. The two results are compared (max relative difference).

**Floors.** A task's ``floors`` (``common.Floor``) are measured in the same run: a timed
computation (a plain forward pass of the same batch, the vocabulary Gram ``W_Eᵀ W_E``), in its own
fresh process like the tasks, or a FLOP count at the GEMM rates measured at the start of the run
(float32 and float64, best of 3 square ``2048³`` products). The table gives each task's time as
a multiple of its first floor (``pe ÷ floor``); the floor table after it lists every floor.
``--quick`` uses small shapes (``common.QUICK_SHAPES``) to check the machinery in seconds.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import QUICK_SHAPES, SHAPES, Shape

IMPLS = ("pathexpand", "transformer_lens")
WARMUP = Shape("warmup", config=dict(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=50, n_ctx=16,
                                    d_mlp=32, act_fn="gelu_new", normalization_type="LN", attn_only=False))


def discover() -> dict:
    """``{task name: (module name, Task)}`` from every ``bench_*.py`` beside this file."""
    tasks = {}
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(path.stem)
        for task in getattr(module, "TASKS", []):
            if task.name in tasks:
                raise SystemExit(f"task {task.name!r} defined twice ({tasks[task.name][0]}, {path.stem})")
            tasks[task.name] = (path.stem, task)
    return tasks


# ---- child: one measurement ----------------------------------------------------------------
def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(task_name: str, shape_name: str, impl: str, out: str) -> None:
    import numpy as np

    _, task = discover()[task_name]
    shape = {**SHAPES, **QUICK_SHAPES}[shape_name]
    if impl.startswith("floor:"):
        make = task.floors[int(impl.split(":")[1])].build
    else:
        make = task.ours if impl == "pathexpand" else task.theirs
    make(WARMUP)()  # warm up imports and kernels on a tiny model
    fn = make(shape)  # setup
    gc.collect()
    exact = _reset_peak()
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out, np.asarray(result), allow_pickle=False)
    print(json.dumps({"seconds": seconds, "task_mb": max(peak - before, 0) / 1024,
                      "process_peak_mb": peak / 1024, "exact_peak": exact}))


def gemm_rates(n: int = 2048, reps: int = 3) -> dict:
    """GFLOP/s of an ``n × n × n`` matrix product in float32 and float64, best of ``reps``."""
    import torch

    rates = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        best = min(_timed(torch.matmul, a, b) for _ in range(reps))
        rates[name] = 2 * n**3 / best / 1e9
    return rates


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# ---- parent: run, compare, print --------------------------------------------------------------
def measure(task_name: str, shape_name: str, impl: str, tmp: Path) -> dict:
    out = tmp / f"{task_name}-{shape_name}-{impl}.npy"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task_name, shape_name, impl, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["result"] = str(out)
    return row


def _fmt_s(s):
    return "—" if s is None else (f"{s:.3g} s" if s < 100 else f"{s:.0f} s")


def _fmt_mb(m):
    if m is None:
        return "—"
    if m < 1:
        return f"{m * 1024:.0f} kB"
    return f"{m:.0f} MB" if m < 1024 else f"{m / 1024:.2f} GB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated task names")
    p.add_argument("--shapes", help="comma-separated shape names (default: the task's shapes)")
    p.add_argument("--quick", action="store_true", help="small shapes: checks the machinery in seconds")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--list", action="store_true", help="list tasks and shapes, run nothing")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--rates", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-floors", action="store_true", help="skip the floor measurements")
    p.add_argument("--ours-only", action="store_true",
                   help="run pathexpand and the floors, not TransformerLens (long shapes on a busy machine)")
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.rates:
        print(json.dumps(gemm_rates()))
        return 0
    import numpy as np

    tasks = discover()
    if args.list:
        for name, (module, t) in tasks.items():
            print(f"{name:<16} {module:<18} {t.description}  [target: {t.target}]")
        print("shapes:", ", ".join(SHAPES), "| quick:", ", ".join(QUICK_SHAPES))
        return 0
    chosen = args.only.split(",") if args.only else list(tasks)
    unknown = [t for t in chosen if t not in tasks]
    if unknown:
        print(f"unknown task(s) {unknown}; tasks are {', '.join(tasks)}", file=sys.stderr)
        return 2
    pool = QUICK_SHAPES if args.quick else SHAPES
    rows = []
    rates = None
    if not args.no_floors and any(f.flops for t in chosen for f in tasks[t][1].floors):
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rates"],
                              capture_output=True, text=True, check=True)
        rates = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"GEMM rate (2048³, best of 3): float32 {rates['float32']:.1f} GFLOP/s, "
              f"float64 {rates['float64']:.1f} GFLOP/s\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            _, task = tasks[name]
            if args.shapes:
                shapes = args.shapes.split(",")
            elif args.quick:
                shapes = list(QUICK_SHAPES)
            else:
                shapes = list(task.shapes)
            for shape_name in shapes:
                if shape_name not in pool:
                    print(f"unknown shape {shape_name!r}; shapes are {', '.join(pool)}", file=sys.stderr)
                    return 2
                shape = pool[shape_name]
                if shape.bundled and not _bundled_exists(shape.bundled):
                    rows.append({"task": name, "shape": shape_name, "note": "bundled model not installed"})
                    continue
                r = {"task": name, "shape": shape_name, "describe": shape.describe(), "target": task.target}
                for impl in IMPLS:
                    r[impl] = ({"error": "not run (--ours-only)"} if args.ours_only and impl != "pathexpand"
                               else measure(name, shape_name, impl, Path(tmp)))
                r["floors"] = [] if args.no_floors else [
                    _floor(name, shape_name, shape, i, f, rates, Path(tmp)) for i, f in enumerate(task.floors)
                ]
                ours, theirs = r["pathexpand"], r["transformer_lens"]
                if "error" not in ours and "error" not in theirs:
                    r["speedup"] = theirs["seconds"] / ours["seconds"]
                    r["memory_ratio"] = ours["task_mb"] / theirs["task_mb"] if theirs["task_mb"] else None
                    if task.compare is not None:
                        r["max_rel_diff"] = task.compare(np.load(ours["result"]), np.load(theirs["result"]))
                rows.append(r)
                _print_row(r)
    _print_floors(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"gemm_gflops": rates, "rows": rows}, indent=2) + "\n")
    return 0


def _floor(task_name: str, shape_name: str, shape: Shape, i: int, floor, rates, tmp: Path) -> dict:
    """One floor of one task: its seconds (timed in a fresh process, or FLOPs ÷ measured rate)."""
    if floor.flops is not None:
        f32, f64 = floor.flops(shape)
        seconds = f32 / (rates["float32"] * 1e9) + f64 / (rates["float64"] * 1e9)
        return {"name": floor.name, "seconds": seconds, "flops": [f32, f64]}
    m = measure(task_name, shape_name, f"floor:{i}", tmp)
    return {"name": floor.name, **m}


def _print_floors(rows: list) -> None:
    lines = []
    for r in rows:
        for f in r.get("floors", []):
            o, t = r["pathexpand"], r["transformer_lens"]
            if "error" in f:
                lines.append(f"{r['task']} | {r['shape']} | {f['name']} | error: {f['error']}")
                continue
            mult = [f"{x['seconds'] / f['seconds']:.2f}×" if "seconds" in x and f["seconds"] > 0 else "—"
                    for x in (o, t)]      # a FLOP-count floor of 0 (nothing to compose) has no multiple
            lines.append(f"{r['task']} | {r['shape']} | {f['name']} | {_fmt_s(f['seconds'])} | "
                         + " | ".join(mult))
    if lines:
        head = ("task", "shape", "floor", "floor time", "pathexpand ÷ floor", "TransformerLens ÷ floor")
        print("\n" + " | ".join(head))
        print(" | ".join("---" for _ in head))
        print("\n".join(lines), flush=True)


def _bundled_exists(name: str) -> bool:
    from pathexpand.errors import MissingDependencyError
    from pathexpand.models import bundled_names
    from pathexpand.models.installable import INSTALLABLE, installable_path

    if name in INSTALLABLE:
        try:
            return installable_path(name).is_file()
        except MissingDependencyError:
            return False
    return name in bundled_names()


_HEADER = ("task", "shape", "pathexpand", "TransformerLens", "speed-up", "pe memory", "TL memory",
           "memory ratio", "max rel diff", "pe ÷ floor")
_printed_header = False


def _print_row(r: dict) -> None:
    global _printed_header
    if not _printed_header:
        print(" | ".join(_HEADER))
        print(" | ".join("---" for _ in _HEADER))
        _printed_header = True
    if "note" in r:
        print(f"{r['task']} | {r['shape']} | {r['note']}")
        return
    o, t = r["pathexpand"], r["transformer_lens"]
    if "error" in o or ("error" in t and "--ours-only" not in t["error"]):
        print(f"{r['task']} | {r['shape']} | error: {o.get('error') or t.get('error')}")
        return
    if "error" in t:   # --ours-only: pathexpand and the floor, no TransformerLens columns
        t = {"seconds": None, "task_mb": None, "exact_peak": True}
    exact = "" if o["exact_peak"] and t["exact_peak"] else " (ru_maxrss bound)"
    ratio = r.get("memory_ratio")
    speedup = f"{r['speedup']:.1f}×" if "speedup" in r else "—"
    cells = [r["task"], r["shape"], _fmt_s(o["seconds"]), _fmt_s(t["seconds"]), speedup,
             _fmt_mb(o["task_mb"]), _fmt_mb(t["task_mb"]) + exact,
             (f"1/{1 / ratio:.0f}" if ratio < 1 else f"{ratio:.1f}") if ratio else "—",
             f"{r.get('max_rel_diff', float('nan')):.1e}"]
    floor = (r.get("floors") or [{}])[0]
    cells.append(f"{o['seconds'] / floor['seconds']:.2f}×" if floor.get("seconds") else "—")
    print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    sys.exit(main())
