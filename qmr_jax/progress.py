"""Progress of long loops and tables for the terminal, built on ``rich``.

``Progress(total, label, unit=...)`` is the one progress display of the project (sweeps,
named stress scenarios, the demo):

* on a terminal: a ``rich`` bar on stderr with the count, the share done, the rate, the
  elapsed time, the ETA and the item running now, redrawn a few times a second; lines logged
  meanwhile (``item_lines``, ``log``) print above it;
* elsewhere (a pipe, a CI log, a file, a notebook, the tests): plain lines, at most one every
  ``interval`` seconds (``PLAIN_INTERVAL``) as the count advances, one at the start and one at
  the end, and, whenever nothing was written for ``interval`` seconds, the status line with
  the item running and for how long (a background heartbeat): a command is never silent for
  more than a few seconds, and its log stays readable;
* ``stream=None``: silent (the counts are still kept).

A plain line reads ``sweep: 120/234 scenarios (51%), 13.4 scenarios/s, elapsed 9 s, ETA 9 s``
(``, 24 resumed`` when part of the work was done by an earlier run); with ``item_lines`` each
finished item also gets ``stress [3/12] crash: ok in 2.3 s (elapsed 10 s, ETA 30 s)``.

The rate and the ETA count only the work done by this run (resumed items are excluded): the
ETA is the items left over the mean rate so far.

``activity(text)`` covers a step of unknown length (a compilation) the same way: a spinner
with the elapsed time on a terminal; elsewhere a line at its start, one every ``interval``
seconds while it runs and one with its time at the end.

``print_table(rows, columns)`` prints a table: a ``rich`` table on a terminal (numbers
right-aligned, negative numbers in red), else the plain fixed-width text of
``qmr_jax.report.tables.text_table``, so logs and pipes get the same text as before.

Nothing here imports JAX.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

PLAIN_INTERVAL = 5.0
"""Seconds between two plain progress lines (and between heartbeat lines while one item
runs)."""

STDERR = "stderr"
"""The default ``stream``: ``sys.stderr`` as it is when the display is created (so that a
replaced ``sys.stderr``, e.g. a test's capture, is honoured)."""


def format_duration(seconds: float) -> str:
    """A duration for a progress line: ``0.4 s``, ``12 s``, ``3m05s``, ``1h02m``; ``?``
    when unknown (NaN or infinite)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, r = divmod(int(round(s)), 60)
        return f"{m}m{r:02d}s"
    h, r = divmod(int(round(s)), 3600)
    return f"{h}h{r // 60:02d}m"


def _plural(unit: str, n: float) -> str:
    return unit if n == 1 or not unit or unit.endswith("s") else unit + "s"


def rate_text(rate: float, unit: str = "item") -> str:
    """``13.4 scenarios/s``, or ``2.5 s/scenario`` below one item a second; ``? items/s``
    before the first item."""
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return f"? {_plural(unit, 2)}/s"
    if rate >= 1.0:
        return f"{rate:,.1f} {_plural(unit, 2)}/s"
    return f"{1.0 / rate:,.1f} s/{unit}"


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (as ``rich`` sees it: ``isatty``, or
    ``FORCE_COLOR``/``TTY_COMPATIBLE`` in the environment)."""
    if stream is None:
        return False
    from rich.console import Console

    return bool(Console(file=stream).is_terminal)


def _resolve(stream):
    if stream is STDERR or stream is True:
        return sys.stderr
    if stream is False:
        return None
    return stream


class Progress:
    """Progress of a loop over ``total`` items (see the module docstring).

    Args:
      total: number of items of the whole loop (resumed ones included).
      label: what runs (``"sweep"``, ``"stress"``), the start of every line.
      unit: one item's name (``"scenario"``); plurals add an ``s``.
      stream: where to write: ``STDERR`` (default: ``sys.stderr``), any text stream, or
        ``None`` for no output.
      done: items already done before this run (a resumed sweep): counted in the total done,
        not in the rate.
      interval: seconds between plain lines (``PLAIN_INTERVAL``).
      item_lines: also write one line per finished item, with its time (``advance(item=)``).
      terminal: force the terminal bar (``True``) or plain lines (``False``); default: a
        bar when ``stream`` is a terminal.
      heartbeat: in plain mode, a background thread writes a line every ``interval``
        seconds while nothing else is written.
      clock: the time source (seconds; ``time.monotonic``).

    Use as a context manager, or call ``close()`` at the end (it writes the last line)::

        with Progress(len(items), "stress", unit="scenario", item_lines=True) as bar:
            for it in items:
                bar.start(it.name)
                ...
                bar.advance(item=it.name, status="ok")
    """

    def __init__(self, total: int, label: str = "progress", *, unit: str = "item",
                 stream: Any = STDERR, done: int = 0, interval: float = PLAIN_INTERVAL,
                 item_lines: bool = False, terminal: bool | None = None,
                 heartbeat: bool = True, clock: Callable[[], float] = time.monotonic):
        if isinstance(total, bool) or int(total) != total or total < 0:
            raise ValueError(f"total must be a non-negative integer; got {total!r}")
        if not 0 <= done <= total:
            raise ValueError(f"done must be within 0..{total}; got {done!r}")
        self.total, self.label, self.unit = int(total), str(label), str(unit)
        self.done0 = self.done = int(done)
        self.interval = float(interval)
        self.item_lines = bool(item_lines)
        self.stream = _resolve(stream)
        self._clock = clock
        self.t0 = clock()
        self._item: str | None = None
        self._item_t0 = self.t0
        self._lock = threading.RLock()
        self._closed = False
        self._last_line = -math.inf
        self._last_done: int | None = None
        self.terminal = False
        self._rich = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.stream is None:
            return
        self.terminal = is_terminal(self.stream) if terminal is None else bool(terminal)
        if self.terminal:
            self._start_rich()
        else:
            self._line(self.start_line())
            self._last_done = None  # the start line is not the final one
            if heartbeat and self.interval > 0:
                self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                                name=f"progress-{self.label}")
                self._thread.start()

    # -- numbers ----------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since the display was created."""
        return self._clock() - self.t0

    @property
    def rate(self) -> float:
        """Items per second done by this run (NaN before the first)."""
        n, el = self.done - self.done0, self.elapsed
        return n / el if n > 0 and el > 0 else float("nan")

    @property
    def eta(self) -> float:
        """Seconds left at the mean rate so far (0 when done, NaN before the first item)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        r = self.rate
        return left / r if r > 0 else float("nan")

    def start_line(self) -> str:
        """The first plain line: ``sweep: 210 of 234 scenarios to run (24 resumed)``."""
        left = self.total - self.done
        if not self.done0:
            return f"{self.label}: {self.total:,} {_plural(self.unit, self.total)} to run"
        return (f"{self.label}: {left:,} of {self.total:,} {_plural(self.unit, self.total)} "
                f"to run ({self.done0:,} resumed)")

    def status_line(self) -> str:
        """The plain progress line (see the module docstring)."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        resumed = self.done0
        text = (f"{self.label}: {self.done:,}/{self.total:,} {_plural(self.unit, self.total)} "
                f"({pct:.0f}%)")
        if resumed:
            text += f", {resumed:,} resumed"
        text += (f", {rate_text(self.rate, self.unit)}, elapsed "
                 f"{format_duration(self.elapsed)}, ETA {format_duration(self.eta)}")
        if self._item is not None and self.done < self.total:
            text += f"; running {self._item} for {format_duration(self._clock() - self._item_t0)}"
        return text

    # -- updates ----------------------------------------------------------------------------

    def start(self, item: str | None = None) -> None:
        """An item starts: its name is shown, and its time runs from now."""
        with self._lock:
            self._item = None if item is None else str(item)
            self._item_t0 = self._clock()
            if self._rich is not None:
                self._rich.update(self._task, item=self._item or "")

    def advance(self, n: int = 1, *, item: str | None = None, status: str | None = None
                ) -> None:
        """``n`` more items done. With ``item_lines``, write the finished item's line
        (``item``: its name, default the one given to ``start``; ``status``: e.g. ``"ok"``)."""
        with self._lock:
            now = self._clock()
            took = now - self._item_t0
            self.done = min(self.total, self.done + int(n))
            name = item if item is not None else self._item
            self._item, self._item_t0 = None, now
            if self.stream is None:
                return
            if self.item_lines:
                self.log(self.item_line(name, took, status))
            if self._rich is not None:
                self._rich.update(self._task, completed=self.done, item="")
            elif not self.item_lines and (now - self._last_line >= self.interval
                                          or self.done >= self.total):
                self._line(self.status_line())

    def item_line(self, item: str | None, seconds: float, status: str | None = None) -> str:
        """``stress [3/12] crash: ok in 2.3 s (elapsed 10 s, ETA 30 s)``."""
        width = len(f"{self.total}")
        what = f" {item}:" if item else ""
        st = f" {status}" if status else ""
        return (f"{self.label} [{self.done:>{width}}/{self.total}]{what}{st} in "
                f"{format_duration(seconds)} (elapsed {format_duration(self.elapsed)}, "
                f"ETA {format_duration(self.eta)})")

    def log(self, text: str) -> None:
        """Write a line of text (above the bar on a terminal)."""
        with self._lock:
            if self.stream is None:
                return
            if self._rich is not None:
                self._rich.console.print(text, markup=False, highlight=False)
                self._last_line = self._clock()
            else:
                self._line(text)

    def close(self) -> None:
        """Stop the display; plain mode writes the final line (unless the last line written
        already says everything is done)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._rich is not None:
                self._rich.update(self._task, completed=self.done, item="")
                self._rich.stop()
            elif self.stream is not None and not self._final_written:
                self._line(self.status_line())
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- output -----------------------------------------------------------------------------

    @property
    def _final_written(self) -> bool:
        return self._last_done == self.done and self.done >= self.total

    def _line(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe never stops the computation
            self.stream = None
            return
        self._last_line = self._clock()
        self._last_done = self.done

    def beat(self) -> bool:
        """The heartbeat's check: write the status line if nothing was written for
        ``interval`` seconds (plain mode). Returns whether a line was written."""
        with self._lock:
            if (self._closed or self.stream is None or self._rich is not None
                    or self._clock() - self._last_line < self.interval):
                return False
            self._line(self.status_line())
            return True

    def _heartbeat(self) -> None:
        step = max(0.05, min(1.0, self.interval / 5))
        while not self._stop.wait(step):
            self.beat()

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        owner = self

        class _Info(ProgressColumn):
            """Rate, elapsed time, ETA, resumed count and the running item."""

            def render(self, task):
                # the most useful first: a narrow terminal cuts the end of the line
                parts = [f"ETA {format_duration(owner.eta)}",
                         f"{format_duration(owner.elapsed)} elapsed",
                         rate_text(owner.rate, owner.unit)]
                if owner.done0:
                    parts.append(f"{owner.done0:,} resumed")
                if owner._item:
                    parts.append(f"{owner._item} "
                                 f"{format_duration(owner._clock() - owner._item_t0)}")
                return Text(" · ".join(parts), style="progress.data.speed", no_wrap=True,
                            overflow="ellipsis")

        console = Console(file=self.stream, force_terminal=True)
        self._rich = RichProgress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
            MofNCompleteColumn(), TextColumn("{task.percentage:>3.0f}%"), _Info(),
            console=console, refresh_per_second=4, transient=False,
            redirect_stdout=False, redirect_stderr=False)
        self._task = self._rich.add_task(self.label, total=max(self.total, 1),
                                         completed=self.done, item="")
        self._rich.start()


class activity:  # noqa: N801 - used like a function, in a ``with`` statement
    """A step of unknown length (a compilation) as a context manager: a spinner with the
    elapsed time on a terminal; elsewhere a line at the start, one every ``interval``
    seconds while it runs (``... still running, 10 s``) and one at the end with its time.
    ``stream=None`` is silent.

    Examples:
      >>> import io
      >>> out = io.StringIO()
      >>> with activity("sweep: compiling", out, terminal=False):
      ...     pass
      >>> out.getvalue().splitlines()[0]
      'sweep: compiling ...'
    """

    def __init__(self, text: str, stream: Any = STDERR, *, interval: float = PLAIN_INTERVAL,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.text, self.interval, self._clock = str(text), float(interval), clock
        self.stream = _resolve(stream)
        self.terminal = (is_terminal(self.stream) if terminal is None else bool(terminal)
                         ) if self.stream is not None else False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = None

    def __enter__(self) -> activity:
        self.t0 = self._clock()
        if self.stream is None:
            return self
        if self.terminal:
            from rich.console import Console

            owner = self

            class _Text:
                def __rich__(self):
                    took = format_duration(owner._clock() - owner.t0)
                    return f"{owner.text} ({took})"

            self._status = Console(file=self.stream, force_terminal=True).status(
                _Text(), spinner="dots")
            self._status.start()
            return self
        self._write(f"{self.text} ...")
        if self.interval > 0:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                            name="activity")
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        took = format_duration(self._clock() - self.t0)
        end = f"done in {took}" if exc_type is None else f"stopped after {took}"
        if self._status is not None:
            self._status.stop()
            self._status.console.print(f"{self.text}: {end}", markup=False, highlight=False)
        elif self.stream is not None:
            self._write(f"{self.text}: {end}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            if self.stream is not None:
                self._write(f"{self.text}: still running, "
                            f"{format_duration(self._clock() - self.t0)}")


def progress_for(progress, total: int, label: str, *, unit: str = "item", done: int = 0,
                 item_lines: bool = False) -> Progress | None:
    """The display a ``progress=`` argument asks for: ``True`` (stderr) or a text stream (an
    object with ``write``) give a ``Progress``; ``None`` and ``False`` give ``None``. Any
    other value (e.g. a callable) is the caller's business and gives ``None``."""
    if progress is None or progress is False:
        return None
    if progress is True or progress is STDERR or hasattr(progress, "write"):
        return Progress(total, label, unit=unit, stream=progress, done=done,
                        item_lines=item_lines)
    return None


