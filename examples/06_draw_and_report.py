"""Draw: the induction circuit as a Graphviz diagram, the OV eigenvalues as a plot, one HTML report.

    python examples/06_draw_and_report.py [OUT_DIR]

Writes into OUT_DIR (default: a fresh temporary folder) and prints each file's path and
size. The diagram needs Graphviz's ``dot`` program on PATH; the report is one
self-contained HTML file that works offline.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pathexpand as pe

TEXT = "def total(items):\n    return sum(items)\n\ndef total(items):\n    return sum("


def main(out: str | None = None) -> None:
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="pathexpand-"))
    folder.mkdir(parents=True, exist_ok=True)
    w = pe.load("attn-only-2l")

    # The path graph with K-composition scores on its edges, the circuit highlighted.
    comp = pe.composition_scores(w, kind="k_composition")
    G = pe.path_graph(w, ranking=comp)
    circuit = pe.expand_scores(pe.Architecture.from_weights(w), head="L1H2")["q:direct · k:L0H1"]
    diagram = pe.render.diagram(G, highlight=[circuit], title="L0H1 → L1H2 (K-composition)")
    svg = folder / "induction_circuit.svg"
    svg.write_text(diagram.svg())
    print(f"diagram: {svg} ({svg.stat().st_size:,} bytes, {svg.read_text().count('<g id=')} SVG groups)")

    fig = pe.render.eigenvalue_plot(w, heads=["L0H1", "L0H3", "L1H2", "L1H1"])
    png = folder / "eigenvalues.png"
    fig.savefig(png, dpi=80)
    print(f"eigenvalue plot: {png} ({png.stat().st_size:,} bytes); panels: "
          + ", ".join(ax.get_title() for ax in fig.axes if ax.get_visible()))

    html = folder / "report.html"
    page = pe.render.report(w, text=TEXT, path=html, sections=["card", "derivation", "attribution"])
    print(f"report: {html} ({len(page):,} characters, {page.count('<svg')} inline SVGs)")


if __name__ == "__main__":
    main(*sys.argv[1:2])
