"""A small HTML page builder: headings, text, tables, key/value lists, linked images, a
navigation bar.

Every piece of text passed in is escaped; only fragments produced by this package's own
builders (``html_table``) are inserted verbatim through ``Page.add_html``.
"""

from __future__ import annotations

import base64
import html as _html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td.text { min-width: 12em; max-width: 30em; white-space: normal; overflow-wrap: anywhere; }
div.scroll { max-width: 100%; overflow-x: auto; }
body.wide { max-width: 1400px; }
nav.reports { margin: .4em 0 1.2em; padding: .5em .8em; background: #f3f5f8;
              border: 1px solid #d5dae1; border-radius: 4px; }
nav.reports ul { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap;
                 gap: .3em 1.4em; }
nav.reports .label { font-weight: 600; margin-right: .8em; }
tr:nth-child(even) td { background: #fafafa; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: .15em 1.2em; }
dl.kv dt { font-weight: 600; } dl.kv dd { margin: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
.note { color: #555; font-size: .92em; }
"""


def escape(text: Any) -> str:
    """HTML-escape ``str(text)`` (quotes included)."""
    return _html.escape(str(text), quote=True)


class Page:
    """An HTML document assembled from escaped parts.

    Examples:
      >>> page = Page("Report")
      >>> page.add_heading("Results", level=2)
      >>> page.add_paragraph("a < b")
      >>> "a &lt; b" in page.render()
      True
    """

    def __init__(self, title: str, *, wide: bool = False):
        self.title = title
        self.wide = bool(wide)  # up to 1400 px instead of 72em (wide tables)
        self._parts: list[str] = []

    def add_heading(self, text: str, level: int = 2) -> None:
        if level not in range(1, 7):
            raise ValueError(f"heading level must be 1..6; got {level!r}")
        self._parts.append(f"<h{level}>{escape(text)}</h{level}>")

    def add_paragraph(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{escape(text)}</p>")

    def add_list(self, items) -> None:
        lis = "".join(f"<li>{escape(i)}</li>" for i in items)
        self._parts.append(f"<ul>{lis}</ul>")

    def add_key_values(self, items: Mapping[str, Any]) -> None:
        body = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items.items())
        self._parts.append(f'<dl class="kv">{body}</dl>')

    def add_preformatted(self, text: str) -> None:
        self._parts.append(f"<pre>{escape(text)}</pre>")

    def add_nav(self, links, *, label: str = "Reports") -> None:
        """A navigation bar: ``links`` is a sequence of ``(text, href)`` pairs (or a mapping
        text -> href), shown in order after ``label``."""
        items = list(links.items()) if isinstance(links, Mapping) else list(links)
        lis = "".join(f'<li><a href="{escape(href)}">{escape(text)}</a></li>'
                      for text, href in items)
        self._parts.append(f'<nav class="reports"><ul><li class="label">{escape(label)}</li>'
                           f"{lis}</ul></nav>")

    def add_table(self, fragment: str) -> None:
        """Insert a table fragment (``html_table``) in a box that scrolls sideways when the
        table is wider than the page."""
        self._parts.append(f'<div class="scroll">{fragment}</div>')

    def add_html(self, fragment: str) -> None:
        """Insert a trusted fragment (e.g. from ``html_table``) as is."""
        self._parts.append(fragment)

    def add_image(self, src: str | Path, *, alt: str = "", caption: str | None = None,
                  embed: bool = False) -> None:
        """Add a PNG figure.

        Args:
          src: the image path; linked relative to the page unless ``embed``.
          alt: alternative text.
          caption: optional caption under the image.
          embed: inline the file as a base64 ``data:`` URI (the page is then self-contained).
        """
        if embed:
            data = base64.b64encode(Path(src).read_bytes()).decode("ascii")
            url = f"data:image/png;base64,{data}"
            img = f'<img src="{url}" alt="{escape(alt)}">'
        else:
            url = escape(Path(src).as_posix())
            img = f'<a href="{url}"><img src="{url}" alt="{escape(alt)}"></a>'
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f"<figure>{img}{cap}</figure>")

    def render(self) -> str:
        body = "\n".join(self._parts)
        open_body = '<body class="wide">' if self.wide else "<body>"
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"{open_body}\n"
            f"<h1>{escape(self.title)}</h1>\n{body}\n</body>\n</html>\n"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.render(), encoding="utf-8")
        return path


__all__ = ["Page", "escape"]
