"""``pathexpand demo``: the main job on one model — derive, detect, compose, rank, attribute, draw.

What ``make demo`` runs. Each step is one call of the public API, printed with the call
so a reader can repeat it in Python.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from ._app import DEFAULT_MODEL, app, fail, load_model, prompt, read_text, read_tokens
from ._app import console as terminal

__all__ = ["demo", "DEMO_TEXT"]

# a name seen once and begun again: the induction head copies the byte that followed it
DEMO_TEXT = "self.grumble_count = 0\nself.grumble_c"


@app.command("demo", epilog=f"Example:\n\n  pathexpand demo                 # {DEFAULT_MODEL}, files in out/\n")
def demo(
    model: Annotated[str | None, typer.Argument(
        help=f"Bundled model name or weights file; default {DEFAULT_MODEL}.")] = None,
    out: Annotated[Path, typer.Option(
        "--output", "-o", "--out", help="Folder for the diagram and the HTML report.")] = Path("out"),
    text: Annotated[str | None, typer.Option(
        help="Prompt to attribute (\\n, \\t, \\\\ read as newline, tab, backslash); default: a "
             "name begun again.", callback=read_text)] = None,
    tokens: Annotated[str | None, typer.Option(
        help="The prompt as comma-separated token ids instead of --text.")] = None,
    report: Annotated[bool, typer.Option(help="Also write the one-file HTML report.")] = True,
) -> None:
    """Derive, detect, rank, attribute and draw MODEL (the bundled default when omitted)."""
    from ..architecture import Architecture
    from ..render.text import to_text
    from ..symbolic import expand_logits

    console = terminal()
    if out.exists() and not out.is_dir():
        fail(f"--output {str(out)!r} is a file; give a folder for the diagram and the report")
    weights = load_model(model)                 # inputs first: nothing is printed or made before
    text = prompt(weights, text, read_tokens(tokens), DEMO_TEXT if weights.tokenizer else None)
    if text is None:
        fail(f"{weights.name or 'this model'} has no tokenizer: give the prompt as token ids, "
             "like --tokens 1,2,3")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create output folder {str(out)!r}: {exc.strerror or exc}")
    name = weights.name or model or DEFAULT_MODEL
    arch = Architecture.from_weights(weights)

    def step(title: str, call: str) -> None:
        console.rule(f"[bold]{title}")
        console.print(f"[dim]>>> {call}[/dim]")

    step(f"1. The model: {name}", f"pe.load({name!r})")
    console.print(f"{weights!r}\n{arch}")
    card = weights.card or {}
    for key in ("description", "final_loss", "steps"):
        if key in card:
            console.print(f"  {key}: {card[key]}")

    step("2. Derive: the logits as a sum over paths", "pe.expand_logits(pe.Architecture.from_weights(w))")
    exp = expand_logits(arch)
    console.print(f"{exp.n_terms:,} terms (Π_l (1 + H_l) = {arch.n_logit_paths():,} per source, "
                  f"sources {', '.join(exp.sources)}):")
    shown = min(exp.n_terms, 12)
    for term in islice(exp, shown):
        console.print(f"  [cyan]{term.name:<16}[/cyan] {to_text(term)}", highlight=False)
    if exp.n_terms > shown:
        console.print(f"  … and {exp.n_terms - shown:,} more (pathexpand derive --model {name})")

    circuit = comp = scores = None
    if arch.heads:
        from ..numeric.detect import detect_heads

        step("3. Detect heads on repeated random tokens", "pe.detect_heads(w)")
        scores = detect_heads(weights)
        for kind in scores.kinds:
            row = scores.top(1, kind=kind)[0]
            console.print(f"  {kind:<16} {row.name}  {row.value:.2f}  (chance {row['baseline']:.3f})")

    if sum(1 for h in arch.n_heads if h) >= 2:
        from ..numeric.composition import composition_scores
        from ..numeric.detect import induction_circuit

        step("4. The induction circuit: a previous-token head whose output an induction head's key reads",
             'pe.induction_circuit(w)   # uses pe.composition_scores(w, "k_composition")')
        comp = composition_scores(weights)
        circuit = induction_circuit(weights, heads=scores, composition=comp)
        console.print(f"  {circuit.reason}", highlight=False)
        for r in comp.top(5, kind="k_composition"):
            console.print(f"  {r.name}  K-composition {r['score']:.3f}  "
                          f"(random baseline {r['baseline']:.3f}, z = {r['z']:.1f})")

    from ..numeric.evaluate import evaluate

    step("5. Rank every logit term by ‖W_E W_OV… W_U‖_F (data-free, factored)",
         'pe.evaluate(exp, w, metric="frobenius").top(8)')
    from ..numeric.attribute import MAX_PATHS, attribute, n_paths

    ranking_exp = exp if exp.n_terms <= MAX_PATHS else expand_logits(arch, max_depth=2)
    console.print(evaluate(ranking_exp, weights, metric="frobenius").top(8).rich_table())

    many = n_paths(weights) > MAX_PATHS      # then the path view lists the 8 largest (search)
    step("6. Attribute the next-token logit of a prompt to paths (exact)",
         f"pe.attribute(w, {text!r}" + (", views=('path', 'node', 'edge'), max_paths=8)" if many else ")"))
    result = attribute(weights, text, views=("path", "node", "edge"), max_paths=8) if many else attribute(weights, text)
    console.print(f"target: {result.target_label}; Σ paths + constants − model output: "
                  f"{result.residual_error():.1e} (relative)")
    console.print(result.ranking("path").top(8).rich_table())

    from ..render.dot import default_circuit, diagram, write

    step("7. Draw", f"pathexpand diagram {name} -o {out / 'circuit.svg'}")
    graph, highlight, title, _ = default_circuit(weights, circuit=circuit, composition=comp)
    write(diagram(graph, highlight=highlight, title=f"{name}: {title}"), out / "circuit.svg")
    console.print(f"wrote {out / 'circuit.svg'}")
    if report:
        from ..render.html import report as make_report

        make_report(weights, text=text, path=out / "report.html")
        console.print(f"wrote {out / 'report.html'} (open it in a browser; works offline)")
