"""Jupyter display for result objects whose ``str`` is a fixed-width table."""

from __future__ import annotations

import html

__all__ = ["TextTableHTML"]


class TextTableHTML:
    """Mixin: ``_repr_html_`` shows ``str(self)`` in a ``<pre>`` block, escaped."""

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"
