"""Every script in examples/ runs on the bundled models and prints what its docs page says.

Each example runs in its own ``python examples/NN_*.py`` subprocess, as a reader would run
it; its output is then checked against a second route where one exists (a bigram row
recomputed densely from ``W_E @ W_U``, the closed-form term count, the path contributions
adding up to the printed logit) and otherwise against facts of the bundled model
(previous-token head L0H1, induction head L1H2).
"""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pathexpand as pe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-3000:]}"
    assert proc.stderr.strip() == "" or "Warning" in proc.stderr, proc.stderr[-2000:]
    return proc.stdout


def test_every_example_is_tested():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    tested = sorted(n for n in re.findall(r'"(\d\d_\w+\.py)"', Path(__file__).read_text()))
    assert scripts == sorted(set(tested))


def test_01_derive_counts_match_closed_form_without_torch():
    out = run_example("01_derive.py")
    m = re.search(r"(\d+) logit terms; closed form Π_l \(1 \+ H_l\) = (\d+)", out)
    assert m and int(m[1]) == int(m[2]) == math.prod([1 + 4, 1 + 4])
    counts = {k: int(n) for k, n in re.findall(r"^\s+(direct|head|virtual)\s+(\d+) terms", out, re.MULTILINE)}
    assert counts == {"direct": 1, "head": 8, "virtual": 16}
    assert re.findall(r"^\s+(L1H2∘L0H\d)", out, re.MULTILINE) == [f"L1H2∘L0H{h}" for h in range(4)]
    assert "direct 1, q_composition 4, k_composition 4, qk_composition 16" in out
    assert r"W_{OV}^{1,2} W_{OV}^{0,1}" in out
    assert "torch imported: False" in out


def test_02_skip_trigrams_bigram_rows_match_dense_direct_path():
    import pathexpand as pe

    out = run_example("02_skip_trigrams.py")
    w = pe.load("attn-only-1l")
    dense = np.asarray(w.W_E, np.float64) @ np.asarray(w.W_U, np.float64)  # 256×256: small, second route
    tok = w.tokenizer
    rows = re.findall(r"^  after '(.+?)'\s+→ (.+)$", out, re.MULTILINE)
    assert len(rows) == 6
    for src, rest in rows:
        b = next(i for i in range(256) if tok.token_str(i) == src)
        printed = re.findall(r"'(.+?)' ([+-]\d+\.\d)", rest)
        expected = np.argsort(-dense[b])[:3]
        assert [tok.token_str(int(c)) for c in expected] == [s for s, _ in printed]
        np.testing.assert_allclose([float(v) for _, v in printed], dense[b, expected], atol=0.051)
    heads = re.findall(r"^(L0H\d): copying score ([+-]\d\.\d+)", out, re.MULTILINE)
    assert [h for h, _ in heads] == [f"L0H{h}" for h in range(w.config.n_heads)]
    assert all(-1 <= float(s) <= 1 for _, s in heads)
    assert len(re.findall(r"^  '.+?'\s+… '.+?'\s+→ '.+?'\s+qk", out, re.MULTILINE)) == 4 * w.config.n_heads


def test_03_rank_terms_norms_and_composition():
    out = run_example("03_rank_terms.py")
    assert "attn-only-2l: 56 logit terms" in out
    top = re.findall(r"^  (\S+)\s+(direct|head|virtual|bias)\s+([\d.]+)$", out, re.MULTILINE)
    assert len(top) == 5 and "% of the total" not in out   # Frobenius norms do not add up
    values = [float(v) for _, _, v in top]
    assert values == sorted(values, reverse=True)
    w = pe.load("attn-only-2l")
    dense = {n: np.linalg.norm(pe.circuit(n, w).dense().numpy()) for n, _, _ in top}
    np.testing.assert_allclose(values, [dense[n] for n, _, _ in top], rtol=0.01)
    copying = re.findall(r"^  (L\dH\d)\s+([+-]\d\.\d+)\s+positive share", out, re.MULTILINE)
    assert len(copying) == 8 and all(-1 <= float(s) <= 1 for _, s in copying)
    assert re.search(r"^  L0H1 → L1H2  score [\d.]+  z \+\d", out, re.MULTILINE)


def test_04_induction_circuit_found_three_ways():
    out = run_example("04_induction_circuit.py")
    assert re.search(r"previous-token head: L0H1 \(mean attention on the previous token 0\.\d\d\)", out)
    assert re.search(r"induction head:\s+L1H2 ", out)
    assert "strongest K-composition into L1H2: L0H1 → L1H2" in out
    assert "pe.induction_circuit: induction circuit L0H1 → L1H2" in out
    m = re.search(r"score ([-\d.]+) = Σ of (\d+) terms \(relative error ([\d.e+-]+)\)", out)
    assert m and float(m[3]) < 1e-4
    kinds = dict(re.findall(r"^  (direct|q_composition|k_composition|qk_composition)\s+([+-][\d.]+)", out, re.MULTILINE))
    assert len(kinds) == 4
    assert math.isclose(sum(float(v) for v in kinds.values()), float(m[1]), abs_tol=0.005)
    first = re.search(r"favour this key over the others:\n  (.+?)\s{2,}(\w+)", out)
    assert first and first[1] == "q:direct · k:L0H1" and first[2] == "k_composition"


