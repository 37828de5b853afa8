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
        rc = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except PathexpandError as exc:
        typer.echo(f"error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            return 1
        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@app.callback()
def _root() -> None:
    """Write a transformer as a sum over paths, draw it, and measure which paths matter.

    Every command works with no model argument, on the bundled default model.
    """
