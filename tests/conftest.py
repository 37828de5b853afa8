"""Shared fixtures and markers: `needs_graphviz` and `needs_browser` skip cleanly when the
program is absent; everything else runs on CPU with no network."""

from __future__ import annotations

import shutil

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    have_dot = shutil.which("dot") is not None
    have_browser = shutil.which("chromium") is not None or shutil.which("chromium-browser") is not None
    for item in items:
        if "needs_graphviz" in item.keywords and not have_dot:
            item.add_marker(pytest.mark.skip(reason="Graphviz `dot` is not on PATH"))
        if "needs_browser" in item.keywords and not have_browser:
            item.add_marker(pytest.mark.skip(reason="chromium is not installed"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
