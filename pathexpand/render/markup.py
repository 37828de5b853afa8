"""Small HTML builders for the report: escaped text, tables, figures, rankings.

Every string that did not come from one of these builders is escaped (``escape``); markup
that is already safe travels as ``Raw``. Figures become inline SVG with ids scoped to their
figure, so many share one page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Raw", "escape", "num", "table", "kv_table", "note", "unavailable", "figure",
           "diagram_figure", "ranking_table"]


class Raw(str):
    """Markup inserted as is (already escaped)."""


def escape(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes too, so it is safe inside attributes)."""
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def num(value: Any, spec: str = ".4g") -> str:
    """A number for a table cell: ints with thousands separators, NaN/None as "—"."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    v = float(value)
    return "—" if math.isnan(v) else format(v, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (),
          best: Sequence[int] = (), dim: Sequence[int] = ()) -> str:
    """A ``<table>`` with escaped cells; columns in ``numeric`` right-aligned, ``best`` rows marked,
    ``dim`` rows greyed (e.g. below their baseline)."""
    cls = set(numeric)

    def td(tag: str, i: int, c: Any) -> str:
        return f'<{tag}{" class=num" if i in cls else ""}>{escape(c)}</{tag}>'

    head = "".join(td("th", i, h) for i, h in enumerate(header))
    body = "".join(
        f'<tr{" class=best" if r in best else " class=dim" if r in dim else ""}>' + "".join(td("td", i, c) for i, c in enumerate(row)) + "</tr>"
        for r, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    """A two-column key/value table."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def unavailable(text: str) -> str:
    """One line saying why a section (or part of one) is not shown."""
    return f'<p class="unavailable">{escape(text)}</p>'


def figure(fig, caption: str, prefix: str) -> str:
    """A matplotlib figure as inline SVG in a ``<figure>`` with its caption."""
    from .plots import figure_svg

    return f"<figure>{figure_svg(fig, id_prefix=prefix)}<figcaption>{escape(caption)}</figcaption></figure>"


def diagram_figure(dig, caption: str, prefix: str) -> str:
    """A Graphviz diagram (``render.dot.diagram``) rendered by ``dot`` as inline SVG."""
    from .plots import scope_svg_ids

    svg = dig.svg()
    svg = scope_svg_ids(svg[svg.index("<svg"):], prefix)
    return f'<figure class="diagram">{svg}<figcaption>{escape(caption)}</figcaption></figure>'


def ranking_table(ranking, k: int = 12, *, columns: Sequence[str] = ("name", "kind", "depth"),
                  extra: Sequence[str] = (), share: bool = True) -> str:
    """The ``k`` largest rows of a ``Ranking`` (``Ranking.top``): #, ``columns``, value, share,
    ``extra``, with the cells and alignment every printer of a ranking shows (``Ranking._cells``)."""
    t = ranking.top(k)._cells(path="path" in columns)
    want = ["#", *columns, "value", *(["share"] if share else []), *extra]
    keep = [t.columns.index(c) for c in want if c in t.columns]
    out = table([t.header[i] for i in keep], [[row[i] for i in keep] for row in t.body],
                numeric=[n for n, i in enumerate(keep) if t.columns[i] in t.numeric])
    if len(ranking) > k:
        by = f"|{ranking.value_label}|" if ranking.by_magnitude else ranking.value_label
        out += note(f"top {k} of {len(ranking):,} rows by {by}")
    return out + "".join(note(n) for n in ranking.notes)
