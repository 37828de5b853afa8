"""The typer app, the error boundary and options every command shares."""

from __future__ import annotations

import json
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
    """Write ``data`` as JSON to stdout (numpy scalars and arrays converted)."""
    typer.echo(json.dumps(data, indent=2, default=_jsonable, ensure_ascii=False))


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def load_model(model: str | None):
    """Load ``model`` (bundled name or file path; the default bundled model when None)."""
    from ..models import load

    return load(model or DEFAULT_MODEL)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning ``PathexpandError`` and OS errors into exit 2."""
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="pathexpand")
    except typer.Exit as exc:
        return exc.exit_code
    except PathexpandError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
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
