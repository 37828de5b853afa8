"""Data-based tasks: exact attribution to a logit difference, and certified top-k paths.

``attribution`` (in ``run.py``'s table): 8 prompts × 128 random tokens (fewer where the
model's context is shorter), the logit difference between two fixed tokens at the last
position, with per-head and per-edge views. pathexpand: ``attribute(..., views=("node",
"edge"))``; TransformerLens: ``run_with_cache`` + ``stack_head_results(apply_ln=True)`` +
projection on the (``ln_final.w``-scaled) difference direction, which gives each head's
direct logit attribution and no edges. Compared: that per-head number, which pathexpand
has as the head's edge into the logits plus its own ``b_V`` source's direct path.

Top-k certified paths have no TransformerLens counterpart; they are reported by running
this file::

    python benchmarks/bench_attribution.py --topk [--shape gpt2-small] [--k 10] [--budget-seconds 60]

which prints the time, the certificate (no unlisted path exceeds it), the share of the
target the listed paths explain and the prefixes visited, for one 128-token prompt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUICK_SHAPES, SHAPES, Floor, Task, max_rel_diff, tl_model, weights_of

__all__ = ["TASKS"]

BATCH, SEQ, SEED = 8, 128, 0
TOKEN_A, TOKEN_B = 1, 2


def _tokens(n_ctx: int, d_vocab: int, batch: int = BATCH) -> np.ndarray:
    """The same seeded prompts for both implementations: ``[batch, min(128, n_ctx)]``."""
    return np.random.default_rng(SEED).integers(0, d_vocab, (batch, min(SEQ, n_ctx)))


def attribution_ours(shape):
    import pathexpand as pe

    w = weights_of(shape)
    toks = _tokens(w.config.n_ctx, w.config.d_vocab)
    heads = [f"L{l}H{h}" for l in range(w.config.n_layers) for h in range(w.config.n_heads)]

    def run():
        res = pe.attribute(w, toks, diff=(TOKEN_A, TOKEN_B), views=("node", "edge"))
        ends = set(res.ends)
        out = []
        for h in heads:
            v = res.edge(h, "logits")[:, 0]
            if f"{h}.b_V" in ends:
                v = v + res.edge(f"{h}.b_V", "logits")[:, 0]
            out.append(v)
        return np.stack(out)                                              # [heads, batch]

    return run


def attribution_theirs(shape):
    import torch

    model = tl_model(shape)
    toks = torch.as_tensor(_tokens(model.cfg.n_ctx, model.cfg.d_vocab))
    layer_norm = model.cfg.normalization_type in ("LN", "RMS")   # the final norm's weight

    def run():
        _, cache = model.run_with_cache(toks)
        stack = cache.stack_head_results(layer=-1, pos_slice=-1, apply_ln=True)   # [heads, b, d]
        direction = model.W_U[:, TOKEN_A] - model.W_U[:, TOKEN_B]
        if layer_norm:
            direction = direction * model.ln_final.w
        return (stack @ direction).detach().numpy()

    return run


# the recording forward: what freezing keeps, against TransformerLens's cached forward ---------
def record_ours(shape):
    from pathexpand.numeric.frozen import freeze

    w = weights_of(shape)
    toks = _tokens(w.config.n_ctx, w.config.d_vocab)

    def run():
        fz = freeze(w, toks)
        return fz.patterns.numpy()                                       # [b, L, H, q, k]

    return run


def record_theirs(shape):
    import torch

    model = tl_model(shape)
    toks = torch.as_tensor(_tokens(model.cfg.n_ctx, model.cfg.d_vocab))

    def run():   # every activation cached, no unembedding
        _, cache = model.run_with_cache(toks, stop_at_layer=model.cfg.n_layers)
        return torch.stack([cache["pattern", l] for l in range(model.cfg.n_layers)], 1).numpy()

    return run


# floors: a plain forward pass of the same batch, without the unembedding ----------------------
def forward_ours(shape):
    import torch

    from pathexpand.numeric.forward import Transformer
    from pathexpand.numeric.tokens import to_tensor

    w = weights_of(shape)
    toks = _tokens(w.config.n_ctx, w.config.d_vocab)

    def run():
        with torch.no_grad():
            t = to_tensor(toks, w.config, None)
            return Transformer.from_weights(w)(t, unembed=False).numpy()   # [b, n, d]

    return run


def forward_theirs(shape):
    import torch

    model = tl_model(shape)
    toks = torch.as_tensor(_tokens(model.cfg.n_ctx, model.cfg.d_vocab))

    def run():   # the residual stream after the last block (no ln_final, no unembedding)
        return model(toks, stop_at_layer=model.cfg.n_layers).numpy()

    return run


FORWARD_FLOORS = (Floor("pe plain forward, no unembedding", build=forward_ours),
                  Floor("TL plain forward, no unembedding", build=forward_theirs))

TASKS = [
    Task("attribution",
         f"{BATCH}×{SEQ} tokens → logit difference, per-head and per-edge views "
         "(TL: run_with_cache + stack_head_results + projection; no edges)",
         "≥ 10× faster, with the edges; ≤ 2.5× a plain forward", attribution_ours, attribution_theirs,
         max_rel_diff, floors=FORWARD_FLOORS),
    Task("record",
         f"{BATCH}×{SEQ} tokens → the recording forward pass (pe.freeze; TL: run_with_cache without "
         "the unembedding); compared: the attention patterns",
         "≤ 1.3× a plain forward", record_ours, record_theirs, max_rel_diff, floors=FORWARD_FLOORS),
]


# top-k certified paths (no TransformerLens counterpart) ---------------------------------------
def topk_report(shape_name: str, k: int, budget_seconds: float, budget_nodes: int | None) -> dict:
    """Time, certificate, share explained and prefixes visited for one prompt."""
    import torch

    import pathexpand as pe

    torch.set_grad_enabled(False)
    shape = {**SHAPES, **QUICK_SHAPES}[shape_name]
    w = weights_of(shape)
    toks = _tokens(w.config.n_ctx, w.config.d_vocab, batch=1)
    t0 = time.perf_counter()
    res = pe.top_k_paths(w, toks, diff=(TOKEN_A, TOKEN_B), k=k, budget_seconds=budget_seconds,
                         budget_nodes=budget_nodes)
    seconds = time.perf_counter() - t0
    return {
        "shape": shape_name, "k": k, "seconds": seconds, "complete": res.complete,
        "stopped_by": res.stopped_by, "certificate": res.certificate,
        "kth_value": float(abs(res.values).min()) if len(res.values) else None,
        "explained": res.explained, "visited": res.visited, "expanded": res.expanded,
        "total": res.total, "top": [dict(name=r["name"], value=r["value"]) for r in res.to_records()],
    }


# floor multiples measured in one process ---------------------------------------------------------
def ratio_report(shape_name: str, rounds: int = 3) -> dict:
    """Seconds of a plain forward pass (pathexpand's and TransformerLens's, no unembedding), the
    recording forward (``freeze``) and the attribution task, interleaved round by round in one
    process (so load from other work hits them alike); medians and each one ÷ pathexpand's plain
    forward, per round."""
    import torch

    import pathexpand as pe
    from pathexpand.numeric.forward import Transformer
    from pathexpand.numeric.frozen import freeze
    from pathexpand.numeric.tokens import to_tensor

    torch.set_grad_enabled(False)
    shape = {**SHAPES, **QUICK_SHAPES}[shape_name]
    model = tl_model(shape)
    w = weights_of(shape) if shape.bundled else pe.load(model)
    toks = _tokens(w.config.n_ctx, w.config.d_vocab)
    t = to_tensor(toks, w.config, None)
    tt = torch.as_tensor(toks)
    fns = {
        "pe plain forward": lambda x: Transformer.from_weights(w)(x, unembed=False),
        "TL plain forward": lambda x: model(x, stop_at_layer=model.cfg.n_layers),
        "recording forward": lambda x: freeze(w, x.numpy()),
        "attribution": lambda x: pe.attribute(w, x.numpy(), diff=(TOKEN_A, TOKEN_B), views=("node", "edge")),
    }
    for f in fns.values():   # warm up on a small slice
        f(t[:1, :8] if f is not fns["TL plain forward"] else tt[:1, :8])
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            x = tt if k == "TL plain forward" else t
            t0 = time.perf_counter()
            f(x)
            times[k].append(time.perf_counter() - t0)
    floor = times["pe plain forward"]
    return {"shape": shape_name, "rounds": rounds, "seconds": times,
            "multiples": {k: [a / b for a, b in zip(v, floor)] for k, v in times.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Certified top-k paths on one prompt (pathexpand only); "
                                            "--ratios: floor multiples of the attribution in one process.")
    p.add_argument("--ratios", action="store_true", help="plain forward vs recording forward vs attribution")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--topk", action="store_true", help="run the top-k report")
    p.add_argument("--shape", default="gpt2-small", help="a shape of benchmarks/common.py")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--budget-seconds", type=float, default=60.0)
    p.add_argument("--budget-nodes", type=int, default=None)
    args = p.parse_args(argv)
    if args.ratios:
        r = ratio_report(args.shape, args.rounds)
        print(f"{r['shape']}, {BATCH} × {SEQ} tokens, {r['rounds']} interleaved rounds in one process "
              "(seconds per round; × = ÷ pathexpand's plain forward of the same round)")
        for k, secs in r["seconds"].items():
            mult = r["multiples"][k]
            print(f"  {k:<20} " + "  ".join(f"{s_:.3g} s" for s_ in secs)
                  + f"   median {statistics.median(secs):.3g} s; × " + " ".join(f"{m:.2f}" for m in mult)
                  + f" (median {statistics.median(mult):.2f})")
        return 0
    if not args.topk:
        p.print_help()
        return 0
    r = topk_report(args.shape, args.k, args.budget_seconds, args.budget_nodes)
    print(f"top-{r['k']} certified paths, {r['shape']}, one prompt of {SEQ} tokens, "
          f"logit({TOKEN_A}) − logit({TOKEN_B}) at the last position")
    print(f"  time {r['seconds']:.1f} s, {'complete' if r['complete'] else 'stopped by ' + str(r['stopped_by'])}, "
          f"{r['visited']} prefixes visited ({r['expanded']} expanded)")
    print(f"  certificate: no unlisted path exceeds |c| = {r['certificate']:.4g} "
          f"(k-th listed |c| = {r['kth_value']:.4g})")
    print(f"  share explained: {r['explained']:.1%} of {r['total']:.4g}")
    for row in r["top"]:
        print(f"    {row['name']:<40} {row['value']:+.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
