"""The progress display and terminal tables (``qmr_jax.progress``): plain lines at most every
``interval`` seconds with counts, rate and ETA, one line per item when asked, a heartbeat
naming the running item, resumed counts, the terminal bar, silence without a stream, and
tables that are plain text in logs and ``rich`` tables on a terminal."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest

from qmr_jax.progress import (
    Progress,
    activity,
    format_duration,
    print_table,
    progress_for,
    rate_text,
)
from qmr_jax.report.tables import Column, text_table

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """A hand-driven clock (seconds)."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _plain(total, **kw):
    out, clock = io.StringIO(), Clock()
    bar = Progress(total, "sweep", unit="scenario", stream=out, heartbeat=False, clock=clock,
                   interval=5.0, **kw)
    return bar, out, clock


def test_plain_lines_are_rate_limited_and_carry_counts():
    bar, out, clock = _plain(10)
    for _ in range(10):
        clock.t += 1.5
        bar.advance()
    bar.close()
    lines = out.getvalue().splitlines()
    # a start line, then a line once 5 s have passed since the last (at 6, 12 s), the end
    assert lines[0] == "sweep: 10 scenarios to run"
    assert [re.match(r"sweep: (\d+)/10 scenarios", x).group(1) for x in lines[1:]] == \
        ["4", "8", "10"]
    assert lines[1] == ("sweep: 4/10 scenarios (40%), 1.5 s/scenario, elapsed 6.0 s, "
                        "ETA 9.0 s")
    assert lines[-1].startswith("sweep: 10/10 scenarios (100%)") and "ETA 0.0 s" in lines[-1]
    assert not ANSI.search(out.getvalue())
    bar.close()  # idempotent: no second final line
    assert len(out.getvalue().splitlines()) == len(lines)


def test_resumed_counts_are_shown_and_left_out_of_the_rate():
    bar, out, clock = _plain(10, done=4)
    clock.t += 2.0
    bar.advance(3)
    clock.t += 4.0
    bar.advance(3)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "sweep: 6 of 10 scenarios to run (4 resumed)"
    # 6 scenarios in 6 s by this run: 1.0 a second, not 10/6
    assert lines[-1] == ("sweep: 10/10 scenarios (100%), 4 resumed, 1.0 scenarios/s, "
                         "elapsed 6.0 s, ETA 0.0 s")
    with pytest.raises(ValueError, match="done"):
        Progress(3, stream=None, done=4)


def test_item_lines_time_each_item():
    out, clock = io.StringIO(), Clock()
    with Progress(3, "stress", unit="scenario", stream=out, item_lines=True, heartbeat=False,
                  clock=clock) as bar:
        for name, took in (("crash", 2.0), ("calm", 4.0), ("replay", 0.5)):
            bar.start(name)
            clock.t += took
            bar.advance(status="ok" if name != "calm" else "n/a")
    lines = out.getvalue().splitlines()
    assert lines == [
        "stress: 3 scenarios to run",
        "stress [1/3] crash: ok in 2.0 s (elapsed 2.0 s, ETA 4.0 s)",
        "stress [2/3] calm: n/a in 4.0 s (elapsed 6.0 s, ETA 3.0 s)",
        "stress [3/3] replay: ok in 0.5 s (elapsed 6.5 s, ETA 0.0 s)",
    ]  # the last item line says everything is done: no extra final line


def test_heartbeat_names_the_running_item():
    out, clock = io.StringIO(), Clock()
    bar = Progress(4, "stress", unit="scenario", stream=out, heartbeat=False, clock=clock)
    bar.start("slow-bleed-14d")
    clock.t += 3.0
    assert not bar.beat()  # a line 3 s ago (the start line): nothing yet
    clock.t += 3.0
    assert bar.beat()
    assert out.getvalue().splitlines()[-1] == (
        "stress: 0/4 scenarios (0%), ? scenarios/s, elapsed 6.0 s, ETA ?; running "
        "slow-bleed-14d for 6.0 s")
    assert not bar.beat()  # just written
    bar.close()
    assert not bar.beat()  # closed: silent


def test_heartbeat_thread_writes_while_an_item_runs():
    out = io.StringIO()
    bar = Progress(1, "stress", stream=out, interval=0.05)
    bar.start("long")
    for _ in range(200):  # wait for the thread's line (at most 2 s), not for a duration
        if "running long" in out.getvalue():
            break
        bar._stop.wait(0.01)
    bar.close()
    assert "running long for" in out.getvalue()


def test_silent_without_a_stream_and_the_argument_conventions():
    bar = Progress(3, stream=None)
    bar.start("a")
    bar.advance(2)
    bar.log("nothing")
    bar.close()
    assert bar.done == 2 and bar.total == 3
    assert progress_for(None, 3, "x") is None and progress_for(False, 3, "x") is None
    assert progress_for(lambda i, n, s: None, 3, "x") is None  # a callable: the caller's
    out = io.StringIO()
    p = progress_for(out, 3, "x", unit="scenario")
    p.close()
    assert out.getvalue().startswith("x: 3 scenarios to run")


def test_terminal_bar():
    out = io.StringIO()
    with Progress(3, "stress", unit="scenario", stream=out, terminal=True,
                  item_lines=True) as bar:
        for name in ("a", "b", "c"):
            bar.start(name)
            bar.advance(status="ok")
    text = ANSI.sub("", out.getvalue())
    assert "stress [3/3] c: ok in" in text  # item lines above the bar
    assert "3/3" in text and "100%" in text and "ETA" in text and "elapsed" in text


def test_activity_lines():
    out, clock = io.StringIO(), Clock()
    with activity("sweep: compiling", out, terminal=False, interval=0, clock=clock):
        clock.t += 12.0
    assert out.getvalue().splitlines() == ["sweep: compiling ...",
                                           "sweep: compiling: done in 12 s"]
    out = io.StringIO()
    with pytest.raises(KeyError), activity("x", out, terminal=False, interval=0):
        raise KeyError("boom")
    assert "x: stopped after" in out.getvalue()


def test_format_duration_and_rate():
    assert [format_duration(s) for s in (0.04, 9.94, 12.4, 185.0, 3725.0)] == \
        ["0.0 s", "9.9 s", "12 s", "3m05s", "1h02m"]
    assert format_duration(float("nan")) == "?"
    assert rate_text(13.44, "scenario") == "13.4 scenarios/s"
    assert rate_text(0.4, "scenario") == "2.5 s/scenario"
    assert rate_text(float("nan"), "scenario") == "? scenarios/s"


def test_print_table_plain_and_terminal():
    rows = pd.DataFrame({"pnl_usd": [-1234.5, 20.0], "kind": ["instant", "path"]},
                        index=pd.Index(["crash", "calm"], name="scenario"))
    cols = [Column("scenario"), Column("pnl_usd", fmt=",.2f"), Column("kind")]
    out = io.StringIO()
    print_table(rows, cols, stream=out)  # not a terminal: exactly the plain text table
    want = text_table(rows.reset_index().to_dict(orient="records"), cols)
    assert out.getvalue() == want + "\n"
    out = io.StringIO()
    print_table(rows, cols, stream=out, terminal=True, title="worst")
    raw = out.getvalue()
    text = ANSI.sub("", raw)
    for cell in ("scenario", "pnl_usd", "-1,234.50", "20.00", "crash", "path", "worst"):
        assert cell in text, cell
    assert "\x1b[31m-1,234.50" in raw  # losses in red
