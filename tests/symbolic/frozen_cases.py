"""Second route for the symbolic tests: a random frozen model in plain numpy, and evaluators
that put numbers into the sympy expressions of terms.

The forward pass here is written from DESIGN.md (LayerNorm as ``(x - mean)/σ · w + b``, MLP as
``(pre ⊙ G) W_out + b_out``, head as ``A (x W_V + b_V) W_O``), not from the symbolic code.
Only the atom semantics (which array a symbol stands for) are shared knowledge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from sympy import Mul, Pow
from sympy.physics.quantum import TensorProduct

from pathexpand import Architecture
from pathexpand.names import parse_node
from pathexpand.symbolic.symbols import Apply, Mat, Tr

N_POS, D_MODEL, D_HEAD, D_VOCAB, D_MLP = 4, 5, 3, 6, 4


@st.composite
def architectures(draw, max_layers=3, max_heads=2, max_total_heads=4):
    n_layers = draw(st.integers(0, max_layers))
    heads = draw(st.lists(st.integers(0, max_heads), min_size=n_layers, max_size=n_layers))
    if sum(heads) > max_total_heads:
        heads = [min(h, 1) for h in heads]
    mlp = draw(st.booleans())
    if n_layers and not any(heads) and not mlp:  # layers with nothing in them are refused
        heads[0] = 1
    return Architecture(
        n_layers,
        heads,
        mlp=mlp,
        layernorm=draw(st.booleans()),
        positional=draw(st.sampled_from(["standard", "shortformer", None])),
        biases=draw(st.booleans()),
    )


def _stochastic_causal(rng, n):
    a = np.tril(rng.random((n, n)) + 0.1)
    return a / a.sum(1, keepdims=True)


@dataclass
class FrozenModel:
    """Random weights and frozen patterns/scales/gates for one architecture."""

    arch: Architecture
    seed: int = 0
    p: dict = field(default_factory=dict)

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        a, n, D = self.arch, N_POS, D_MODEL
        g = lambda *s: rng.normal(size=s)
        bias = (lambda *s: rng.normal(size=s)) if a.biases else (lambda *s: np.zeros(s))
        p = self.p
        p["W_E"], p["W_pos"], p["W_U"], p["b_U"] = g(D_VOCAB, D), g(N_POS, D), g(D, D_VOCAB), bias(D_VOCAB)
        p["tokens"] = np.eye(D_VOCAB)[rng.permutation(D_VOCAB)[:n]]  # distinct tokens
        for l, H in enumerate(a.n_heads):
            for h in range(H):
                for w in ("W_Q", "W_K", "W_V"):
                    p[w, l, h] = g(D, D_HEAD)
                p["W_O", l, h] = g(D_HEAD, D)
                for b in ("b_Q", "b_K", "b_V"):
                    p[b, l, h] = bias(D_HEAD)
                p["A", l, h] = _stochastic_causal(rng, n)
            p["b_O", l] = bias(D)
            for ln in ("ln1", "ln2"):
                p[ln, "w", l], p[ln, "b", l] = g(D) + 2, bias(D)
                p[ln, "sigma", l] = rng.random(n) + 0.5
            p["W_in", l], p["b_in", l] = g(D, D_MLP), bias(D_MLP)
            p["W_out", l], p["b_out", l] = g(D_MLP, D), bias(D)
            p["G", l] = rng.random((n, D_MLP)) * 2 - 0.5
        p["lnf", "w"], p["lnf", "b"], p["lnf", "sigma"] = g(D) + 2, bias(D), rng.random(n) + 0.5

    # --- the frozen forward pass (DESIGN.md, written out directly) -----------------------
    def _ln(self, x, which, layer=None):
        at = () if layer is None else (layer,)
        w, b, s = (self.p[(which, k, *at)] for k in ("w", "b", "sigma"))
        return (x - x.mean(1, keepdims=True)) / s[:, None] * w + b

    def stream(self, upto: int) -> np.ndarray:
        """Residual stream before layer ``upto``."""
        a, p = self.arch, self.p
        x = p["tokens"] @ p["W_E"] + (p["W_pos"] if a.positional == "standard" else 0)
        for l in range(upto):
            inp = self._ln(x, "ln1", l) if a.layernorm else x
            out = sum(
                (p["A", l, h] @ (inp @ p["W_V", l, h] + p["b_V", l, h]) @ p["W_O", l, h]
                 for h in range(a.n_heads[l])),
                np.zeros_like(x),
            )
            x = x + out + p["b_O", l]
            if a.mlp:
                m_in = self._ln(x, "ln2", l) if a.layernorm else x
                pre = m_in @ p["W_in", l] + p["b_in", l]
                x = x + (pre * p["G", l]) @ p["W_out", l] + p["b_out", l]
        return x

    def logits(self) -> np.ndarray:
        x = self.stream(self.arch.n_layers)
        if self.arch.layernorm:
            x = self._ln(x, "lnf")
        return x @ self.p["W_U"] + self.p["b_U"]

    def scores(self, head: str) -> np.ndarray:
        """``(X W_Q + b_Q)(X W_K + b_K)ᵀ`` (not divided by √d_head)."""
        l, h = self.arch.check_head(head)
        x = self.stream(l)
        X = self._ln(x, "ln1", l) if self.arch.layernorm else x
        if self.arch.positional == "shortformer":
            X = X + self.p["W_pos"]
        p = self.p
        return (X @ p["W_Q", l, h] + p["b_Q", l, h]) @ (X @ p["W_K", l, h] + p["b_K", l, h]).T

    # --- atom semantics: the TransformerLens array a symbol stands for ---------------------
    def tl(self, m: Mat) -> np.ndarray:
        p, f, idx = self.p, m.family, tuple(int(i) for i in m.index)
        n, D = N_POS, D_MODEL
        centre = np.eye(D) - np.ones((D, D)) / D
        row = lambda v: v[None, :]
        if f == "A":
            out = p[("A", *idx)]
        elif f in ("N_ln1", "N_ln2"):
            out = np.diag(1 / p[f[2:], "sigma", idx[0]])
        elif f == "N_lnf":
            out = np.diag(1 / p["lnf", "sigma"])
        elif f in ("W_ln1", "W_ln2"):
            out = centre @ np.diag(p[f[2:], "w", idx[0]])
        elif f == "W_lnf":
            out = centre @ np.diag(p["lnf", "w"])
        elif f in ("b_ln1", "b_ln2"):
            out = row(p[f[2:], "b", idx[0]])
        elif f == "b_lnf":
            out = row(p["lnf", "b"])
        elif f in ("W_E", "W_U"):
            out = p[f]
        elif f == "W_pos":
            out = p["W_pos"][:n]
        elif f == "b_U":
            out = row(p["b_U"])
        elif f == "W_OV":
            out = p[("W_V", *idx)] @ p[("W_O", *idx)]
        elif f == "W_QK":
            out = p[("W_Q", *idx)] @ p[("W_K", *idx)].T
        elif f in ("W_Q", "W_K", "W_O"):
            out = p[(f, *idx)]
        elif f in ("b_V", "b_Q", "b_K", "b_O", "b_out"):
            out = row(p[(f, *idx)])
        elif f == "B_in":
            out = (p["G", idx[0]] * p["b_in", idx[0]]) @ p["W_out", idx[0]]
        elif f == "1":
            out = np.ones((n, 1))
        elif f == "t":
            out = p["tokens"]
        elif f == "Id":
            out = np.eye(n)
        else:
            raise KeyError(f"no array for {m}")
        return out.T if m.transposed else out

    def paper(self, m: Mat) -> np.ndarray:
        """The paper's (left-multiplying) array: model-side symbols are transposed, except
        W_QK (the same bilinear form in both notations) and position-side ones."""
        if m.family in ("A", "N_ln1", "N_ln2", "N_lnf", "Id"):
            return self.tl(m)
        if m.family == "W_QK":
            return self.tl(m)
        return self.tl(Mat(m.family, m.index, not m.transposed))

    def mlp(self, layer: int, X: np.ndarray) -> np.ndarray:
        return ((X @ self.p["W_in", layer]) * self.p["G", layer]) @ self.p["W_out", layer]

    def source_input(self, source: str) -> np.ndarray | None:
        """What a tensor-form term acts on: tokens, position one-hots, the ones column."""
        if source == "embed":
            return self.p["tokens"]
        if source == "pos":
            return np.eye(N_POS)
        if parse_node(source).param == "b_in":
            return None  # the term ends in the state B_in itself
        return np.ones((N_POS, 1))


def eval_right(expr, model: FrozenModel) -> np.ndarray:
    """Value of a right-multiplying expression (TransformerLens arrays)."""
    if isinstance(expr, Mat):
        return model.tl(expr)
    if isinstance(expr, Mul):
        c, nc = expr.args_cnc()
        out = eval_right(nc[0], model)
        for f in nc[1:]:
            out = out @ eval_right(f, model)
        return float(Mul(*c)) * out
    if isinstance(expr, Apply):
        return model.mlp(int(expr.op.index[0]), eval_right(expr.arg, model))
    if isinstance(expr, Tr):
        return eval_right(expr.arg, model).T
    raise TypeError(f"cannot evaluate {type(expr).__name__} in the right form")


def _paper_product(expr, model):
    if isinstance(expr, Mat):
        return model.paper(expr)
    if isinstance(expr, Mul):
        out = None
        for f in expr.args:
            v = _paper_product(f, model)
            out = v if out is None else out @ v
        return out
    if isinstance(expr, Pow):
        return np.linalg.matrix_power(_paper_product(expr.base, model), int(expr.exp))
    raise TypeError(f"cannot evaluate {type(expr).__name__} in a tensor factor")


def _apply_operator(expr, model, X):
    """Apply a tensor-form operator (TP, MLP symbol, or a product of them) to X."""
    if isinstance(expr, TensorProduct):
        P, M = expr.args
        return _paper_product(P, model) @ X @ _paper_product(M, model).T
    if isinstance(expr, Mat) and expr.family == "M":
        return model.mlp(int(expr.index[0]), X)
    if isinstance(expr, Mul):
        for f in reversed(expr.args):
            X = _apply_operator(f, model, X)
        return X
    raise TypeError(f"not an operator: {expr}")


def eval_tensor(expr, model: FrozenModel, source: str) -> np.ndarray:
    """Value of a logit term's tensor form, applied to its source's input."""
    X = model.source_input(source)
    if X is None:  # (operators) · B_in: the state is the last factor
        if isinstance(expr, Mat):
            return model.tl(expr)
        *ops, state = expr.args
        return _apply_operator(Mul(*ops), model, model.tl(state))
    return _apply_operator(expr, model, X)


def eval_score_tensor(term, model: FrozenModel) -> np.ndarray:
    """Value of a score term's paper form ``P_q ⊗ P_k ⊗ B`` on the two sides' inputs."""
    expr = term.expr
    if not isinstance(expr, TensorProduct):
        return eval_right(expr, model)
    Pq, Pk, B = (_paper_product(a, model) for a in expr.args)

    def side_input(src):
        X = model.source_input(src)
        return np.ones((N_POS, 1)) if src.endswith((".b_Q", ".b_K")) else X

    Xq, Xk = side_input(term.query_source), side_input(term.key_source)
    return Pq @ Xq @ B @ Xk.T @ Pk.T
