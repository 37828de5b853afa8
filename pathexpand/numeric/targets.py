"""What an attribution explains: a linear function of the logits at chosen positions.

``T = Σ_t u_t · logits[p_t]`` for a token (``u = e_a``), a logit difference (``u = e_a − e_b``),
any vector ``u`` over the vocabulary, or ``"logits"`` (every ``e_v``, one functional per
vocabulary entry). Target tokens may be text when the weights carry a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PathexpandError

__all__ = ["Target", "own_target", "resolve_target", "resolve_positions", "token_id"]

_LOGITS_ELEMENTS_MAX = 2**26  # backward vectors [K, b, n, d] for the "logits" target


@dataclass
class Target:
    """A resolved target: ``kind``, readable ``label``, ``positions`` (non-negative) and the
    direction ``U`` ``[batch, T, d_vocab_out]`` (None for ``"logits"``: every vocabulary entry).

    ``shape`` is the per-batch shape of one contribution: ``(T,)`` or ``(T, d_vocab_out)``.
    Internally every target is ``K`` scalar functionals (``K = T`` or ``T · d_vocab_out``).
    """

    kind: str
    label: str
    positions: tuple[int, ...]
    U: Any = None
    d_vocab_out: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        T = len(self.positions)
        return (T, self.d_vocab_out) if self.U is None else (T,)

    @property
    def K(self) -> int:
        return int(np.prod(self.shape))

    def for_batch(self, lo: int, hi: int) -> Target:
        """The same target restricted to prompts ``lo:hi`` (per-prompt tokens follow)."""
        U = None if self.U is None else self.U[lo:hi]
        return Target(self.kind, self.label, self.positions, U, self.d_vocab_out)

    # evaluation -----------------------------------------------------------------------------
    def _direction(self, frozen):
        """``W_U u`` per prompt and position: ``[b, T, d_model]`` (computed once per model)."""
        cached = getattr(self, "_dir", None)
        if cached is not None and cached[0] is frozen:
            return cached[1]
        U = self.U.to(device=frozen.device, dtype=frozen.dtype)             # [b, T, V]
        used = U.ne(0).flatten(0, -2).any(0).nonzero().squeeze(1)          # vocabulary rows read
        if 4 * len(used) < U.shape[-1]:   # a token or a difference: a few columns of W_U
            d = U[..., used] @ frozen.p["W_U"][:, used].T
        else:
            d = U @ frozen.p["W_U"].T
        self._dir = (frozen, d)
        return d

    def readout(self, frozen, f):
        """Target value of a residual-stream field: ``[*, b, n, d] → [*, b, K]``."""
        h = frozen.ln(f, "ln_final", positions=list(self.positions))          # [*, b, T, d]
        if self.U is None:
            y = h @ frozen.p["W_U"]                                           # [*, b, T, V]
            return y.reshape(*y.shape[:-2], -1)
        return (h * self._direction(frozen)).sum(-1)                          # [*, b, T]

    def of_logits(self, logits, frozen):
        """Target value of logits: ``[b, n, V]``, a constant ``[V]``, or None for the model's
        own logits at the target positions. Returns ``[b, K]``."""
        import torch

        if logits is None:
            y = frozen.logits_at(self.positions)                              # [b, T, V]
        elif logits.dim() == 1:
            y = logits.expand(frozen.batch, len(self.positions), -1)
        else:
            y = logits[:, list(self.positions)]
        if self.U is None:
            return y.reshape(y.shape[0], -1)
        U = self.U.to(device=y.device, dtype=y.dtype)
        return torch.einsum("btv,btv->bt", y, U)

    def readout_vectors(self, frozen):
        """Gradient of each functional w.r.t. the final residual: ``[K, b, n, d]``."""
        import torch

        b, n, d = frozen.batch, frozen.n_pos, frozen.config.d_model
        T = len(self.positions)
        if self.U is None:
            size = self.K * b * n * d
            if size > _LOGITS_ELEMENTS_MAX:
                raise PathexpandError(
                    f"node and edge views of target='logits' need {size:,} numbers "
                    f"({T} position(s) × {self.d_vocab_out} logits × batch {b} × {n} × {d}); "
                    "choose a token, a logit difference or a vector target, fewer positions, "
                    "or views=('path',)"
                )
            V = self.d_vocab_out
            r = torch.zeros(T, V, b, n, d, device=frozen.device, dtype=frozen.dtype)
            for t, p in enumerate(self.positions):
                r[t, :, :, p, :] = frozen.p["W_U"].T[:, None, :]
            r = r.reshape(T * V, b, n, d)
        else:
            w = self._direction(frozen)                                       # [b, T, d]
            r = torch.zeros(T, b, n, d, device=frozen.device, dtype=frozen.dtype)
            for t, p in enumerate(self.positions):
                r[t, :, p, :] = w[:, t]
        return frozen.ln_T(r, "ln_final")


# resolution -------------------------------------------------------------------------------
def token_id(weights, token) -> int:
    """One token id from an int or a string (its first token; labels say so when it has more)."""
    d_vocab = weights.config.d_vocab_out
    if isinstance(token, str):
        tok = getattr(weights, "tokenizer", None)
        if tok is None:
            raise PathexpandError(f"target {token!r} is text but these weights have no tokenizer")
        ids = tok.encode(token)
        if not ids:
            raise PathexpandError(f"target {token!r} encodes to no token; give some text or a token id")
        token = ids[0]
    if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
        raise PathexpandError(f"a target token must be an int id or a one-token string, got {token!r}")
    if not 0 <= int(token) < d_vocab:
        raise PathexpandError(f"target token {int(token)} is out of range; ids are in [0, {d_vocab})")
    return int(token)


def _token_ids(weights, spec, batch: int):
    """One id per prompt ``[b]`` from an int/str or a sequence of them."""
    if isinstance(spec, (str, int, np.integer)) and not isinstance(spec, bool):
        return np.full(batch, token_id(weights, spec), dtype=np.int64)
    a = list(np.asarray(spec).ravel()) if not isinstance(spec, (list, tuple)) else list(spec)
    if len(a) != batch:
        raise PathexpandError(f"got {len(a)} target tokens for a batch of {batch} prompts")
    return np.asarray([token_id(weights, t.item() if hasattr(t, "item") else t) for t in a])


def resolve_positions(positions, n_pos: int) -> tuple[int, ...]:
    """``None`` → last; an int (negative counts from the end); a list of ints; ``"all"``."""
    if positions is None:
        return (n_pos - 1,)
    if isinstance(positions, str):
        if positions == "all":
            return tuple(range(n_pos))
        raise PathexpandError(f"positions must be None, an int, a list of ints or 'all', got {positions!r}")
    items = [positions] if isinstance(positions, (int, np.integer)) else list(np.ravel(positions))
    out = []
    for p in items:
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, np.integer)):
            raise PathexpandError(f"positions must be ints, got {p!r}")
        if not -n_pos <= int(p) < n_pos:
            raise PathexpandError(f"position {int(p)} is out of range for {n_pos} tokens")
        out.append(int(p) % n_pos)
    if not out:
        raise PathexpandError("positions is empty; give at least one position")
    return tuple(out)


def resolve_target(weights, target, diff, positions, shape, top=None) -> Target:
    """A ``Target`` from the user's spec for tokens of ``shape = (batch, pos)``.

    ``target=None`` (and no ``diff``) explains the logit of the model's own top prediction
    at each chosen position of each prompt: ``top`` ``[batch, T]`` gives those ids.
    """
    import torch

    b, n = shape
    V = weights.config.d_vocab_out
    pos = resolve_positions(positions, n)
    T = len(pos)

    def per_position(u):  # [b, V] → [b, T, V]
        return u[:, None, :].expand(b, T, V)

    if diff is not None:
        if target is not None:
            raise PathexpandError("give either target=... or diff=(a, b), not both")
        target = ("diff", *tuple(diff)) if isinstance(diff, (list, tuple)) else diff
    if target is None:
        if top is None:
            raise PathexpandError("target=None needs the model's top predictions")  # internal
        top = torch.as_tensor(np.asarray(top), dtype=torch.int64)             # [b, T]
        U = torch.nn.functional.one_hot(top, V).to(torch.float64)
        tok = getattr(weights, "tokenizer", None)
        first = int(top[0, -1])
        name = tok.token_str(first) if tok is not None and hasattr(tok, "token_str") else str(first)
        return Target("top", f"logit of the top prediction ({name!r} at the last position)", pos, U, V)
    if isinstance(target, str) and target == "logits":
        return Target("logits", "all logits", pos, None, V)
    if isinstance(target, tuple) and target and isinstance(target[0], str) and target[0] == "diff":
        if len(target) != 3:
            raise PathexpandError(f"a difference target is ('diff', a, b), got {target!r}")
        a, c = _token_ids(weights, target[1], b), _token_ids(weights, target[2], b)
        U = torch.zeros(b, V, dtype=torch.float64)
        U[torch.arange(b), torch.as_tensor(a)] += 1.0
        U[torch.arange(b), torch.as_tensor(c)] -= 1.0
        return Target("diff", f"logit({_show(weights, target[1])}) − logit({_show(weights, target[2])})",
                      pos, per_position(U), V)
    if isinstance(target, (str, int, np.integer)) and not isinstance(target, bool):
        ids = _token_ids(weights, target, b)
        U = torch.nn.functional.one_hot(torch.as_tensor(ids), V).to(torch.float64)
        return Target("token", f"logit({_show(weights, target)})", pos, per_position(U), V)
    arr = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target)
    if np.issubdtype(arr.dtype, np.integer) and arr.ndim == 1:  # one token id per prompt
        ids = _token_ids(weights, arr, b)
        U = torch.nn.functional.one_hot(torch.as_tensor(ids), V).to(torch.float64)
        return Target("token", "logit of each prompt's token", pos, per_position(U), V)
    if np.issubdtype(arr.dtype, np.number) and arr.shape in ((V,), (b, V)):
        if not np.all(np.isfinite(arr)):
            raise PathexpandError("the target vector has NaN/Inf entries")
        U = torch.as_tensor(np.broadcast_to(arr.astype(np.float64), (b, V)).copy())
        return Target("vector", "a linear function of the logits", pos, per_position(U), V)
    raise PathexpandError(
        f"target must be a token (int or one-token string), ('diff', a, b), 'logits', or a vector "
        f"of {V} numbers (or [batch, {V}]); got {_short(target)}"
    )


def _show(weights, token) -> str:
    if isinstance(token, str):
        tok = getattr(weights, "tokenizer", None)
        ids = tok.encode(token) if tok is not None else []
        if len(ids) > 1:
            first = tok.token_str(ids[0]) if hasattr(tok, "token_str") else str(ids[0])
            return f"{first!r}, the first of the {len(ids)} tokens of {token!r}"
        return repr(token)
    tok = getattr(weights, "tokenizer", None)
    if tok is not None and hasattr(tok, "token_str") and isinstance(token, (int, np.integer)):
        return repr(tok.token_str(int(token)))
    return str(token) if isinstance(token, (int, np.integer)) else "per-prompt tokens"


def _short(x) -> str:
    text = repr(x)
    return text if len(text) < 60 else text[:57] + "..."


def own_target(frozen, weights, positions) -> Target:
    """The target "logit of the model's own top prediction" for the prompts of ``frozen``."""
    pos = resolve_positions(positions, frozen.n_pos)
    top = frozen.logits_at(pos).argmax(-1).cpu().numpy()                   # [b, T]
    return resolve_target(weights, None, None, positions, (frozen.batch, frozen.n_pos), top=top)
