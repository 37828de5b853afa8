"""``pathexpand models``: the bundled models, their shapes and model cards."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, console, print_json

__all__ = ["models", "model_rows"]

_SHORT = {"previous_token": "prev", "induction": "ind", "duplicate_token": "dup"}


def model_rows() -> list[dict]:
    """One JSON-ready dict per bundled model: shapes, parameter count, file size and card."""
    from ..models import list_models

    rows = []
    for m in list_models():
        config = m["config"] or {}
        rows.append(
            {
                "name": m["name"],
                "default": m["name"] == DEFAULT_MODEL,
                "config": config,
                "n_params": m["n_params"],
                "file_bytes": os.path.getsize(m["path"]),
                "path": m["path"],
                "card": m["card"],
            }
        )
    return rows


def _detected(card: dict) -> str:
    """``prev L0H1 0.93, ind L1H2 0.88``: the best head per kind, where it beats 0.3."""
    scores = card.get("head_scores") or {}
    parts = []
    for kind, short in _SHORT.items():
        grid = scores.get(kind)
        if not grid:
            continue
        best = max(((v, l, h) for l, row in enumerate(grid) for h, v in enumerate(row)))
        if best[0] > 0.3:
            parts.append(f"{short} L{best[1]}H{best[2]} {best[0]:.2f}")
    return ", ".join(parts) or "-"


@app.command("models", epilog="""
Examples:

  pathexpand models          # a table: shapes, parameters, loss, detected heads

  pathexpand models --json   # every model card in full
""")
def models(
    json_: Annotated[bool, typer.Option("--json", help="Print the model cards as JSON.")] = False,
) -> None:
    """List the bundled models: shapes, parameters, file size, held-out loss, detected heads."""
    rows = model_rows()
    if json_:
        print_json(rows)
        return
    from ..render.text import terminal_table

    header = ["name", "layers", "heads", "d_model", "d_mlp", "positional", "params", "file", "loss",
              "detected heads"]
    body = []
    for r in rows:
        c, card = r["config"], r["card"]
        loss = card.get("final_loss")
        body.append([
            r["name"] + (" *" if r["default"] else ""),
            str(c.get("n_layers", "?")),
            str(c.get("n_heads", "?")),
            str(c.get("d_model", "?")),
            str(c.get("d_mlp") or "-"),
            str(c.get("positional") or "none"),
            f"{r['n_params']:,}",
            f"{r['file_bytes'] / 1024:.0f} KiB",
            "-" if loss is None else f"{loss:.3f}",
            _detected(card),
        ])
    out = console()
    out.print(terminal_table(
        header, body, width=out.width, title="bundled models",
        caption=f"default: {DEFAULT_MODEL}; bytes-level tokens",
        right=("layers", "heads", "d_model", "d_mlp", "params", "file", "loss"),
        drop=("file", "d_mlp", "d_model", "params", "positional"), whole=("name",), wrap=("detected heads",),
    ))
    if not rows:
        typer.echo("no bundled models installed")
