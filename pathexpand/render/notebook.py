"""Notebook display: a styled HTML table of a ranking's top rows and hand-written HTML heatmaps.

``result_html(summary, ranking, heatmaps)`` is what every result's ``_repr_html_`` returns: a
heading, optional heatmaps, then ``table_html(ranking)``. Standard library only (no matplotlib):
a heatmap is an HTML table whose cells carry their colour, value and label, so it renders the
same in Jupyter (light or dark), VS Code and a saved HTML file. All styling is one small CSS
scoped to ``.pe-nb``; every text is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..ranking import BASE_COLUMNS, HTML_ROWS

__all__ = ["CSS", "Heatmap", "heatmap_html", "result_html", "table_html"]

ROWS = HTML_ROWS  # rows a notebook shows before "showing 20 of n"

# one stylesheet, scoped to .pe-nb; colours inherit the notebook's own text colour (light/dark)
CSS = """
.pe-nb{font-size:13px;line-height:1.35;color:inherit;max-width:100%;overflow-x:auto}
.pe-nb .pe-head{font-weight:600;margin:0 0 4px}
.pe-nb table{border-collapse:collapse;margin:2px 0 6px;color:inherit;background:transparent}
.pe-nb caption{caption-side:top;text-align:left;font-weight:600;padding:2px 0}
.pe-nb th,.pe-nb td{padding:2px 8px;border:0;border-bottom:1px solid rgba(128,128,128,.25);
  text-align:left;vertical-align:top;background:transparent;color:inherit}
