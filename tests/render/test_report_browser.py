"""The report in a real headless Chromium (Debian's, driven by Playwright): MathML laid out,
SVGs drawn, the interactive views drawn and answering the mouse (hover a head or a token,
pick a path for the prompt, click a path or a head in the path graph), no request leaves the
file, no console errors.

Regenerate the screenshot in docs/images/report.png (the summary at the top of the page) with
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
    if os.environ.get("PATHEXPAND_UPDATE_SCREENSHOT") == "1":   # the top of the page, as it opens
        _drawn(page)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1100, "height": 860})
        page.screenshot(path=str(SCREENSHOT), timeout=120_000)
    folded = page.evaluate("() => [...document.querySelectorAll('details')].filter(d => !d.open).length")
    assert folded >= 3   # card, derivation of the logits, derivation of the scores
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
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
    assert sections == ["summary", "card", "derivation", "diagram", "terms", "heads", "composition",
                        "eigenvalues", "attribution", "interactive", "order"]
    assert page.evaluate("() => document.querySelectorAll('.unavailable').length") == 0
    # opened from the file itself: nothing else requested, nothing blocked by the CSP
    assert seen["requests"] == [report_file.as_uri()]
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] == "error"] == []
    # equations aligned on "=": the "=" of every row of the first table starts at one x
    xs = page.evaluate("""() => [...document.querySelector('#derivation-logits mtable')
        .querySelectorAll(':scope > mtr > mtd.rhs')].map(c => Math.round(c.getBoundingClientRect().left))""")
    assert len(xs) >= 2 and len(set(xs)) == 1
    page.close()


# interactive views -------------------------------------------------------------------------------
def _drawn(page):
    """Wait until React has drawn every CircuitsVis view (polled: it renders after load)."""
    for _ in range(600):
        if page.evaluate("() => [...document.querySelectorAll('[data-cv]')].every(e => e.children.length)"):
            return
        page.wait_for_timeout(100)
    raise AssertionError("the CircuitsVis views were not drawn within 60 s")


@pytest.fixture(scope="module")
def views(browser, report_file):
    """The report opened from its file, the views drawn; every request and console line kept."""
    page, seen = _open(browser, report_file.as_uri())
    _drawn(page)
    yield page, seen
    page.close()


def _cv(component):
    return f'[data-cv="{component}"]'


def test_views_are_drawn_once_with_no_error_and_no_request(views, report_file):
    page, seen = views
    drawn = page.evaluate("""() => [...document.querySelectorAll('[data-cv]')].map(e =>
        [e.dataset.cv, e.children.length > 0, e.getBoundingClientRect().height])""")
    assert [d[0] for d in drawn] == ["AttentionHeads", "ColoredTokensMulti"]
    assert all(d[1] and d[2] > 50 for d in drawn), drawn
    bundles = page.evaluate("() => [...document.scripts].filter(s => s.text.includes('var CircuitsVis=')).length")
    assert bundles == 1
    assert report_file.read_text(encoding="utf-8").count("var CircuitsVis=") == 1
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] == "error"] == []
    # warnings only from Chromium's software GL driver (CircuitsVis colours tokens with WebGL)
    assert [m for m in seen["console"] if m[0] == "warning" and "GL Driver Message" not in m[1]] == []
    assert all(u.startswith("file://") for u in seen["requests"]) and seen["requests"] == [report_file.as_uri()]


def _colours(page, selector):
    return page.evaluate(f"""() => [...document.querySelectorAll('{selector}')]
        .map(b => getComputedStyle(b).backgroundColor)""")


def test_hovering_a_head_or_a_token_changes_the_attention_view(views):
    page, _ = views
    # CircuitsVis: hovering the second head's thumbnail enlarges it
    heads = page.locator(_cv("AttentionHeads") + " h4")
    assert heads.all_inner_texts() == ["L0H1", "L1H2"]      # the induction pair
    title = page.locator(_cv("AttentionHeads") + " h3").nth(1)
    assert title.inner_text().startswith("L0H1")
    heads.nth(1).hover()
    page.wait_for_timeout(100)
    assert title.inner_text().startswith("L1H2")            # the enlarged pattern follows the mouse
    # the tokens: hovering a query colours its keys by that head's attention, and says where most goes
    view = page.locator(".at")
    before = _colours(page, ".at .at-tok")
    assert set(before) == {"rgba(0, 0, 0, 0)"}             # nothing coloured yet
    last = len(before) - 1
    view.locator(".at-tok").nth(last).hover()
    after = _colours(page, ".at .at-tok")
    row0 = page.evaluate(f"""() => JSON.parse(document.getElementById(
        document.querySelector('.at').dataset.src).textContent).attention[0][{last}]""")
    coloured = [k for k, c in enumerate(after) if c != "rgba(0, 0, 0, 0)"]
    assert coloured == [k for k, a in enumerate(row0) if a > 0]   # exactly the keys it attends to
    assert view.locator(".at-out").inner_text().startswith(f"L0H1: query {last} (")
    view.locator(".at-head").nth(1).click()
    view.locator(".at-tok").nth(last).hover()
    text = view.locator(".at-out").inner_text()
    row = page.evaluate(f"""() => JSON.parse(document.getElementById(
        document.querySelector('.at').dataset.src).textContent).attention[1][{last}]""")
    best = max(range(len(row)), key=row.__getitem__)
    assert text.startswith(f"L1H2: query {last} (") and f"attends most to key {best} (" in text
    assert text.endswith(f"{round(100 * row[best])}%")


def test_picking_a_path_recolours_the_prompt(views):
    page, _ = views
    root = _cv("ColoredTokensMulti")
    labels = page.locator(root + " > div > div:first-child > div")
    assert labels.count() >= 2
    tokens = root + " .colored-tokens span > span"
    before = _colours(page, tokens)
    assert len(before) > 50
    labels.nth(1).dispatch_event("click")   # a plain DOM click (React listens at its root)
    page.wait_for_timeout(100)
    assert _colours(page, tokens) != before             # coloured by the second path now


def test_clicking_a_path_lights_it_up_and_shows_its_contribution(views):
    page, _ = views
    graph = page.locator(".pg")
    out = graph.locator(".pg-out")
    assert out.inner_text() == "Click a path or a node."
    row = graph.locator("li[data-i='1']")
    name, value = row.locator("button").inner_text(), row.locator(".v").inner_text()
    row.locator("button").click()
    assert out.inner_text().startswith(f"{name} (") and value in out.inner_text()
    assert "on" in row.get_attribute("class")
    opacity = page.evaluate("""() => [...document.querySelectorAll('.pg .pg-edge')]
        .map(e => getComputedStyle(e).opacity)""")
    assert opacity[1] == "1" and {o for i, o in enumerate(opacity) if i != 1} == {"0.12"}
    # a click on the path's own line does the same for another path
    graph.locator(".pg-edge[data-i='0']").dispatch_event("click")
    assert "on" in graph.locator("li[data-i='0']").get_attribute("class")
    assert "on" not in (row.get_attribute("class") or "")
    # a head: its node value and the listed paths through it
    graph.locator(".pg-node[data-node='L1H2']").dispatch_event("click")
    assert out.inner_text().startswith("L1H2: ") and "summed over every path through it" in out.inner_text()
    lit = page.evaluate("() => [...document.querySelectorAll('.pg li.on')].map(li => li.innerText)")
    assert lit and all("L1H2" in t for t in lit)
