"""The report in a real headless Chromium (Debian's, driven by Playwright): MathML laid out,
SVGs drawn, no request leaves the file, no console errors.

Regenerate the screenshot in docs/images/report.png with
``PATHEXPAND_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest -q tests/render/test_report_browser.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import pathexpand as pe
from pathexpand.render.html import report

pytestmark = pytest.mark.needs_browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ORIGIN = "http://report.invalid/"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report(pe.load("attn-only-2l"), path=out)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright  # a dev dependency (pyproject [dev])

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1280, "height": 1000},
        )
        yield context
        context.close()


def _open(context, url, route=None):
    """A new page at ``url`` with every request, console message and page error recorded."""
    page = context.new_page()
    seen = {"requests": [], "console": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    if route is not None:
        page.route("**/*", route)
    page.goto(url, wait_until="load")
    return page, seen


def test_served_page_makes_no_other_request(browser, report_file):
    """Every request is intercepted; only the page itself is answered, anything else fails."""
    body = report_file.read_bytes()
    blocked = []

    def route(r):
        if r.request.url == ORIGIN + "report.html":
            r.fulfill(status=200, body=body, headers={"content-type": "text/html; charset=utf-8"})
        else:
            blocked.append(r.request.url)
            r.abort()

    page, seen = _open(browser, ORIGIN + "report.html", route)
    page.wait_for_timeout(300)  # give late loads (fonts, images) a chance to show up
    assert blocked == []
    assert seen["requests"] == [ORIGIN + "report.html"]
    assert seen["errors"] == []
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == []
    page.close()


def test_mathml_is_laid_out_and_svgs_are_drawn(browser, report_file):
    page, seen = _open(browser, report_file.as_uri())
    maths = page.evaluate("""() => [...document.querySelectorAll('math')].map(m => {
        const r = m.getBoundingClientRect();
        return {w: r.width, h: r.height, mathml: m instanceof MathMLElement,
                display: getComputedStyle(m).display};
    })""")
    assert len(maths) >= 4
    assert all(m["mathml"] and m["w"] > 0 and m["h"] > 0 for m in maths), maths[:3]
    assert {m["display"] for m in maths} <= {"block math", "inline math", "block", "math"}
    # MathML layout, not text run together: a fraction is taller than one line of its text
    inner = page.evaluate("""() => {
        const sub = document.querySelector('math msub, math msubsup');
        const r = sub.getBoundingClientRect();
        return {w: r.width, h: r.height};
    }""")
    assert inner["w"] > 0 and inner["h"] > 0
    svgs = page.evaluate("""() => [...document.querySelectorAll('section svg')].map(s => {
        const r = s.getBoundingClientRect();
        return {section: s.closest('section').id, w: r.width, h: r.height};
    })""")
    drawn = {s["section"] for s in svgs if s["w"] > 50 and s["h"] > 50}
    assert drawn >= {"diagram", "terms", "heads", "composition", "eigenvalues", "attribution", "order"}
    sections = page.evaluate("() => [...document.querySelectorAll('section')].map(s => s.id)")
    assert sections == ["card", "derivation", "diagram", "terms", "heads", "composition",
                        "eigenvalues", "attribution", "order"]
    assert page.evaluate("() => document.querySelectorAll('.unavailable').length") == 0
    # opened from the file itself: nothing else requested, nothing blocked by the CSP
    assert seen["requests"] == [report_file.as_uri()]
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] == "error"] == []
    if os.environ.get("PATHEXPAND_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 1600})
        page.evaluate("() => document.querySelector('#diagram').scrollIntoView()")
        page.screenshot(path=str(SCREENSHOT))
    page.close()
