"""``Ranking``: rows of (name, kind, depth, path, value, share, extra columns), and ``Result``,
the protocol every result object speaks.

One table type for everything that ranks paths, heads or pairs: data-free term metrics
(``evaluate``), composition scores, head detectors and data-based attributions. Every result
object (``Attribution``, ``CompositionScores``, ``HeadScores``, ...) is a ``Result``: it has
``.ranking(...) -> Ranking``, ``.to_records()`` (plain dicts with at least ``name`` and
``value``), ``.top(k)`` (the k largest rows, a ``Ranking``) and ``_repr_html_``. Graphs and
plots take a ``Ranking`` or a ``Result`` (through ``.rankings()``), never anything else.

``of`` says what the rows are: ``"paths"`` (logit paths), ``"score_terms"`` (query path ×
key path pairs of one head; rows carry ``head``, ``query_path``, ``key_path``), ``"nodes"``
(heads and MLPs), ``"edges"`` (``(writer, reader)`` reads), ``"pairs"`` (composition of an
earlier head into a later one), ``"heads"`` (per-head statistics) or ``"depths"`` (paths
grouped by depth). ``by_magnitude``: the
value is a signed contribution and "largest" means largest ``|value|`` (attributions);
otherwise largest means largest value (metrics, scores, statistics).

``share = value / total``, with ``total`` given by the producer (e.g. the target logit for
an attribution) or, by default, Σ|value| over the finite values — so shares of non-negative
metrics sum to 1. Filtering keeps the original total: shares stay shares of the whole.

>>> r = Ranking([dict(name="L1H0∘L0H0", kind="virtual", depth=2, path=("embed", "L0H0", "L1H0"), value=3.0),
...              dict(name="direct", kind="direct", depth=0, path=("embed",), value=1.0)])
>>> r.top(1)[0].name, r[0].share
('L1H0∘L0H0', 0.75)
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import PathexpandError, check_int
from .names import parse_term_name

__all__ = ["BASE_COLUMNS", "ROWS_OF", "Ranking", "Result", "Row"]

BASE_COLUMNS = ("name", "kind", "depth", "path", "value", "share")
ROWS_OF = ("paths", "score_terms", "nodes", "edges", "pairs", "heads", "depths")
ARROW = " → "
HTML_ROWS = 20  # rows a notebook shows before "showing 20 of n"
_BASELINE_COLUMNS = ("score", "baseline", "null", "ratio", "z")  # the last a narrow table gives up


@dataclass(frozen=True)
class Row:
    """One ranked item: a term, head or pair. ``extra`` holds producer-specific columns."""

    name: str
    kind: str
    depth: int
    path: tuple[str, ...]
    value: float
    share: float = math.nan
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "path", tuple(self.path))
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "share", float(self.share))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def __getitem__(self, column: str) -> Any:
        if column in BASE_COLUMNS:
            return getattr(self, column)
        try:
            return self.extra[column]
        except KeyError:
            raise KeyError(
                f"{column!r} is not a column of this row; columns are "
                f"{list(BASE_COLUMNS) + list(self.extra)}"
            ) from None

    @property
    def nodes(self) -> frozenset[str]:
        """Every node named by the row: its path and any tuple-valued extra column."""
        out = set(self.path)
        for v in self.extra.values():
            if isinstance(v, tuple):
                out.update(str(x) for x in v)
        return frozenset(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; tuples become lists, NaN becomes None (JSON-ready)."""
        d = {c: getattr(self, c) for c in BASE_COLUMNS}
        d.update(self.extra)
        return {k: _plain(v) for k, v in d.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _text(v: Any, column: str = "") -> str:
    """One table cell as every printer writes it: 4 significant digits, shares in %, NaN as —,
    paths joined by →, ``True`` as ✓ and ``False`` or a missing value as nothing."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else ""
    if isinstance(v, (tuple, list)):
        return ARROW.join(str(x) for x in v)
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        v = float(v)
        if math.isnan(v):
            return "—"
        return f"{v:.1%}" if column == "share" else f"{v:.4g}"
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class _Cells:
    """A ranking as its printers show it: ``columns`` (``"#"`` then the row keys shown),
    ``header`` (their labels), ``body`` (cell strings, one tuple per row) and ``numeric``
    (the columns to right-align)."""

    columns: tuple[str, ...]
    header: tuple[str, ...]
    body: tuple[tuple[str, ...], ...]
    numeric: frozenset[str]


class Result:
    """The protocol of every result object: ``ranking``, ``rankings``, ``to_records``, ``top``,
    ``_repr_html_``.

    A subclass defines ``ranking(...)`` (its rows as a ``Ranking``; options select a view or
    a statistic) and, when it has several views, ``rankings()`` (all of them, for a graph to
    read). ``top(k, **options)`` is ``ranking(**options).top(k)``; ``to_records()`` is
    ``ranking().to_records()``; the notebook shows a one-line summary and the top rows.
    """

    def ranking(self, *args, **kwargs) -> Ranking:
        raise NotImplementedError(f"{type(self).__name__} does not define ranking()")

    def rankings(self) -> tuple[Ranking, ...]:
        """Every view of the result as a ``Ranking`` (one unless the result has several)."""
        return (self.ranking(),)

    def top(self, k: int = 10, *args, **options) -> Ranking:
        """The ``k`` largest rows of ``ranking(*args, **options)``, largest first."""
        return self.ranking(*args, **options).top(k)

    def to_records(self, *args, **options) -> list[dict[str, Any]]:
        """The rows of ``ranking(*args, **options)`` as plain dicts (``name``, ``value``, ...)."""
        return self.ranking(*args, **options).to_records()

    def summary(self) -> str:
        """One line saying what the result is (the notebook's heading)."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.summary()}>"

    def _repr_html_(self) -> str:
        from .render.notebook import result_html  # display only: render is imported on use

        return result_html(self.summary(), self.ranking())


class Ranking(Result, Sequence[Row]):
    """An ordered table of ``Row``s; ``len``, indexing by position, slice or name, export.

    ``Ranking(rows, *, total=None, title="", value_label="value", notes=(), shares=True,
    of="paths", by_magnitude=False)``: ``rows`` are ``Row``s or dicts with the base columns
    (``share`` is recomputed as value/total) and any extra columns; ``shares=False`` for
    statistics whose sum means nothing (share is then NaN and left out of the text tables);
    ``of`` and ``by_magnitude`` as in the module docstring. Order is kept as given;
    ``sort_by``/``top`` return new rankings.
    """

    def __init__(
        self,
        rows: Iterable[Row | Mapping[str, Any]],
        *,
        total: float | None = None,
        title: str = "",
        value_label: str = "value",
        notes: Sequence[str] = (),
        shares: bool = True,
        of: str = "paths",
        by_magnitude: bool = False,
    ):
        if of not in ROWS_OF:
            raise PathexpandError(f"of must be one of {', '.join(ROWS_OF)}; got {of!r}")
        raw = [r if isinstance(r, Row) else _row_from_mapping(r) for r in rows]
        if not shares:  # statistics whose sum means nothing (z-scores, detector scores)
            total = math.nan
        elif total is None:
            total = sum(abs(r.value) for r in raw if math.isfinite(r.value))
        total = float(total)
        self._rows = tuple(
            Row(r.name, r.kind, r.depth, r.path, r.value,
                r.value / total if total and math.isfinite(total) and math.isfinite(r.value)
                else math.nan, r.extra)
            for r in raw
        )
        self.total = total
        self.title = title
        self.value_label = value_label
        self.notes = tuple(notes)
        self.of = of
        self.by_magnitude = bool(by_magnitude)

    def _new(self, rows: Iterable[Row]) -> Ranking:
        out = Ranking.__new__(Ranking)
        out._rows = tuple(rows)
        out.total, out.title, out.value_label, out.notes, out.of, out.by_magnitude = (
            self.total, self.title, self.value_label, self.notes, self.of, self.by_magnitude
        )
        return out

    def ranking(self) -> Ranking:
        """Itself: a ``Ranking`` is the simplest ``Result``."""
        return self

    def summary(self) -> str:
        return f"{self.title or 'ranking'}: {len(self)} rows"

    # sequence ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._new(self._rows[key])
        if isinstance(key, str):
            for r in self._rows:
                if r.name == key:
                    return r
            names = [r.name for r in self._rows[:5]]
            raise KeyError(f"no row named {key!r}; rows are {names}{' ...' if len(self) > 5 else ''}")
        if isinstance(key, bool) or not isinstance(key, int):
            raise PathexpandError(f"index a Ranking by int, slice or row name, got {key!r}")
        return self._rows[key]

    def __contains__(self, name: object) -> bool:
        return any(r.name == name or r is name for r in self._rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranking) and self._rows == other._rows

    __hash__ = None  # type: ignore[assignment]

    @property
    def columns(self) -> tuple[str, ...]:
        """Base columns, then extra columns in order of first appearance."""
        extra: dict[str, None] = {}
        for r in self._rows:
            extra.update(dict.fromkeys(r.extra))
        return BASE_COLUMNS + tuple(extra)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    @property
    def values(self) -> np.ndarray:
        """The value column as a float64 numpy array."""
        return np.array([r.value for r in self._rows], dtype=np.float64)

    def column(self, name: str) -> list[Any]:
        """One column as a list (missing extras are None)."""
        if name in BASE_COLUMNS:
            return [getattr(r, name) for r in self._rows]
        if name not in self.columns:
            raise KeyError(f"{name!r} is not a column; columns are {list(self.columns)}")
        return [r.extra.get(name) for r in self._rows]

    # ordering and selection ----------------------------------------------------------------
    def sort_by(self, column: str = "value", *, descending: bool = True, absolute: bool = False) -> Ranking:
        """Rows ordered by ``column`` (by |value| when ``absolute``), stable; NaN and None last."""
        if column not in self.columns:
            raise PathexpandError(f"cannot sort by {column!r}; columns are {list(self.columns)}")

        def get(r: Row):
            v = r[column] if column in BASE_COLUMNS or column in r.extra else None
            return None if isinstance(v, float) and math.isnan(v) else v

        def key(r: Row):
            v = get(r)
            if isinstance(v, tuple):
                return ARROW.join(map(str, v))
            return abs(v) if absolute and isinstance(v, (int, float)) else v

        present = sorted((r for r in self._rows if get(r) is not None), key=key, reverse=descending)
        return self._new(present + [r for r in self._rows if get(r) is None])

    def top(self, k: int = 10) -> Ranking:
        """The ``k`` largest rows, largest first (NaN last): by ``|value|`` when the values are
        signed contributions (``by_magnitude``), else by value."""
        k = check_int("k", k, 0)
        return self.sort_by("value", absolute=self.by_magnitude)[:k]

    def filter(
        self,
        kind: str | Iterable[str] | None = None,
        *,
        through: str | Iterable[str] | None = None,
        depth: int | Iterable[int] | None = None,
        source: str | Iterable[str] | None = None,
        where: Callable[[Row], bool] | None = None,
    ) -> Ranking:
        """Rows matching every condition given.

        ``kind``/``depth``/``source`` (first node of the path) match one value or any of a
        collection; ``through`` a node name (``"L1H0"``) or several, all of which must be on
        the row's path (or in its tuple columns, e.g. a score term's key path).
        """
        kinds = _as_set(kind)
        depths = _as_set(depth)
        sources = _as_set(source)
        nodes = _as_set(through)
        out = []
        for r in self._rows:
            if kinds is not None and r.kind not in kinds:
                continue
            if depths is not None and r.depth not in depths:
                continue
            if sources is not None and (not r.path or r.path[0] not in sources):
                continue
            if nodes is not None and not nodes <= r.nodes:
                continue
            if where is not None and not where(r):
                continue
            out.append(r)
        return self._new(out)

    # export ------------------------------------------------------------------------------
    def to_records(self) -> list[dict[str, Any]]:
        """One dict per row (paths as lists, NaN as None)."""
        cols = self.columns
        return [{c: r.to_dict().get(c) for c in cols} for r in self._rows]

    def to_json(self, path: str | Path | None = None, **kwargs) -> str:
        """JSON text ``{"title", "total", "value_label", "notes", "rows"}``; written to ``path`` if given."""
        doc = {
            "title": self.title,
            "value_label": self.value_label,
            "total": _plain(self.total),
            "notes": list(self.notes),
            "rows": self.to_records(),
        }
        text = json.dumps(doc, ensure_ascii=False, indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV text with a header row (paths joined by ' → '); written to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = self.columns
        writer.writerow(cols)
        for r in self._rows:
            writer.writerow([_csv_cell(r.to_dict().get(c)) for c in cols])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def path_in_name(self) -> bool:
        """True when every row's path can be read off its name (``L1H2∘L0H0`` is
        ``embed → L0H0 → L1H2``, a head statistic's path is the head), so tables need not show both."""
        for r in self._rows:
            if r.path == (r.name,) or (r.path and r.name.startswith(ARROW.join(r.path))):
                continue                # a head; an edge a → b; a pair a → b.k
            try:
                if parse_term_name(r.name) != r.path:
                    return False
            except PathexpandError:
                return False
        return True

    def _cells(self, path: bool | None = None, rows: int | None = None) -> _Cells:
        """The one table every printer (``__str__``, ``rich_table``, the notebook's HTML) shows:
        share left out when the total is not finite, path when ``path`` is False (default: when
        the names say the paths), cells by ``_text``; a column is numeric when every value in it
        is a number. ``rows``: only the first ``rows`` rows' cells (the columns still judged on all)."""
        if path is None:
            path = not self.path_in_name()
        cols = [c for c in self.columns if (c != "share" or math.isfinite(self.total))
                and (c != "path" or path)]
        numeric = {"#", "depth", "value", "share"} | {
            c for c in cols if c not in BASE_COLUMNS
            and any(r.extra.get(c) is not None for r in self._rows)
            and all(_is_number(r.extra[c]) for r in self._rows if r.extra.get(c) is not None)}
        body = tuple(
            (str(i), *(_text(getattr(r, c) if c in BASE_COLUMNS else r.extra.get(c), c) for c in cols))
            for i, r in enumerate(self._rows[:rows], 1))
        return _Cells(("#", *cols), ("#", *(self.value_label if c == "value" else c for c in cols)),
                      body, frozenset(c for c in numeric if c in cols or c == "#"))

    def __str__(self) -> str:
        t = self._cells()
        widths = [max(len(row[i]) for row in [t.header, *t.body]) for i in range(len(t.header))]

        def line(cells):
            return "  ".join(c.rjust(w) if col in t.numeric else c.ljust(w)
                             for col, c, w in zip(t.columns, cells, widths)).rstrip()

        out = [self.title] if self.title else []
        out += [line(t.header), line(["-" * w for w in widths])] + [line(b) for b in t.body]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def __repr__(self) -> str:
        head = ", ".join(r.name for r in self._rows[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"Ranking({len(self)} rows: {head}{more})"

    def rich_table(self, width: int | None = None):
        """A ``rich.table.Table`` of the rows that fits ``width`` columns (default: the terminal's,
        ``COLUMNS`` respected): the path is left out when the name says it, then the path, kind,
        depth, share and extra columns while too wide; names are never cut."""
        from .render.text import terminal_table  # display only: rich is imported on use

        t = self._cells()
        header, body = list(t.header), [list(b) for b in t.body]
        fixed = ("#", "name", self.value_label, "path", "kind", "depth", "share")
        extras = [h for h in header if h not in fixed]
        same = [h for h in extras if len({b[header.index(h)] for b in body}) == 1 and len(body) > 1]
        late = [h for h in extras if h in _BASELINE_COLUMNS]
        drop = ("path", *same, "kind", "depth", "share",
                *reversed([h for h in extras if h not in same and h not in late]), *reversed(late))
        right = tuple(h for c, h in zip(t.columns, t.header) if c in t.numeric)
        return terminal_table(header, body, width=width, title=self.title, caption="; ".join(self.notes),
                              right=right, drop=drop,
                              whole=("name",), wrap=("path",))

    def __rich__(self):
        return self.rich_table()

    def _repr_html_(self) -> str:
        from .render.notebook import result_html  # display only: render is imported on use

        return result_html("", self)


def _as_set(value) -> set | None:
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return {value}
    return set(value)


def _csv_cell(v: Any) -> Any:
    if isinstance(v, list):
        return ARROW.join(str(x) for x in v)
    if v is None:
        return ""
    return v


def _row_from_mapping(m: Mapping[str, Any]) -> Row:
    missing = [c for c in ("name", "kind", "depth", "path", "value") if c not in m]
    if missing:
        raise PathexpandError(
            f"a ranking row needs columns {list(BASE_COLUMNS[:5])}; missing {missing} in {dict(m)!r}"
        )
    extra = {k: v for k, v in m.items() if k not in BASE_COLUMNS}
    return Row(m["name"], m["kind"], int(m["depth"]), tuple(m["path"]), m["value"], extra=extra)
