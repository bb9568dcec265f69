"""Tables as HTML: column formats, escaping, alignment of numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .html import escape

Formatter = Callable[[Any], str]


def _number(value: Any, missing: str, *, bools: bool = True) -> float | str:
    """A cell's number as a float, or the text to show instead: ``missing`` for None/NaN,
    ``yes``/``no`` for booleans (when ``bools``), ``str(value)`` for a non-number."""
    if value is None:
        return missing
    if bools and isinstance(value, bool):
        return "yes" if value else "no"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return missing if math.isnan(x) else x


def format_number(value: Any, spec: str = ".6g", *, missing: str = "") -> str:
    """Format a number with ``spec`` (a ``format`` spec); NaN/None give ``missing``.

    Booleans print as ``yes``/``no``; other non-numbers are returned as ``str(value)``.
    """
    x = _number(value, missing)
    if isinstance(x, str):
        return x
    if spec.endswith(("d", "n")) and x.is_integer():
        return format(int(x), spec)
    return format(x, spec)


def format_sig(value: Any, digits: int = 4, *, missing: str = "-") -> str:
    """A number to ``digits`` significant digits in positional notation with thousands
    separators: ``60000.0 -> "60,000"``, ``0.362137 -> "0.3621"``, ``-2.5 -> "-2.5"``,
    ``123456.7 -> "123,500"``; never scientific notation between 1e-6 and 1e15 (outside, the
    ``e`` form of ``digits`` digits); ``-0`` prints as ``0``; NaN/None give ``missing``."""
    x = _number(value, missing)
    if isinstance(x, str):
        return x
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if not -6 <= mag < 15:
        return f"{x:.{max(digits - 1, 0)}e}"
    decimals = digits - 1 - mag
    if decimals <= 0:
        r = round(x, decimals)
        text = f"{r:,.0f}"
    else:
        text = f"{x:,.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return "0" if text.lstrip("-") in ("0", "") else text


def format_fixed(value: Any, decimals: int = 2, *, zero: float = 0.0,
                 missing: str = "-", sign: bool = False) -> str:
    """A number with ``decimals`` decimals and thousands separators, magnitudes below
    ``zero`` shown as ``0`` (numerical noise such as ``1.4e-11``): ``-0.00`` never appears.
    ``sign`` puts ``+`` before positive numbers; NaN/None give ``missing``."""
    x = _number(value, missing, bools=False)
    if isinstance(x, str):
        return x
    if abs(x) < zero:
        x = 0.0
    text = f"{x:{'+' if sign else ''},.{decimals}f}"
    if float(text.replace(",", "")) == 0.0:
        text = f"{0.0:.{decimals}f}"
    return text


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
      key: the field read from each row (a mapping key).
      title: header text (defaults to ``key``).
      fmt: a ``format`` spec for numbers (e.g. ``",.2f"``, ``".1%"``) or a callable
        returning the cell text.
      numeric: right-align the column (default: true when ``fmt`` is a spec).
      wrap: long text that wraps within a bounded width in HTML (class ``text``).
      note: what the column means, shown when the header is hovered (``title``).
    """

    key: str
    title: str | None = None
    fmt: str | Formatter | None = None
    numeric: bool | None = None
    wrap: bool = False
    note: str | None = None

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


def _cls(c: Column) -> str:
    return " class=num" if c.right else (" class=text" if c.wrap else "")


def _q(text: str) -> str:
    return f'"{escape(text)}"'


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
        f'<th{_cls(c)}{f" title={_q(c.note)}" if c.note else ""}>{escape(c.title or c.key)}'
        "</th>" for c in cols
    )
    out.append(f"<thead><tr>{head}</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td{_cls(c)}>{escape(c.text(row.get(c.key)))}</td>' for c in cols
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


__all__ = ["Column", "format_number", "format_sig", "format_fixed", "html_table",
           "text_table"]
