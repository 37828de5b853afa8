"""Every docs snippet re-runs and prints what its page says (README.md and docs/*.md).

The convention: a fenced ```python or ```bash block followed (blank lines only in between)
by a fenced block with info string ``text`` (or none) is a *checked pair*: the code runs
and its output must match the output block. A code block without an output block runs
only to check that it does not fail. ``<!-- docs-test: skip (reason) -->`` on the line
just before a fence skips that block, and the reason is required.

How a page runs: one subprocess per page, in a scratch directory holding an empty
``docs/images/`` and a link to ``examples/`` (pages run ``python examples/05_attribute.py``
as a reader would from the repository root), with the repository importable, the venv's
``bin`` first on PATH (so ``pathexpand`` is the CLI), matplotlib on Agg and COLUMNS=120
(wide enough that every rich table on the pages takes its natural width, so the CLI's
tables print as on the page). Python blocks run in order in that one interpreter (``exec``
in one namespace, like a notebook); bash blocks run in between, in page order, with
``bash -c`` and the same cwd. A separator line goes to stdout before each block, so each
block's output is cut out of the page's stdout and compared with its own output block.
Python blocks compare stdout; bash blocks compare stdout and stderr together (what a
terminal shows: a CLI's ``error:`` line is part of what the page shows). A block that
raises, or a bash block that exits non-zero, fails the page and stops it (later blocks may
need its names); a page that shows a refused command writes ``|| echo "exit $?"``.

How outputs compare (``match``): trailing whitespace of each line and blank lines at the
ends are dropped; ``...`` in the expected text matches any text (doctest's ELLIPSIS);
every other character must be equal, except numbers, which match when
``|a − e| ≤ max(RTOL · max(|a|, |e|), ATOL)`` (``math.isclose``). RTOL = 1e-3: the pages
print 3–4 significant digits, and float32 sums in another BLAS order move the fifth or
sixth; a change in the third digit is a real change (a value printed with 2 digits that
sits on a rounding edge could still flip). ATOL = 1e-5:
values below it on these pages are float rounding (residuals like ``1e-07`` of logits near
10 in float32, eps 1.2e-7), which another BLAS order changes completely.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose blocks another test owns: the generated derivation listing is compared with
# `pathexpand derive --examples` by tests/cli/test_derive.py.
OWNED_ELSEWHERE = {"docs/derivations.md": "generated; checked by tests/cli/test_derive.py"}

RTOL = 1e-3
ATOL = 1e-5
SEPARATOR = "\x1e--- docs-test block {} ---\x1e"
_FENCE = re.compile(r"^( {0,4})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")   # indented: inside a list
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->\s*$")
_NUMBER = re.compile(r"(?<![\w.])[-+−]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w])")


@dataclass
class Block:
    lang: str            # "python" or "bash"
    code: str
    line: int            # 1-based line of the opening fence
    expected: str | None  # the paired output block, or None
    skip: str | None      # the skip reason, or None
    bad_skip: bool = False  # a skip marker without a reason

    @property
    def first_line(self) -> str:
        return next((ln for ln in self.code.splitlines() if ln.strip()), "")


def parse(text: str) -> list[Block]:
    """The runnable blocks of a Markdown page, each with its paired output block (if any)."""
    lines = text.splitlines()
    fences = []          # (start, end, info, body) of every fenced block, in order
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m[1]), m[2], m[3].lower()
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and lines[j].strip(fence[0] + " ") == ""):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1:j]]
        fences.append((i, j, info, "\n".join(body)))
        i = j + 1
    blocks = []
    for n, (start, end, info, body) in enumerate(fences):
        if info not in ("python", "bash"):
            continue
        expected = None
        if n + 1 < len(fences):
            nstart, _, ninfo, nbody = fences[n + 1]
            if ninfo in ("text", "") and all(not ln.strip() for ln in lines[end + 1:nstart]):
                expected = nbody
        skip, bad = None, False
        m = _SKIP.match(lines[start - 1]) if start > 0 else None
        if m:
            reason = m[1].strip()
            if reason.startswith("(") and reason.endswith(")"):
                reason = reason[1:-1].strip()
            skip, bad = reason or "(no reason given)", not reason
        blocks.append(Block(info, body, start + 1, expected, skip, bad))
    return blocks


def _num(s: str) -> float:
    return float(s.replace("−", "-"))


def match(expected: str, actual: str) -> bool:
    """True when `actual` is `expected` up to trailing whitespace, `...` and number tolerance."""
    exp = _normalise(expected)
    act = _normalise(actual)
    pattern, numbers = [], []
    for k, piece in enumerate(exp.split("...")):
        if k:
            pattern.append("(?:.*?)")
        pos = 0
        for m in _NUMBER.finditer(piece):
            pattern.append(re.escape(piece[pos:m.start()]))
            pattern.append(r"([-+−]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")
            numbers.append(_num(m[0]))
            pos = m.end()
        pattern.append(re.escape(piece[pos:]))
    found = re.fullmatch("".join(pattern), act, re.DOTALL)
    if not found:
        return False
    return all(math.isclose(_num(a), e, rel_tol=RTOL, abs_tol=ATOL)
               for a, e in zip(found.groups(), numbers))


def _normalise(s: str) -> str:
    return "\n".join(ln.rstrip() for ln in s.strip("\n").splitlines()).strip("\n")


_DRIVER = r"""
import json, subprocess, sys, traceback
blocks = json.load(open(sys.argv[1]))
ns = {"__name__": "__main__"}
for i, (lang, code) in enumerate(blocks):
    sys.stdout.flush(); sys.stderr.flush()
    print(SEPARATOR.format(i), flush=True)
    if lang == "python":
        try:
            exec(compile(code, f"<docs block {i}>", "exec"), ns)
        except BaseException:
            sys.stdout.flush()
            traceback.print_exc()
            sys.exit(3)
    else:
        rc = subprocess.run(["bash", "-c", code], stderr=subprocess.STDOUT).returncode
        if rc:
            print(f"bash block exited with status {rc}", file=sys.stderr)
            sys.exit(3)
