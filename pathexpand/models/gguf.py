"""llama.cpp GGUF files → ``Weights``, read through ``transformers``' own GGUF loader.

``transformers`` dequantizes every tensor to float32, reads the config from the file's
metadata and undoes llama.cpp's row permutation of ``W_Q``/``W_K`` (llama.cpp reorders each
head's rows for the adjacent rotary pairing ``2m, 2m+1``; ``transformers`` restores the halves
pairing ``m, m + d_head/2`` its modeling code rotates). The model is then mapped by
``models.hf.from_hf``, so a GGUF file loads exactly as the Hugging Face model it converts to;
families ``from_hf`` does not know are refused the same way.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PathexpandError, WeightsFileError, require
from ..numeric.weights import Weights

__all__ = ["from_gguf"]


def from_gguf(path) -> Weights:
    """``Weights`` (and the file's tokenizer, when it has one) from a ``.gguf`` file."""
    require("gguf", "gguf", "loading GGUF files")
    transformers = require("transformers", "gguf", "loading GGUF files")
    from .hf import HFTokenizer, from_hf

    path = Path(path).expanduser()
    if not path.is_file():
        raise PathexpandError(f"no such GGUF file: {str(path)!r}")
    folder, name = str(path.parent), path.name
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, local_files_only=True).eval()
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsFileError(f"cannot read GGUF file {str(path)!r}: {first}") from None
    tokenizer = None
    if _has_tokenizer(path):
        tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True),
                                name=name)
    weights = from_hf(model, tokenizer=tokenizer)
    weights.name = path.stem
    return weights


def _has_tokenizer(path: Path) -> bool:
    """True when the file's metadata holds a vocabulary (``tokenizer.ggml.tokens``)."""
    import gguf

    return "tokenizer.ggml.tokens" in gguf.GGUFReader(str(path)).fields