.pe-nb thead th{border-bottom:1px solid rgba(128,128,128,.7)}
.pe-nb td.pe-num,.pe-nb th.pe-num{text-align:right;font-variant-numeric:tabular-nums}
.pe-nb td.pe-path{opacity:.75;font-size:12px}
.pe-nb tr.pe-below td{opacity:.55}
.pe-nb .pe-count,.pe-nb .pe-note{margin:2px 0;opacity:.8;font-size:12px}
.pe-nb .pe-maps{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.pe-nb table.pe-heat td.pe-cell{text-align:center;min-width:44px;border:1px solid rgba(128,128,128,.3);
  font-variant-numeric:tabular-nums}
.pe-nb table.pe-heat th{font-weight:normal;font-size:12px;border:0;text-align:center}
.pe-nb .pe-scale{display:flex;align-items:center;gap:4px;font-size:11px;opacity:.85}
.pe-nb .pe-bar{width:90px;height:9px;border:1px solid rgba(128,128,128,.4)}
""".strip()

@dataclass(frozen=True)
class Heatmap:
    """A labelled matrix to show as coloured cells: ``values[i][j]`` is row ``rows[i]``, column
    ``cols[j]`` (NaN: an empty cell); ``signed``: a blue–white–red scale centred at 0, else white–red
    from the smallest to the largest value."""

    title: str
    values: Sequence[Sequence[float]]
    rows: Sequence[str]
    cols: Sequence[str]
    signed: bool = False
    note: str = ""


def table_html(ranking, rows: int = ROWS) -> str:
    """The first ``rows`` rows of ``ranking`` as a table, with "showing r of n" under it.

    The path column is left out when the names say the paths (``Ranking.path_in_name``), and the
    share column when shares mean nothing; rows below their baseline are faded.
    """
    esc = html.escape
    t = ranking._cells(rows=rows)   # the cells, columns and alignment every printer shows
    num = ' class="pe-num"'
    head = "".join(f'<th{num if c in t.numeric else ""}>{esc(h)}</th>' for c, h in zip(t.columns, t.header))
    body = []
    for r, texts in zip(ranking, t.body):
        cells = []
        for c, text in zip(t.columns, texts):
            v = None if c == "#" else r[c] if c in BASE_COLUMNS else r.extra.get(c)
            cls = "pe-num" if c in t.numeric else ("pe-path" if c == "path" else "")
            attr = f' class="{cls}"' if cls else ""
            title = f' title="{v!r}"' if isinstance(v, float) and math.isfinite(v) else ""
            cells.append(f"<td{attr}{title}>{esc(text)}</td>")
        below = ' class="pe-below"' if r.extra.get("below_baseline") is True else ""
        body.append(f"<tr{below}>" + "".join(cells) + "</tr>")
    total = len(ranking)
    cap = f"<caption>{esc(ranking.title)}</caption>" if ranking.title else ""
    count = (f"showing {min(rows, total)} of {total} rows"
             + ("; .top(k) or .to_records() for the rest" if total > rows else ""))
    notes = "".join(f'<p class="pe-note">note: {esc(n)}</p>' for n in ranking.notes)
    return (f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<p class="pe-count">{esc(count)}</p>{notes}')


def _colour(t: float, signed: bool) -> str:
    """``t`` in [0, 1] (signed: [-1, 1]) → an rgb() from white to red (to blue below 0)."""
    t = max(-1.0, min(1.0, t))
    if t >= 0:
        g = round(255 - t * (255 - 60))
        return f"rgb({round(255 - t * (255 - 200))},{g},{g})"
    b = round(255 + t * (255 - 60))
    return f"rgb({b},{b},{round(255 + t * (255 - 200))})"


def _short(v: float, hi: float, lo: float) -> str:
    """A heatmap cell's text: 3 decimals for scores of order one, else 3 significant digits."""
    return f"{v:.3f}" if max(abs(hi), abs(lo)) < 100 else f"{v:.3g}"


def heatmap_html(m: Heatmap) -> str:
    """One heatmap: a table of coloured cells (value as text, ``data-value`` exact) and a scale."""
    esc = html.escape
    finite = [float(v) for row in m.values for v in row if v is not None and math.isfinite(v)]
    if m.signed:
        hi = max((abs(v) for v in finite), default=0.0)
        lo = -hi
    else:
        lo, hi = min(finite, default=0.0), max(finite, default=0.0)

    def scaled(v: float) -> float:
        if m.signed:
            return v / hi if hi else 0.0
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    out = [f'<table class="pe-heat"><caption>{esc(m.title)}</caption><thead><tr><th></th>']
    out += [f"<th>{esc(c)}</th>" for c in m.cols]
    out.append("</tr></thead><tbody>")
    for name, row in zip(m.rows, m.values):
        out.append(f"<tr><th>{esc(name)}</th>")
        for col, v in zip(m.cols, row):
            if v is None or not math.isfinite(v):
                out.append('<td class="pe-cell" data-value="nan"></td>')
                continue
            t = scaled(float(v))
            ink = "#fff" if abs(t) > 0.65 else "#111"
            out.append(f'<td class="pe-cell" data-value="{float(v)!r}" title="{esc(name)} → {esc(col)}: {float(v):.6g}" '
                       f'style="background:{_colour(t, m.signed)};color:{ink}">{esc(_short(float(v), hi, lo))}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    stops = (f"{_colour(-1, True)},{_colour(0, True)},{_colour(1, True)}" if m.signed
             else f"{_colour(0, False)},{_colour(1, False)}")
    out.append(f'<div class="pe-scale"><span>{esc(_short(lo, hi, lo))}</span>'
               f'<span class="pe-bar" style="background:linear-gradient(90deg,{stops})"></span>'
               f'<span>{esc(_short(hi, hi, lo))}</span></div>')
    if m.note:
        out.append(f'<p class="pe-note">{esc(m.note)}</p>')
    return "<div>" + "".join(out) + "</div>"


MAX_CELLS = 64 * 64  # a heatmap larger than this is left out of the notebook (say so instead)


def result_html(summary: str, ranking, heatmaps: Sequence[Heatmap] = (), rows: int = ROWS) -> str:
    """A result in a notebook: its one-line summary, its heatmaps (those of at most ``MAX_CELLS``
    cells; a line says which were left out), then its ranking's top rows."""
    shown = [m for m in heatmaps if len(m.rows) * len(m.cols) <= MAX_CELLS]
    left = [m for m in heatmaps if m not in shown]
    maps = (f'<div class="pe-maps">{"".join(heatmap_html(m) for m in shown)}</div>' if shown else "")
    if left:
        maps += (f'<p class="pe-note">heatmaps left out ({len(left[0].rows)}×{len(left[0].cols)} cells, '
                 f'over {MAX_CELLS}): {html.escape(", ".join(m.title for m in left))}</p>')
    head = f'<p class="pe-head">{html.escape(summary)}</p>' if summary else ""
    return f'<div class="pe-nb"><style>{CSS}</style>{head}{maps}{table_html(ranking, rows)}</div>'
