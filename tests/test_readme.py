"""Run every ```python block of README.md, in order, as a reader would.

The blocks share one namespace (later blocks use the names of earlier ones, as the README
reads) and run with float64 (tests/conftest.py) in a working folder that mirrors the
repository root: every visible top-level entry is linked there except ``out/``, so the paths
of the snippets (``scenarios/...``) resolve as from the root while what they write
(``out/sweep``) lands in a temporary folder, never in the checkout. A block that reads the
shared market data (``load_deribit`` and the other loaders) is skipped, with the reason, when
the data is absent; every other block must run. A block that raises fails its test (named
after the README line where the block starts; the traceback gives the README's own line
numbers), and the blocks after it are skipped rather than failing on its missing names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, ROOT

README = ROOT / "README.md"
NEEDS_DATA = re.compile(r"\b(load_deribit|load_spot_history|load_dvol|list_snapshots)\b")
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, source)`` of every fenced ```python block, ``line`` being the README line of
    the block's first line of code (1-based)."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    # the extraction itself: a change of fence style must not silently test nothing
    assert len(BLOCKS) >= 5, [line for line, _ in BLOCKS]
    assert all(src.strip() for _, src in BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder whose entries link to the repository root's, ``out/`` left out."""
    work = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name != "out" and not entry.name.startswith("."):
            (work / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return work


@pytest.fixture(scope="module")
def namespace() -> dict:
    """The namespace every block runs in, and the lines of the blocks that failed."""
    return {"__name__": "__readme__", "_failed": []}


@pytest.mark.parametrize(("line", "source"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block(line, source, workdir, namespace, monkeypatch):
    if NEEDS_DATA.search(source) and not (DATA_DIR / "deribit_options").is_dir():
        pytest.skip(f"README.md line {line}: the block reads market data, not found at "
                    f"{DATA_DIR} (set QMR_DATA_DIR)")
    if namespace["_failed"]:
        pytest.skip(f"README.md line {line}: an earlier block failed (line "
                    f"{namespace['_failed'][0]}), so its names are missing here")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("QMR_DATA_DIR", str(DATA_DIR))
    # padded so that a traceback's line numbers are the README's own
    code = compile("\n" * (line - 1) + source, str(README), "exec")
    try:
        exec(code, namespace)
    except BaseException:
        namespace["_failed"].append(line)
        raise
