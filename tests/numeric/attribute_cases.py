"""Models and a brute-force second route for the attribution tests.

Not a test module: the ``test_attribute*.py``, ``test_topk.py``, ``test_order.py`` and
``test_ground_truth_data.py`` files load it by path (``--import-mode=importlib`` puts no
test directory on ``sys.path``).

- ``random_weights(**config)``: small random models of every supported shape, non-zero
  biases and LayerNorm weights included.
- ``brute_paths(weights, tokens)``: every path's field in plain numpy float64 (and a
  readout to logits), written
  from the DESIGN.md formulas and the forward pass's recorded patterns, LN scales and MLP
  activations (gate = post / pre), sharing no code with ``pathexpand.numeric.frozen``.
- ``induction_model``, ``v_composition_model``, ``q_composition_model``: hand-built weights
  whose circuits are known by construction (plus small noise so nothing is trivially zero).
"""

from __future__ import annotations

import numpy as np

import pathexpand as pe
from pathexpand.numeric.forward import run_with_cache
from pathexpand.numeric.weights import Config, expected_shapes

CONFIGS = {
    "attn1": dict(n_layers=1),
    "attn2": dict(),
    "attn3": dict(n_layers=3, n_heads=2),
    "shortformer": dict(positional="shortformer"),
    "shortformer_ln": dict(positional="shortformer", normalization="LN"),
    "no_pos": dict(positional=None),
    "bidirectional": dict(attention_dir="bidirectional"),
    "ln_attn": dict(normalization="LN"),
    "gelu_new": dict(d_mlp=10, act_fn="gelu_new", normalization="LN"),
    "gelu": dict(d_mlp=10, act_fn="gelu", normalization="LN"),
    "relu_noln": dict(d_mlp=10, act_fn="relu"),
    "lnpre": dict(d_mlp=10, act_fn="gelu", normalization="LNPre"),
    "vocab_out": dict(d_vocab_out=7),
}


def random_weights(seed=0, dtype=np.float64, biases=True, **cfg) -> pe.Weights:
    """A random model: 2 layers × 3 heads, d_model 12, d_head 4, vocab 11, n_ctx 9 unless overridden."""
    base = dict(n_layers=2, n_heads=3, d_model=12, d_head=4, d_vocab=11, n_ctx=9)
    base.update(cfg)
    c = Config(**base)
    rng = np.random.default_rng(seed)
    params = {}
    for k, shape in expected_shapes(c).items():
        if k.endswith(".w"):
            params[k] = 1 + 0.3 * rng.standard_normal(shape)
        elif k.rsplit(".", 1)[-1].startswith("b"):
            params[k] = (0.3 if biases else 0.0) * rng.standard_normal(shape)
        else:
            params[k] = 0.5 * rng.standard_normal(shape)
    return pe.Weights({k: v.astype(dtype) for k, v in params.items()}, c)


# brute force ----------------------------------------------------------------------------
def brute_paths(weights, tokens):
    """``({path: field [b, n, d_model]}, constants {name: [V]}, readout)`` for every path.

    numpy float64; each node is applied as written in DESIGN.md with the recorded
    ``A``, ``σ`` and gate ``mlp_post / mlp_pre`` (0/0 replaced by act'(0)).
    """
    tokens = np.atleast_2d(np.asarray(tokens))
    w64 = weights.astype(np.float64)
    _, cache = run_with_cache(w64, tokens)
    c = weights.config
    P = {k: np.asarray(v, dtype=np.float64) for k, v in w64.state_dict().items()}
    A = cache.patterns.numpy()
    sigma = {k: v.numpy() for k, v in cache.ln_scale.items()}
    b, n = tokens.shape
    if c.d_mlp is not None:
        pre, post = cache.mlp_pre.numpy(), cache.mlp_post.numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            gate = np.where(pre != 0, post / np.where(pre != 0, pre, 1), 0.0 if c.act_fn == "relu" else 0.5)
    has_bias = weights.has_biases()
    ln_bias = c.normalization == "LN" and has_bias

    def ln_read(x, name):
        if c.normalization is None:
            return x
        x = (x - x.mean(-1, keepdims=True)) / sigma[name][..., None]
        return x * P[name + ".w"] if c.normalization == "LN" else x

    def head(x, l, h, read=True):
        a = f"blocks.{l}.attn."
        x = ln_read(x, f"blocks.{l}.ln1") if read else x
        return np.einsum("bqk,bkd->bqd", A[:, l, h], x @ P[a + "W_V"][h]) @ P[a + "W_O"][h]

    def mlp(x, l, read=True):
        m = f"blocks.{l}.mlp."
        x = ln_read(x, f"blocks.{l}.ln2") if read else x
        return ((x @ P[m + "W_in"]) * gate[:, l]) @ P[m + "W_out"]

    stages = []  # (nodes: [(name, fn)], sources born after this stage)
    for l in range(c.n_layers):
        if c.n_heads:
            nodes = [(f"L{l}H{h}", (lambda x, read=True, l=l, h=h: head(x, l, h, read))) for h in range(c.n_heads)]
            born = []
            if has_bias:
                for h in range(c.n_heads):
                    a = f"blocks.{l}.attn."
                    born.append((f"L{l}H{h}.b_V", A[:, l, h].sum(-1)[..., None] * (P[a + "b_V"][h] @ P[a + "W_O"][h])))
                born.append((f"L{l}.b_O", np.broadcast_to(P[f"blocks.{l}.attn.b_O"], (b, n, c.d_model))))
            lnb = (f"L{l}.ln1.b", P[f"blocks.{l}.ln1.b"]) if ln_bias else None
            stages.append((nodes, born, lnb))
        if c.d_mlp is not None:
            born = []
            if has_bias:
                m = f"blocks.{l}.mlp."
                born.append((f"MLP{l}.b_in", (P[m + "b_in"] * gate[:, l]) @ P[m + "W_out"]))
                born.append((f"MLP{l}.b_out", np.broadcast_to(P[m + "b_out"], (b, n, c.d_model))))
            lnb = (f"L{l}.ln2.b", P[f"blocks.{l}.ln2.b"]) if ln_bias else None
            stages.append(([(f"MLP{l}", (lambda x, read=True, l=l: mlp(x, l, read)))], born, lnb))

    out = {}

    def grow(path, f, start):
        out[path] = f
        for s in range(start, len(stages)):
            for name, fn in stages[s][0]:
                grow(path + (name,), fn(f), s + 1)

    grow(("embed",), P["W_E"][tokens], 0)
    if c.positional == "standard":
        grow(("pos",), np.broadcast_to(P["W_pos"][:n], (b, n, c.d_model)), 0)
    for s, (nodes, born, lnb) in enumerate(stages):
        if lnb is not None:
            vec = np.broadcast_to(lnb[1], (b, n, c.d_model))
            for name, fn in nodes:
                grow((lnb[0], name), fn(vec, read=False), s + 1)
        for name, f in born:
            grow((name,), f, s + 1)
    constants = {"b_U": P["b_U"]}
    if c.normalization == "LN":
        constants["ln_final.b"] = P["ln_final.b"] @ P["W_U"]

    def readout(field):
        """``ln_final`` read (no bias) then ``W_U``: the logits ``[b, n, V]`` of one field."""
        return ln_read(field, "ln_final") @ P["W_U"]

    return out, constants, readout


