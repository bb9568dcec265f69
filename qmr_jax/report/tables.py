"""Tables as HTML: column formats, escaping, alignment of numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .html import escape

Formatter = Callable[[Any], str]


def format_number(value: Any, spec: str = ".6g", *, missing: str = "") -> str:
    """Format a number with ``spec`` (a ``format`` spec); NaN/None give ``missing``.

    Booleans print as ``yes``/``no``; other non-numbers are returned as ``str(value)``.
    """
    if value is None:
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return missing
    if spec.endswith(("d", "n")) and x.is_integer():
        return format(int(x), spec)
    return format(x, spec)


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
      key: the field read from each row (a mapping key).
      title: header text (defaults to ``key``).
      fmt: a ``format`` spec for numbers (e.g. ``",.2f"``, ``".1%"``) or a callable
        returning the cell text.
      numeric: right-align the column (default: true when ``fmt`` is a spec).
    """

    key: str
    title: str | None = None
    fmt: str | Formatter | None = None
    numeric: bool | None = None

    def text(self, value: Any) -> str:
        if callable(self.fmt):
            return self.fmt(value)
        if self.fmt is not None:
            return format_number(value, self.fmt)
        if isinstance(value, bool | float):
            return format_number(value)
        return "" if value is None else str(value)

    @property
    def right(self) -> bool:
        return self.numeric if self.numeric is not None else isinstance(self.fmt, str)


def _columns(rows: Sequence[Mapping[str, Any]], columns) -> list[Column]:
    if columns is None:
        keys = list(rows[0].keys()) if rows else []
        return [Column(k) for k in keys]
    return [c if isinstance(c, Column) else Column(str(c)) for c in columns]


def html_table(
    rows: Iterable[Mapping[str, Any]] | Any,
    columns: Sequence[Column | str] | None = None,
    *,
    caption: str | None = None,
    css_class: str = "table",
) -> str:
    """Render rows (mappings, or a pandas DataFrame) as an escaped HTML ``<table>``.

    Args:
      rows: an iterable of mappings from column key to value, or a DataFrame.
      columns: the columns to show, in order (``Column`` or plain keys); default all keys of
        the first row.
      caption: optional caption (escaped).
      css_class: the table's class attribute.

    Returns:
      The HTML fragment.
    """
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict(orient="records")
    rows = list(rows)
    cols = _columns(rows, columns)
    out = [f'<table class="{escape(css_class)}">']
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    head = "".join(
        f'<th{" class=num" if c.right else ""}>{escape(c.title or c.key)}</th>' for c in cols
    )
    out.append(f"<thead><tr>{head}</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td{" class=num" if c.right else ""}>{escape(c.text(row.get(c.key)))}</td>'
            for c in cols
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)




def text_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column | str]) -> str:
    """Render rows as a plain-text table with aligned columns (numbers right-aligned).

    The first line is the header, the second a rule of dashes; cells are separated by two
    spaces, so the output splits on whitespace when no cell contains spaces.
    """
    rows = list(rows)
    cols = _columns(rows, columns)
    cells = [[c.text(r.get(c.key)) for c in cols] for r in rows]
    heads = [c.title or c.key for c in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]

    def line(items):
        parts = [
            s.rjust(w) if c.right else s.ljust(w)
            for s, w, c in zip(items, widths, cols, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


__all__ = ["Column", "format_number", "html_table", "text_table"]
