"""Tables fit the terminal: ``COLUMNS`` respected, names never cut, name and path not repeated;
``--help`` shows on/off options as flags. Run through a subprocess, as a shell would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.cells import cell_len

from pathexpand.cli import main

COMMANDS = ("derive", "rank", "attribute", "diagram", "report", "models", "demo")


def _cli(*args, columns: int) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([sys.executable, "-m", "pathexpand.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _table_rows(out: str) -> list[list[str]]:
    """The body rows of rich tables in ``out``: cells between │ bars, stripped."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


@pytest.fixture(scope="module")
def ranked():
    """``rank attn-only-2l --baseline random`` as JSON: the names the tables must show whole."""
    doc = json.loads(_cli("rank", "attn-only-2l", "--baseline", "random", "--json", columns=200))
    return [r["name"] for r in doc["rows"]]


@pytest.mark.parametrize("columns", [80, 200])
def test_rank_fits_the_width_and_never_cuts_a_name(ranked, columns):
    out = _cli("rank", "attn-only-2l", "--baseline", "random", columns=columns)
    assert max(cell_len(line) for line in out.splitlines()) <= columns
    rows = _table_rows(out)
    assert [r[1] for r in rows] == ranked          # each name whole, on one line, in JSON's order
    header = next(line for line in out.splitlines() if line.startswith("┃"))
    cols = [c.strip() for c in header.split("┃")[1:-1]]
    assert "path" not in cols and "embed →" not in out   # the name L1H2∘L0H2 says the path
    assert {"frobenius", "null", "ratio"} <= set(cols)   # the value and its baseline stay
    if columns == 200:
        assert {"kind", "depth"} <= set(cols)


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_models_respects_columns(columns):
    out = _cli("models", columns=columns)
    names = [r["name"] for r in json.loads(_cli("models", "--json", columns=columns))]
    assert max(cell_len(line) for line in out.splitlines()) <= columns
    shown = [r[0] for r in _table_rows(out) if r[0]]
    assert [n.removesuffix(" *") for n in shown] == names
    header = [c.strip() for c in next(l for l in out.splitlines() if l.startswith("┃")).split("┃")[1:-1]]
    assert header[0] == "name" and "loss" in header
    if columns == 200:
        assert header == ["name", "layers", "heads", "d_model", "d_mlp", "positional", "params", "file",
                          "loss", "detected heads"]
    else:
        assert "file" not in header


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_as_flags(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out and "--help" in out
    assert "<str>" in out or "<int>" in out or command == "models"    # options that take values keep theirs


def test_a_flag_pair_shows_both_spellings(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["rank", "--help"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "--positional" in l)
    assert "--no-positional" in line and "<bool>" not in line


@pytest.mark.parametrize("columns", [60, 200])
def test_derive_wraps_its_prose_to_the_terminal(columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["derive", "--layers", "1", "--heads", "2", "--positional", "none"]) == 0
    lines = capsys.readouterr().out.splitlines()
    prose = [l for l in lines if l.startswith("   ") and not l.startswith("     ")]
    assert len(prose) > 5
    assert max(len(l) for l in prose) <= min(88, columns - 1)   # 88: the printer's own width
    if columns == 200:
        assert max(len(l) for l in prose) > 80                 # no narrower than it need be
