"""Command-line usage errors (caught by typer's parser, before any command runs): exit code 2
and one line on stderr, never a traceback; no arguments prints the help and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pathexpand.cli import main

BAD = [
    (["rank", "--bogus"], "No such option: --bogus"),
    (["rank", "--top", "abc"], "Invalid value for '--top'"),
    (["derive", "--layers", "x"], "Invalid value for '--layers'"),
    (["attribute", "--text", "abc", "--diff", "a"], "'--diff' requires 2 arguments"),
    (["diagram", "-o"], "'-o' requires an argument"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_the_installed_command_reports_usage_errors_the_same_way():
    run = subprocess.run([sys.executable, "-m", "pathexpand.cli", "rank", "--bogus"],
                         capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == ["error: No such option: --bogus (see 'pathexpand rank --help')"]


def test_no_arguments_prints_the_help(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert "Usage" in out + err and "derive" in out + err