# hand-built circuits ----------------------------------------------------------------------
V, N = 8, 12                     # vocabulary, context
TOK, POS, PREV, OUT = 0, V, V + N, V + N + V
D_MODEL, D_HEAD = V + N + V + V, N
SHARP = 6.0                      # q·k = SHARP² on the designed key: attention ≈ 1 there


def _blank(n_layers=2, n_heads=1):
    cfg = Config(n_layers=n_layers, n_heads=n_heads, d_model=D_MODEL, d_head=D_HEAD,
                 d_vocab=V, n_ctx=N)
    return {k: np.zeros(s) for k, s in expected_shapes(cfg).items()}, cfg


def _previous_token_head(p, l=0, h=0):
    """L{l}H{h}: query at i reads position i, key at j reads position j+1 → attends to i−1;
    copies the attended token into the PREV subspace."""
    a = f"blocks.{l}.attn."
    for i in range(1, N):
        p[a + "W_Q"][h, POS + i, i - 1] = SHARP
    for j in range(N):
        p[a + "W_K"][h, POS + j, j] = SHARP
    for t in range(V):
        p[a + "W_V"][h, TOK + t, t] = 1.0
        p[a + "W_O"][h, t, PREV + t] = 1.0


def _finish(p, cfg, noise, seed):
    for t in range(V):
        p["W_E"][t, TOK + t] = 1.0
        p["W_U"][OUT + t, t] = 1.0
    for i in range(N):
        p["W_pos"][i, POS + i] = 1.0
    rng = np.random.default_rng(seed)
    for k, v in p.items():
        if not k.rsplit(".", 1)[-1].startswith("b"):
            p[k] = v + noise * rng.standard_normal(v.shape)
    return pe.Weights(p, cfg)


def induction_model(noise=0.02, seed=0) -> pe.Weights:
    """L0H0 an exact previous-token head; L1H0 an induction head by K-composition: query reads
    the current token, key reads PREV (what L0H0 wrote), value copies the token → OUT."""
    p, cfg = _blank()
    _previous_token_head(p)
    a = "blocks.1.attn."
    for t in range(V):
        p[a + "W_Q"][0, TOK + t, t] = SHARP
        p[a + "W_K"][0, PREV + t, t] = SHARP
        p[a + "W_V"][0, TOK + t, t] = 1.0
        p[a + "W_O"][0, t, OUT + t] = 1.0
    return _finish(p, cfg, noise, seed)


def v_composition_model(noise=0.02, seed=0) -> pe.Weights:
    """L0H0 previous-token head; L1H0 attends to its own position and moves PREV → OUT, so the
    virtual head L1H0∘L0H0 predicts the previous token (V-composition)."""
    p, cfg = _blank()
    _previous_token_head(p)
    a = "blocks.1.attn."
    for i in range(N):
        p[a + "W_Q"][0, POS + i, i] = SHARP
        p[a + "W_K"][0, POS + i, i] = SHARP
    for t in range(V):
        p[a + "W_V"][0, PREV + t, t] = 1.0
        p[a + "W_O"][0, t, OUT + t] = 1.0
    return _finish(p, cfg, noise, seed)


def q_composition_model(noise=0.02, seed=0) -> pe.Weights:
    """L0H0 previous-token head; L1H0's query reads PREV (the previous token, from L0H0) and its
    key the token itself: it attends to earlier copies of the previous token (Q-composition)."""
    p, cfg = _blank()
    _previous_token_head(p)
    a = "blocks.1.attn."
    for t in range(V):
        p[a + "W_Q"][0, PREV + t, t] = SHARP
        p[a + "W_K"][0, TOK + t, t] = SHARP
        p[a + "W_V"][0, TOK + t, t] = 1.0
        p[a + "W_O"][0, t, OUT + t] = 1.0
    return _finish(p, cfg, noise, seed)


def repeated_tokens(length=6, seed=0) -> np.ndarray:
    """``[r, r]`` with ``r`` a random sequence of distinct tokens (``2 · length ≤ N``)."""
    r = np.random.default_rng(seed).permutation(V)[:length]
    return np.concatenate([r, r])
