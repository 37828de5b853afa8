"""Random factor chains for the ``Factored`` tests, and their dense products (the second route).

Not a test module: the ``test_factored_*.py`` files load it by path (``--import-mode=importlib``
puts no test directory on ``sys.path``).
Chains are float64 numpy arrays with 1–4 factors, sizes 1–7 and 0–2 broadcast batch axes
(a factor may lack some leading axes or have size 1 where others are larger).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def chains(draw, min_factors=1, max_factors=4, max_dim=7, square=False, batch=True):
    k = draw(st.integers(min_factors, max_factors))
    dims = [draw(st.integers(1, max_dim)) for _ in range(k + 1)]
    if square:
        dims[-1] = dims[0]
    full = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)) if batch else []
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    factors = []
    for i in range(k):
        nlead = draw(st.integers(0, len(full)))
        lead = [n if draw(st.booleans()) else 1 for n in full[len(full) - nlead:]]
        factors.append(rng.standard_normal(lead + [dims[i], dims[i + 1]]))
    return factors


def dense(factors):
    """The product by plain numpy matmul (broadcasting), left to right."""
    out = factors[0]
    for f in factors[1:]:
        out = out @ f
    return out


def batch_shape(factors):
    return np.broadcast_shapes(*(f.shape[:-2] for f in factors))

