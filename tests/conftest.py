"""Shared fixtures and markers: `needs_graphviz` and `needs_browser` skip cleanly when the
program is absent; everything else runs on CPU with no network."""

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
        if missing:
            raise pytest.UsageError(f"PATHEXPAND_REQUIRE_TOOLS=1 but not on PATH: {missing}")
    have_dot = shutil.which("dot") is not None
    have_latex = shutil.which("pdflatex") is not None
    have_browser = shutil.which("chromium") is not None or shutil.which("chromium-browser") is not None
    for item in items:
        if "needs_graphviz" in item.keywords and not have_dot:
            item.add_marker(pytest.mark.skip(reason="Graphviz `dot` is not on PATH"))
        if "needs_latex" in item.keywords and not have_latex:
            item.add_marker(pytest.mark.skip(reason="pdflatex is not on PATH"))
        if "needs_browser" in item.keywords and not have_browser:
            item.add_marker(pytest.mark.skip(reason="chromium is not installed"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
