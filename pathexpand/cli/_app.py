"""The typer app, the error boundary and options every command shares."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

import typer

from ..errors import PathexpandError

app = typer.Typer(
    name="pathexpand",
    help="Write a transformer as a sum over paths, draw it, and measure which paths matter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_MODEL = "attn-only-2l"

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    """Print one line to stderr and exit with code 2 (bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout: numpy scalars and arrays converted, NaN and ±inf (which
    JSON has no word for) written as null."""
    typer.echo(json.dumps(_finite(data), indent=2, default=_jsonable, ensure_ascii=False,
                          allow_nan=False))


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):           # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def console():
    """A ``rich`` console on stdout as wide as the terminal (``COLUMNS`` respected; 100 columns
    when writing to a pipe or file), the width the tables are fitted to."""
    from rich.console import Console

    from ..render.text import terminal_width

    return Console(width=terminal_width())


def _flags_as_flags(command) -> None:
    """On/off options (``--json``, ``--mlp``, ``--positional/--no-positional``, ``--help``) show in
    ``--help`` as flags, without a ``<bool>`` value that they do not take."""
    for cmd in [command, *getattr(command, "commands", {}).values()]:
        ctx = cmd.context_class(cmd, info_name=cmd.name)
        for param in cmd.get_params(ctx):          # with the help option, made and cached here
            if getattr(param, "is_flag", False):
                param.metavar = ""


def load_model(model: str | None):
    """Load ``model`` (bundled name or file path; the default bundled model when None, but an
    empty name is an error)."""
    from ..models import load

    if model is not None and not model.strip():
        fail("the model name is empty; give a bundled model name (see 'pathexpand models') or a file")
    return load(model or DEFAULT_MODEL)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def read_text(value: str | None) -> str | None:
    """Text typed on the command line, read the same way by every command: ``\\n``, ``\\t``,
    ``\\r`` and ``\\\\`` become a newline, a tab, a carriage return and one backslash; every
    other character, backslashes before anything else and non-ASCII text included, stays as
    typed. (A typer ``callback`` for ``--text``, ``--target`` and ``--diff``.)"""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(read_text(v) for v in value)
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], value)


def read_tokens(value: str | None):
    """Token ids typed as ``1,2,3`` (a ``--tokens`` option): ``[1, pos]`` int64, or None."""
    if value is None:
        return None
    import numpy as np

    try:
        ids = [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        fail(f"--tokens must be comma-separated integers, got {value!r}")
    if not ids:
        fail("--tokens is empty; give at least one token id, like --tokens 1,2,3")
    return np.array([ids], dtype=np.int64)


def prompt(weights, text: str | None, tokens, default: str | None = None):
    """The prompt a command runs on: ``tokens`` (ids), else ``text`` (or ``default``) when the model
    has a tokenizer; checked before any work. Returns text or ids, what ``pe.attribute`` takes."""
    if text is not None and tokens is not None:
        fail("give either --text or --tokens, not both")
    if tokens is not None:
        return tokens
    if text is None and default is None:
        return None
    if weights.tokenizer is None:
        fail(f"{weights.name or 'this model'} has no tokenizer: give the input as token ids, "
             "like --tokens 1,2,3")
    return text if text is not None else default


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr (``warning: ...``), not Python's source-line format."""
    typer.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning ``PathexpandError`` and OS errors into exit 2; warnings
    print as one line."""
    import warnings

    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        command = typer.main.get_command(app)
        _flags_as_flags(command)
        rc = command(args=argv, standalone_mode=False, prog_name="pathexpand")
    except typer.Exit as exc:
        return exc.exit_code
    except PathexpandError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except OSError as exc:  # not found, permission, disk full, file too large, ...: one line
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # usage errors from click (typer vendors its own copy)
        return _usage_error(exc)
    return rc if isinstance(rc, int) else 0


def _click_exceptions() -> list:
    """The ``click.exceptions`` modules in use: typer's vendored copy and/or ``click``."""
    import importlib

    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pass
    return mods


def _usage_error(exc: Exception) -> int:
    """One line on stderr for a command-line usage error (exit 2); help for no arguments (0)."""
    mods = _click_exceptions()
    if any(isinstance(exc, getattr(m, "NoArgsIsHelpError", ())) for m in mods):
        exc.show()  # prints the help text
        return 0
    if isinstance(exc, (KeyboardInterrupt, *(m.Abort for m in mods if hasattr(m, "Abort")))):
        typer.echo("aborted", err=True)
        return 1
    if any(isinstance(exc, getattr(m, "ClickException", ())) for m in mods):
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        typer.echo(f"error: {message}{hint}", err=True)
        return EXIT_BAD_INPUT
    raise exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@app.callback()
def _root() -> None:
    """Write a transformer as a sum over paths, draw it, and measure which paths matter.

    Every command works with no model argument, on the bundled default model.
    """
