"""The malformed-input corpus (``tests/data/bad/``, see its README): every file must be refused
with a message naming the file and what was wrong, or cleaned with a recorded reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

BAD = Path(__file__).resolve().parent / "data" / "bad"
REPO = Path(__file__).resolve().parents[1]
LOADER_KINDS = ("chains", "books", "models", "scenarios")


def _load(kind: str, path: Path, args: dict, loader: str | None = None):
    if kind == "chains":
        from qmr_jax import data

        load = data.load_chain if loader == "load_chain" else data.load_deribit
        return load(path, return_dropped=True, **args)
    if kind == "books":
        from qmr_jax.book import load_book

        return load_book(path, **args)
    if kind == "models":
        from qmr_jax.book import load_model

        return load_model(path, **args)
    from qmr_jax.stress.scenarios import load_scenario

    return load_scenario(path, **args)


def _inline_expectations(path: Path) -> list[str]:
    """Leading ``# expect: ...`` lines of a TOML file."""
    if path.suffix != ".toml":
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# expect:"):
            out.append(line.removeprefix("# expect:").strip())
    return out


def _file_cases():
    for kind in LOADER_KINDS:
        folder = BAD / kind
        if not folder.is_dir():
            continue
        table = {}
        if (folder / "expect.toml").exists():
            table = tomllib.loads((folder / "expect.toml").read_text(encoding="utf-8"))
        for name in table:
            assert (folder / name).exists(), f"{folder / 'expect.toml'}: no file {name!r}"
        for path in sorted(folder.iterdir()):
            if path.name in ("expect.toml", "README.md") or path.is_dir():
                continue
            spec = dict(table.get(path.name, {}))
            if not spec:
                inline = _inline_expectations(path)
                assert inline, f"{path}: no entry in expect.toml and no '# expect:' lines"
                spec = {"expect": inline}
            yield pytest.param(kind, path, spec, id=f"{kind}/{path.name}")


@pytest.mark.parametrize(("kind", "path", "spec"), list(_file_cases()))
def test_bad_file(kind, path, spec):
    args = spec.get("args", {})
    loader = spec.get("loader")
    assert loader in (None, "load_chain") and (loader is None or kind == "chains"), (
        f"{path}: unknown loader {loader!r} (chains may name 'load_chain')")
    if "dropped" in spec:
        assert kind == "chains", f"{path}: only chains may be cleaned instead of refused"
        chain, dropped = _load(kind, path, args, loader)
        reasons = set(dropped["reason"])
        for reason in spec["dropped"]:
            assert any(reason in r for r in reasons), (
                f"{path}: no dropped row with reason {reason!r}; reasons: {sorted(reasons)}")
        numeric = chain.select_dtypes(include=[np.number])
        assert np.isfinite(numeric.to_numpy(dtype=float)).all(), f"{path}: NaN kept"
        return
    with pytest.raises(ValueError) as info:
        _load(kind, path, args, loader)
    message = str(info.value)
    assert path.name in message, f"the message does not name the file: {message}"
    for part in spec["expect"]:
        assert part in message, f"{part!r} not in: {message}"


def _cli_cases():
    cases_file = BAD / "cli" / "cases.toml"
    if not cases_file.exists():
        return []
    cases = tomllib.loads(cases_file.read_text(encoding="utf-8")).get("case", [])
    return [pytest.param(c, id=c["name"]) for c in cases]


@pytest.mark.parametrize("case", _cli_cases())
def test_bad_command_line(case, tmp_path, capsys):
    from qmr_jax.cli import main

    subst = {"{bad}": str(BAD), "{repo}": str(REPO), "{tmp}": str(tmp_path)}
    argv = []
    for a in case["argv"]:
        for k, v in subst.items():
            a = a.replace(k, v)
        argv.append(a)
    status = main(argv)
    err = capsys.readouterr().err
    assert status == case.get("status", 2), f"exit {status}; stderr: {err}"
    assert "Traceback" not in err
    for part in case["expect"]:
        assert part in err, f"{part!r} not in: {err}"