def test_05_attribute_top_paths_certified():
    out = run_example("05_attribute.py")
    m = re.search(r"relative residual error ([\d.e+-]+)", out)
    assert m and float(m[1]) < 1e-4
    block = out.split("top 5 paths:")[1].split("top 3 heads")[0]
    listed = re.findall(r"^  (\S+)\s+\S+\s+([+-][\d.]+)$", block, re.MULTILINE)
    certified = re.findall(r"^  (\S+)\s+([+-][\d.]+)$", out.split("certified top 3")[1].split("every unlisted")[0], re.MULTILINE)
    assert "(complete," in out
    # branch and bound found the same three paths the exhaustive attribution ranks first
    assert certified == listed[:3]
    bound = float(re.search(r"\|contribution\| ≤ ([\d.]+)", out)[1])
    assert bound <= min(abs(float(v)) for _, v in certified) + 1e-3
    assert abs(float(listed[3][1])) <= bound + 1e-3


@pytest.mark.needs_graphviz
def test_06_draw_and_report_writes_files(tmp_path):
    out = run_example("06_draw_and_report.py", str(tmp_path))
    svg = (tmp_path / "induction_circuit.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "L1H2" in svg and "L0H1" in svg
    png = (tmp_path / "eigenvalues.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    html = (tmp_path / "report.html").read_text()
    assert "<math" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # self-contained: nothing fetched
    assert f"report: {tmp_path / 'report.html'} ({len(html):,} characters" in out
    assert re.search(r"panels: L0H1 +copying 1\.00, L0H3 +copying", out)


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.DOTALL)[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("25 terms; A^{1,2} A^{0,1} \\otimes W_U W_{OV}^{1,2} W_{OV}^{0,1} W_E\n")
    assert re.search(r"^induction circuit L0H1 → L1H2: .*z \d+\.\d\)$", out, re.MULTILINE)
    m = re.search(r"\('o' at the last position\) = ([\d.]+); residual ([\d.e+-]+)", out)
    assert m and float(m[2]) < 1e-4
    first = re.search(r"^1  (\S+)\s+head\s+1\s+([\d.]+)", out, re.MULTILINE)   # no path column: the name says it
    assert first and first[1] == "L1H2" and float(first[2]) > float(m[1]) / 2


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_docs_links_resolve():
    """Every relative link and image in README.md and docs/*.md points at a file (and heading) that exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 10
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.name}: broken link {target}"
            if anchor:
                assert anchor in _anchors(path), f"{page.name}: no heading #{anchor} in {path.name}"


@pytest.mark.needs_graphviz
def test_07_modern_blocks(tmp_path):
    out = run_example("07_modern_blocks.py", str(tmp_path))
    w = pe.load("modern-2l")
    c = w.config
    assert (c.normalization, c.positional, c.gated_mlp, c.parallel_attn_mlp) == ("RMS", "rotary", True, True)
    assert c.n_key_value_heads < c.n_heads
    # closed form: skip, one of 4 heads or the MLP in each of 2 layers
    assert f"{(2 + c.n_heads) ** c.n_layers} paths from the token embedding = (2 + 4) · (2 + 4)" in out
    assert "R_(j−i)" in out                                   # the score term shows the rotation
    heads = pe.detect_heads(w)
    for kind in ("previous_token", "induction"):
        best = np.unravel_index(np.nanargmax(heads[kind]), heads[kind].shape)
        assert f"best {kind} head: L{best[0]}H{best[1]} {np.nanmax(heads[kind]):.3f}" in out
    cs = pe.composition_scores(w, "k_composition")
    top = cs.ranking("k_composition")[0]
    assert re.search(rf"1 +{re.escape(top.name)} .*{top['z']:.4g}", out)
    assert "mean over offsets Δ = 0 … -15" in out
    m = re.search(r"= ([\d.-]+); residual error ([\d.e+-]+)", out)
    assert float(m[2]) < 1e-5
    assert (tmp_path / "modern_circuit.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_08_residual_and_composition_against_dense_numpy():
    out = run_example("08_residual_and_composition.py")
    w = pe.load("attn-only-2l")
    f = lambda name: np.asarray(w[name], np.float64)
    W = {k: [f(f"blocks.{l}.attn.{k}") for l in range(2)] for k in ("W_Q", "W_K", "W_V", "W_O")}
    C = lambda a, b: np.linalg.norm(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))

    # virtual weights: the printed top three are the three largest of all 48, recomputed densely
    printed = re.findall(r"^  (L0H(\d) → L1H(\d)\.([qkv]))\s+([\d.]+)$", out, re.MULTILINE)
    every = sorted((C(W["W_O"][0][h1], W[f"W_{i}"][1][h2]), f"L0H{h1} → L1H{h2}.{i.lower()}")
                   for h1 in range(4) for h2 in range(4) for i in "QKV")[::-1]
    assert [p[0] for p in printed] == [name for _, name in every[:3]]
    np.testing.assert_allclose([float(p[4]) for p in printed], [v for v, _ in every[:3]], atol=6e-5)
    assert printed[0][0] == "L0H1 → L1H2.k"                       # the previous-token → induction key

    errors = re.search(r"max \|concat − Σ_h\| ([\d.e+-]+), max \|Σ_h − stream increment\| ([\d.e+-]+)", out)
    assert float(errors[1]) < 1e-10 and float(errors[2]) < 1e-10

    # composition scores: each kind's top pair against the formula evaluated densely
    OV = lambda l, h: W["W_V"][l][h] @ W["W_O"][l][h]
    R = {"q": lambda h: W["W_Q"][1][h] @ W["W_K"][1][h].T, "k": lambda h: W["W_K"][1][h] @ W["W_Q"][1][h].T,
         "v": lambda h: OV(1, h)}
    tops = re.findall(r"^([qkv])_composition: top L0H(\d) → L1H(\d)\.[qkv] ([\d.]+) \(null ([\d.]+)", out, re.MULTILINE)
    assert len(tops) == 3
    for kind, h1, h2, score, null in tops:
        assert math.isclose(float(score), C(OV(0, int(h1)), R[kind](int(h2))), abs_tol=6e-5)
        assert abs(float(null) - 128 ** -0.5) < 0.002              # E[C²] = 1/d_model: mean just under 1/√d
    assert ("k", "1", "2") == tops[1][:3]

    # the induction QK term: copying from numpy's eigenvalues of the dense 256×256 product
    E = f("W_E")
    for head, copying, pct in re.findall(r"^(L1H\d) q:direct · k:L0H1: copying ([+-][\d.]+), diagonal is the row "
                                         r"maximum for ([\d.]+)%", out, re.MULTILINE):
        h2 = int(head[-1])
        dense = E @ W["W_Q"][1][h2] @ W["W_K"][1][h2].T @ (E @ OV(0, 1)).T
        lam = np.linalg.eigvals(dense)
        assert math.isclose(float(copying), lam.real.sum() / np.abs(lam).sum(), abs_tol=2e-3)
        assert math.isclose(float(pct), 100 * np.mean(dense.argmax(1) == np.arange(256)), abs_tol=0.06)
    assert float(re.search(r"^L1H2 q:direct · k:L0H1: copying ([+-][\d.]+)", out, re.MULTILINE)[1]) > 0.99

    # pointer arithmetic: a query side pos → L0H → L1H0 for each of 4 heads, against key sides direct or pos
    assert "standard: 8 Q-composition terms through a moved position" in out
    assert "shortformer: 0 Q-composition terms through a moved position" in out

    # skip-trigram: the head adds OV row 'n' at both destinations, recomputed from the forward pass
    w1 = pe.load("attn-only-1l")
    g = lambda name: np.asarray(w1[name], np.float64)
    ov = g("W_E") @ g("blocks.0.attn.W_V")[0] @ g("blocks.0.attn.W_O")[0] @ g("W_U")
    m = re.search(r"adds ([+-][\d.]+) to logit\('m'\) and ([+-][\d.]+) to logit\('a'\)", out)
    np.testing.assert_allclose([float(m[1]), float(m[2])], [ov[ord("n"), ord("m")], ov[ord("n"), ord("a")]], atol=6e-3)
    pushes = re.findall(r"^  ('.+')\s+\(text says '(\w)'\): L0H0 → logit\('m'\) − logit\('a'\) ([+-][\d.]+)", out, re.MULTILINE)
    assert [p[1] for p in pushes] == ["m", "a"]
    for prompt, _, value in pushes:
        ids = np.asarray(w1.tokenizer.encode(ast.literal_eval(prompt)))
        _, cache = pe.run_with_cache(w1, ids)
        A = np.asarray(cache.patterns[0, 0, 0, -1], np.float64)
        v = g("W_E")[ids] @ g("blocks.0.attn.W_V")[0] @ g("blocks.0.attn.W_O")[0] @ g("W_U")   # b_V is its own path
        head = A @ v                                  # [d_vocab]: what path embed → L0H0 adds at the last position
        assert math.isclose(float(value), head[ord("m")] - head[ord("a")], abs_tol=6e-3)
        assert float(value) > 1                                       # m over a at both destinations
