"""Read circuits as text: bigrams from the direct path, skip-trigrams from each head's QK and OV circuits.

    python examples/02_skip_trigrams.py [MODEL]       # default: attn-only-1l

Zero layers: the direct path ``W_E W_U`` is a bigram table — row ``b`` is the logits the
model gives the next byte after ``b`` through the residual stream alone.
One layer: a head with query byte ``B`` attends to an earlier byte ``A`` when the QK circuit
``W_E W_QK W_Eᵀ`` (row ``B``, column ``A``) is large, and then raises the logits in row ``A``
of the OV circuit ``W_E W_OV W_U``: the skip-trigram "A … B → C". Pairs are ranked by how
much more the query likes A than the average printable key (a constant along a QK row
cancels in the softmax).
Every circuit stays factored (``pe.circuit`` returns a ``Factored`` chain); one row of it
is ``e_iᵀ F_1 ⋯ F_k``, multiplied left to right, so no 256 × 256 matrix is ever built.
"""

from __future__ import annotations

import sys

import torch

import pathexpand as pe

BIGRAM_BYTES = "q(d:_\n"
PRINTABLE = [9, 10, *range(32, 127)]  # tab, newline, ' '..'~': the bytes of source code


def show(w, i: int) -> str:
    return f"'{w.tokenizer.token_str(int(i))}'"  # token_str prints '\\n' for newline, '␣' for space


def bigrams(w) -> None:
    direct = pe.circuit(("embed",), w)  # W_E W_U, factored: 256×d_model×256
    print(f"direct path W_E W_U: {direct}")
    for ch in BIGRAM_BYTES:
        b = w.tokenizer.encode(ch)[0]
        row = direct.row(b)  # logits of the next byte after b, from the direct path alone
        top = torch.topk(row, 3).indices.tolist()
        print(f"  after {show(w, b):<5} → " + ", ".join(f"{show(w, c)} {row[c]:+.1f}" for c in top))


def skip_trigrams(w, head: str, n: int = 4) -> None:
    arch = pe.Architecture.from_weights(w)
    qk = pe.circuit(pe.expand_scores(arch, head=head)["q:direct · k:direct"], w)  # W_E W_Q W_Kᵀ W_Eᵀ
    ov = pe.circuit(("embed", head), w)  # W_E W_OV W_U
    keys = torch.tensor(PRINTABLE)
    pairs = []  # (margin, query B, key A): the key each printable query byte likes best
    for b in PRINTABLE:
        scores = qk.row(b)[keys]  # only differences along a row matter to the softmax
        j = int(scores.argmax())
        pairs.append((float(scores[j] - scores.mean()), b, int(keys[j])))
    copying = pe.evaluate(pe.expand_logits(arch).filter(kind="head", through=head), w, metric="copying")
    print(f"\n{head}: copying score {copying.top(1)[0].value:+.3f}; strongest 'A … B → C' "
          f"(qk: QK[B, A] − mean_A' QK[B, A'], before /√d_head; C = top of OV row A):")
    for margin, b, a in sorted(pairs, reverse=True)[:n]:
        out = ov.row(a)
        c = int(out.argmax())
        print(f"  {show(w, a):<5} … {show(w, b):<5} → {show(w, c):<5} qk {margin:+6.1f}   ov {out[c]:+.2f}")


def main(model: str = "attn-only-1l") -> None:
    w = pe.load(model)
    print(f"{w.name}: {w.config.n_layers} layer(s), {w.config.n_heads} heads, d_vocab {w.config.d_vocab}")
    bigrams(w)
    for h in range(w.config.n_heads):
        skip_trigrams(w, f"L0H{h}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
