"""The symbolic engine: a transformer's logits and attention scores as sums over paths.

sympy only, no weights, no torch. ``expand_logits(arch)`` and ``expand_scores(arch, head)``
return an ``Expansion`` of ``Term``/``ScoreTerm`` objects; ``Expansion.derivation()`` gives
the step-by-step derivation, rendered by ``pathexpand.render`` (LaTeX, Markdown, MathML, text).
"""

from __future__ import annotations

from .derivation import Step, derive
from .expansion import Expansion, Selection
from .logits import LogitExpansion, expand_logits
from .scores import ScoreExpansion, expand_scores, softmax_invariant
from .terms import (
    LOGIT_KINDS,
    SCORE_KINDS,
    ScoreTerm,
    Term,
    parse_score_name,
    parse_term_name,
    score_name,
    term_name,
)

__all__ = [
    "LOGIT_KINDS",
    "SCORE_KINDS",
    "Expansion",
    "LogitExpansion",
    "ScoreExpansion",
    "ScoreTerm",
    "Selection",
    "Step",
    "Term",
    "derive",
    "expand_logits",
    "expand_scores",
    "parse_score_name",
    "parse_term_name",
    "score_name",
    "softmax_invariant",
    "term_name",
]