sys.stdout.flush()
"""


def run_page(blocks: list[Block], tmp_path: Path) -> tuple[list[str], str, int]:
    """Run the blocks of one page in one interpreter; each block's output, stderr, exit code."""
    work = tmp_path / "work"
    (work / "docs" / "images").mkdir(parents=True)
    (work / "examples").symlink_to(ROOT / "examples")   # pages run `python examples/NN_*.py`
    (tmp_path / "blocks.json").write_text(json.dumps([[b.lang, b.code] for b in blocks]))
    (tmp_path / "driver.py").write_text(f"SEPARATOR = {SEPARATOR!r}\n{_DRIVER}")
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT),
        MPLBACKEND="Agg", COLUMNS="120", PYTHONHASHSEED="0", PYTHONIOENCODING="utf-8",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=work, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    parts = proc.stdout.split("\n")
    outputs: list[list[str]] = []
    for ln in parts:
        if ln.startswith("\x1e--- docs-test block ") and ln.endswith("---\x1e"):
            outputs.append([])
        elif outputs:
            outputs[-1].append(ln)
    return ["\n".join(o) for o in outputs], proc.stderr, proc.returncode


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_snippets(page: Path, tmp_path: Path):
    name = _page_id(page)
    if name in OWNED_ELSEWHERE:
        pytest.skip(OWNED_ELSEWHERE[name])
    blocks = parse(page.read_text())
    bad = [b for b in blocks if b.bad_skip]
    assert not bad, f"{name}: skip marker without a reason before the block at line {bad[0].line}"
    for b in blocks:
        if b.skip:
            print(f"{name}:{b.line}: skipped ({b.skip}): {b.first_line}")
    run = [b for b in blocks if not b.skip]
    if not run:
        pytest.skip(f"{name}: no code blocks" if not blocks else
                    f"{name}: every code block is skipped ({'; '.join(b.skip for b in blocks)})")
    outputs, stderr, rc = run_page(run, tmp_path)
    failures = []
    for b, out in zip(run, outputs):
        if b.expected is not None and not match(b.expected, out):
            diff = "\n".join(difflib.unified_diff(
                _normalise(b.expected).splitlines(), _normalise(out).splitlines(),
                "page", "run", lineterm=""))
            failures.append(f"{name}:{b.line}: output differs for block `{b.first_line}`\n{diff}")
    if rc != 0:
        b = run[len(outputs) - 1] if outputs else run[0]
        failures.append(
            f"{name}:{b.line}: block `{b.first_line}` failed (exit {rc}):\n{stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)


def test_skipped_blocks_give_reasons():
    """Every skip marker on every page names its reason; the reasons are listed (-rP, -s)."""
    skips, bad = [], []
    for page in PAGES:
        for b in parse(page.read_text()):
            if b.skip:
                (bad if b.bad_skip else skips).append(f"{_page_id(page)}:{b.line}: {b.skip}")
    print("\n".join(["skipped docs blocks:", *skips]))
    assert not bad, f"skip markers without a reason: {bad}"


# The harness itself, checked on small pages whose right answers are known by construction.

PAGE = """
Text.

<!-- docs-test: skip (needs a network) -->
```bash
pip install something
```

```python
x = 2
print(x * 21)
```

```text
42
```

```python
print("no output block")
```

Prose in between, so this is not a pair:

```
1
```

```bash
echo "a  b   "
```
```
a  b
```
"""


def test_parse_pairs_and_skips():
    blocks = parse(PAGE)
    assert [(b.lang, b.first_line) for b in blocks] == [
        ("bash", "pip install something"), ("python", "x = 2"),
        ("python", 'print("no output block")'), ("bash", 'echo "a  b   "')]
    assert [b.skip for b in blocks] == ["needs a network", None, None, None]
    assert [b.expected for b in blocks] == [None, "42", None, "a  b"]
    assert parse("<!-- docs-test: skip -->\n```bash\nls\n```\n")[0].bad_skip
    listed = parse("- item:\n\n  ```python\n  print(1)\n  ```\n\n  ```text\n  1\n  ```\n")
    assert [(b.code, b.expected) for b in listed] == [("print(1)", "1")]


@pytest.mark.parametrize("expected, actual, ok", [
    ("a 1.234\nb", "a 1.2345  \nb\n", True),           # trailing space; rel. diff 4e-4
    ("a 1.234", "a 1.240", False),                      # third digit differs
    ("residual 1e-07", "residual 3e-06", True),         # both below ATOL: rounding noise
    ("took ... s\ndone", "took 12.5 s\ndone", True),    # ellipsis
    ("L1H2 0.5", "L1H3 0.5", False),                    # digits inside names are text
    ("x -0.25", "x −0.25", True),                       # Unicode minus
    ("a\nb", "a\nc", False),
    ("25 terms", "26 terms", False),
    ("...\n3 rows", "anything\nmore\n3 rows", True),
])
def test_match(expected, actual, ok):
    assert match(expected, actual) is ok


def test_run_page_splits_outputs_and_shares_namespace(tmp_path):
    blocks = parse(PAGE)[1:]
    outs, err, rc = run_page(blocks, tmp_path)
    assert rc == 0, err
    assert [match(b.expected, o) for b, o in zip(blocks, outs) if b.expected] == [True, True]
    assert outs[1].strip() == "no output block"
    failing = parse("```python\nraise ValueError('boom')\n```\n```python\nprint(1)\n```\n")
    outs, err, rc = run_page(failing, tmp_path / "f")
    assert rc != 0 and "ValueError: boom" in err and len(outs) == 1


def update(page: Path) -> list[str]:
    """Re-run a page and paste each checked pair's new output in place of the old one.

    Output blocks holding ``...`` (cut on purpose) are left as they are and reported, for a
    person to cut again; everything else on the page is kept byte for byte.
    """
    import tempfile
    text = page.read_text()
    blocks = [b for b in parse(text) if not b.skip]
    with tempfile.TemporaryDirectory() as tmp:
        outputs, stderr, rc = run_page(blocks, Path(tmp))
    if rc != 0:
        raise SystemExit(f"{_page_id(page)}: a block failed (exit {rc}):\n{stderr[-3000:]}")
    lines = text.splitlines(keepends=True)
    by_line = {b.line: (b, out) for b, out in zip(blocks, outputs)}
    manual, edits = [], []
    for fence_line, (b, out) in by_line.items():
        if b.expected is None or match(b.expected, out):
            continue
        if "..." in b.expected:
            manual.append(f"{_page_id(page)}:{b.line}: `{b.first_line}` (its output is cut with ...)")
            continue
        i = fence_line - 1 + len(b.code.splitlines()) + 2      # after the code's closing fence
        while not _FENCE.match(lines[i]):
            i += 1
        j = i + 1
        while not lines[j].strip().startswith(lines[i].strip()[:3]):
            j += 1
        edits.append((i + 1, j, _normalise(out)))
    for start, end, new in reversed(edits):
        lines[start:end] = [new + "\n"] if new else []
    page.write_text("".join(lines))
    return manual


if __name__ == "__main__":
    # Refresh pages after a deliberate change of output: python tests/test_docs.py docs/x.md ...
    for arg in sys.argv[1:]:
        for note in update(Path(arg).resolve()):
            print("cut by hand:", note)
