"""Shared fixtures and markers: `needs_graphviz`, `needs_latex`, `needs_browser` and
`needs_circuitsvis` skip cleanly when the program (or CircuitsVis's browser bundle) is absent;
everything else runs on CPU with no network."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

# One torch thread per test process: on 2 shared cores torch's thread pool makes tiny
# matmuls ~100x slower, and pytest-xdist already runs one process per core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    # CI sets PATHEXPAND_REQUIRE_TOOLS=1: a missing program is then an error, not a skip,
    # so a broken install step cannot hide behind skipped tests.
    if os.environ.get("PATHEXPAND_REQUIRE_TOOLS") == "1":
        missing = [p for p in ("dot", "chromium", "pdflatex") if shutil.which(p) is None]
        if not _have_circuitsvis():
            missing.append("circuitsvis (its browser bundle dist/cdn/iife.js)")
        if missing:
            raise pytest.UsageError(f"PATHEXPAND_REQUIRE_TOOLS=1 but missing: {missing}")
    have_dot = shutil.which("dot") is not None
    have_latex = shutil.which("pdflatex") is not None
    have_browser = shutil.which("chromium") is not None or shutil.which("chromium-browser") is not None
    have_cv = None if not any("needs_circuitsvis" in i.keywords for i in items) else _have_circuitsvis()
    for item in items:
        if "needs_graphviz" in item.keywords and not have_dot:
            item.add_marker(pytest.mark.skip(reason="Graphviz `dot` is not on PATH"))
        if "needs_latex" in item.keywords and not have_latex:
            item.add_marker(pytest.mark.skip(reason="pdflatex is not on PATH"))
        if "needs_browser" in item.keywords and not have_browser:
            item.add_marker(pytest.mark.skip(reason="chromium is not installed"))
        if "needs_circuitsvis" in item.keywords and not have_cv:
            item.add_marker(pytest.mark.skip(reason="circuitsvis is not installed (pip install -e '.[views]')"))


def _have_circuitsvis() -> bool:
    """The installed CircuitsVis bundle, found as the views find it (without importing torch)."""
    from pathexpand.render.interactive import circuitsvis_bundle

    return circuitsvis_bundle() is not None


@pytest.fixture
def rng():
    return np.random.default_rng(0)
