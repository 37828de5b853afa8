"""``pathexpand attribute``: exact contributions of paths, heads and edges to one logit."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import (
    DEFAULT_MODEL,
    app,
    console,
    fail,
    load_model,
    print_json,
    prompt,
    read_text,
    read_tokens,
)

__all__ = ["attribute"]

DEFAULT_TEXT = "def area(r):\n    return 3.14 * r * r\n\ndef area(r):\n    return 3.14 * r"

_EXAMPLES = f"""
Examples:

  pathexpand attribute                # {DEFAULT_MODEL}: its top prediction

  pathexpand attribute --text "import os" --target " "

  pathexpand attribute gelu-2l --text "x = 1" --diff "\\n" ";" --top 5

  pathexpand attribute --text "abcdefabcde" --position -1 --json
"""


def _token(weights, text: str):
    """A token given on the command line: text when the model has a tokenizer, else an int id."""
    if weights.tokenizer is not None:
        return text
    try:
        return int(text)
    except ValueError:
        fail(f"this model has no tokenizer: give target tokens as integer ids, got {text!r}")


@app.command("attribute", epilog=_EXAMPLES)
def attribute(
    model: Annotated[str | None, typer.Argument(
        help=f"Bundled model name or weights file (.safetensors/.npz); default {DEFAULT_MODEL}.")] = None,
    text: Annotated[str | None, typer.Option(
        help="Input text (\\n, \\t, \\\\ read as newline, tab, backslash); default: a short "
             "Python snippet.", callback=read_text)] = None,
    tokens: Annotated[str | None, typer.Option(
        help="Input as comma-separated token ids instead of --text.")] = None,
    target: Annotated[str | None, typer.Option(
        help="Explain this token's logit (one token of text; an int id without a tokenizer). "
             "Default: the model's top prediction.", callback=read_text)] = None,
    diff: Annotated[tuple[str, str] | None, typer.Option(
        help="Explain logit(A) − logit(B) instead.", metavar="A B", callback=read_text)] = None,
    position: Annotated[int, typer.Option(help="Position to explain (negative counts from the end).")] = -1,
    top: Annotated[int, typer.Option(help="Rows per table (paths, heads, edges).")] = 10,
    budget_seconds: Annotated[float, typer.Option(
        help="Time for the certified path search on models with too many paths to list.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON instead of tables.")] = False,
) -> None:
    """Split MODEL's logit (or logit difference) on a text exactly over paths, heads and edges.

    Patterns, LayerNorm scales and MLP gates are frozen from the forward pass, so the contributions sum to the model's output (the residual error says how closely).
    """
    if top < 1:
        fail(f"--top must be >= 1, got {top}")
    if budget_seconds <= 0:
        fail(f"--budget-seconds must be > 0, got {budget_seconds}")
    if target is not None and diff is not None:
        fail("give either --target or --diff, not both")
    weights = load_model(model)
    ids = prompt(weights, text, read_tokens(tokens), DEFAULT_TEXT)
    kw = {}
    if diff is not None:
        kw["diff"] = (_token(weights, diff[0]), _token(weights, diff[1]))
    elif target is not None:
        kw["target"] = _token(weights, target)
    doc, tables = _run(weights, ids, position, top, kw, budget_seconds, progress=not as_json)
    doc["model"] = weights.name or model or DEFAULT_MODEL
    if as_json:
        print_json(doc)
        return
    out = console()
    out.print(
        f"[bold]{doc['model']}[/bold]: {doc['target']} at position {doc['position']} "
        f"(token {doc['token_at_position']!r}) = [bold]{doc['output']:.4g}[/bold]; "
        f"constants {doc['constant_total']:+.4g}; residual error {doc['residual_error']:.1e}",
        soft_wrap=True,
    )
    out.print("[dim]heads/MLPs: sum over every path through them; edge a → b: sum over "
                  "every path in which b reads a directly[/dim]", soft_wrap=True)
    for table in tables:
        out.print(table)
    for note in doc.get("notes", []):
        out.print(f"[dim]note: {note}[/dim]", soft_wrap=True)


def _run(weights, ids, position, top, kw, budget_seconds, *, progress: bool):
    from ..numeric.attribute import MAX_PATHS, VIEWS, attribute, n_paths
    from ..numeric.tokens import as_tokens

    # past MAX_PATHS the path view lists the `top` largest, by the certified best-first search
    many = n_paths(weights) > MAX_PATHS
    res = attribute(weights, ids, positions=position, views=VIEWS, budget_seconds=budget_seconds,
                    max_paths=top if many else MAX_PATHS, progress=progress and many, **kw)
    toks = as_tokens(weights, ids)
    tok = weights.tokenizer
    at = int(toks[0, res.positions[0]])
    doc = {
        "text": tok.decode(toks[0]) if tok is not None else None,
        "tokens": [int(t) for t in toks[0]],
        "position": res.positions[0],
        "token_at_position": tok.token_str(at) if tok is not None else at,
        **res.to_dict(k=top),
    }
    doc["constant_total"] = float(sum(doc["constants"].values()))
    paths = res.ranking("path").top(top)
    found = res.path_search
    if found is not None:
        doc["certificate"] = found.certificate
        doc["complete"] = found.complete
        doc["certified"] = found.certified
        doc.setdefault("notes", []).append(f"paths by branch and bound: {found.status()}")
    heads = res.ranking("node").top(top)
    edges = res.ranking("edge").top(top)
    heads.title, edges.title = "heads and MLPs", "edges"
    paths.title = "paths" if found is None or found.certified else "paths (NOT certified)"
    return doc, [paths.rich_table(), heads.rich_table(), edges.rich_table()]