# ------------------------------------------------------------------------------------------
# tables


def print_table(rows, columns: Sequence[Any] | None = None, *, stream=None,
                title: str | None = None, terminal: bool | None = None) -> None:
    """Print a table: ``rich`` on a terminal, plain fixed-width text otherwise.

    Args:
      rows: a pandas DataFrame (its index is printed as a first column when it is named or
        not a plain range) or an iterable of mappings.
      columns: ``qmr_jax.report.tables.Column`` objects (key, title, format, alignment) or
        keys, in order; default every column.
      stream: where to print (default ``sys.stdout``).
      title: a title above the table (terminal only; plain text prints it on its own line).
      terminal: force the terminal (``True``) or plain (``False``) form.
    """
    from .report.tables import Column, text_table

    stream = sys.stdout if stream is None else stream
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        import pandas as pd

        if rows.index.name is not None or not isinstance(rows.index, pd.RangeIndex):
            rows = rows.reset_index()
        rows = rows.to_dict(orient="records")
    rows = [dict(r) for r in rows]
    if columns is None:
        columns = list(rows[0]) if rows else []
    cols = [c if isinstance(c, Column) else Column(str(c)) for c in columns]
    use_rich = is_terminal(stream) if terminal is None else bool(terminal)
    if not use_rich:
        if title:
            stream.write(title + "\n")
        stream.write(text_table(rows, cols) + "\n")
        stream.flush()
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    texts = [[c.text(r.get(c.key)) for c in cols] for r in rows]
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    needed = 0
    for j, c in enumerate(cols):
        head = c.title or c.key
        longest = max([len(t[j]) for t in texts] + [len(head)])
        # numbers never wrap; text keeps at least a word's width and wraps (long messages)
        least = longest if c.right else min(longest, 24)
        needed += least + 3
        table.add_column(head, justify="right" if c.right else "left", no_wrap=c.right,
                         overflow="fold", min_width=least)
    for row in texts:
        table.add_row(*(Text(t, style="red" if c.right and t.startswith("-") and t != "-"
                             else "") for t, c in zip(row, cols, strict=True)))
    width = Console(file=stream, force_terminal=True).width
    # wider than the terminal: let the lines run long rather than squeeze columns away
    Console(file=stream, force_terminal=True, width=max(width, needed)).print(table)


__all__ = ["Progress", "progress_for", "activity", "print_table", "format_duration", "rate_text",
           "is_terminal", "PLAIN_INTERVAL", "STDERR"]
