"""Certified top-k paths: bound, k-th value, prefixes and seconds per model (pathexpand only).

    python benchmarks/bench_topk.py [MODEL ...] [--k 10] [--budget-seconds 60] [--compare-to REV]

``MODEL``: bundled names, ``smollm2-135m`` (slow to load) or ``gpt2-small`` (random weights of
that shape, ``common.py``; one prompt of 128 random tokens, logit(1) − logit(2)). Bundled and
SmolLM2 models explain the logit of their top prediction at the last position of a fixed text.
``--compare-to REV`` also runs the search of ``pathexpand/numeric/topk.py`` as it was at git
revision ``REV`` on the same weights and tokens (everything else from this checkout), so
before and after share one process and one load. No TransformerLens counterpart exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
TEXT = {
    "smollm2-135m": "The capital of France is",
    None: "def total(items):\n    return sum(items)\n\ndef total(items):\n    return sum(",
}


def _module_at(rev: str):
    """``pathexpand.numeric.topk`` as it was at git revision ``rev``, imported beside the current one."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pathexpand/numeric/topk.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "topk_at_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("pathexpand.numeric._topk_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod             # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _inputs(name: str):
    """``(weights, tokens, kwargs)`` for one model."""
    import pathexpand as pe

    if name == "gpt2-small":
        from bench_attribution import SEQ, TOKEN_A, TOKEN_B
        from common import SHAPES, weights_of

        w = weights_of(SHAPES[name])
        toks = np.random.default_rng(0).integers(0, w.config.d_vocab, (1, SEQ))
        return w, toks, {"diff": (TOKEN_A, TOKEN_B)}
    return pe.load(name), TEXT.get(name, TEXT[None]), {}


def run(module, w, tokens, kw, k, budget_seconds) -> dict:
    t0 = time.perf_counter()
    res = module.top_k_paths(w, tokens, k=k, budget_seconds=budget_seconds, **kw)
    return {"seconds": time.perf_counter() - t0, "bound": res.certificate,
            "kth": float(np.abs(res.values).min()) if len(res.values) else float("nan"),
            "visited": res.visited, "expanded": res.expanded, "certified": res.certified}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=["attn-only-1l", "attn-only-2l", "gelu-2l", "modern-2l"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--budget-seconds", type=float, default=60.0)
    p.add_argument("--compare-to", default=None, metavar="REV")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    import pathexpand.numeric.topk as current

    runs = [("now", current)]
    if args.compare_to:
        runs.insert(0, (args.compare_to, _module_at(args.compare_to)))
    print(f"top-{args.k} paths, budget {args.budget_seconds:g} s; bound = largest |c| an unlisted path may have")
    print(f"{'model':<14} {'code':<8} {'status':<13} {'bound':>10} {'k-th |c|':>10} {'bound/k-th':>10} "
          f"{'visited':>8} {'expanded':>8} {'seconds':>8}")
    for name in args.models:
        w, tokens, kw = _inputs(name)
        for label, module in runs:
            r = run(module, w, tokens, kw, args.k, args.budget_seconds)
            print(f"{name:<14} {label:<8} {'certified' if r['certified'] else 'NOT certified':<13} "
                  f"{r['bound']:>10.3g} {r['kth']:>10.3g} {r['bound'] / r['kth']:>10.3g} "
                  f"{r['visited']:>8} {r['expanded']:>8} {r['seconds']:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
