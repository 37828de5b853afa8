"""Byte-level tokenizer of the bundled models: token id = byte value (d_vocab = 256).

Bytes because every text is encodable with no vocabulary file, copy tasks over random
bytes are easy to generate, and each token shows as one readable character. The price:
a token is a character, so skip-trigrams read as character patterns (``"de" … "f" → "def"``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ByteTokenizer", "get_tokenizer"]

_NAMES = {9: "\\t", 10: "\\n", 13: "\\r", 32: "␣"}


class ByteTokenizer:
    """``encode(str) -> list[int]`` (UTF-8 bytes), ``decode(ids) -> str``, ``token_str(id)``."""

    name = "bytes"
    d_vocab = 256

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as token ids."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (invalid UTF-8 sequences shown as U+FFFD)."""
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_str(self, token: int) -> str:
        """A printable label for one token: ``'a'``, ``'␣'``, ``'\\n'``, ``'0xff'``."""
        token = int(token)
        if token in _NAMES:
            return _NAMES[token]
        if 33 <= token < 127:
            return chr(token)
        return f"0x{token:02x}"

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def get_tokenizer(name: str | None):
    """The tokenizer a model card names (``"bytes"``), or None when the card names none."""
    if name in (None, "", "none"):
        return None
    if name == "bytes":
        return ByteTokenizer()
    from ..errors import PathexpandError

    raise PathexpandError(f"unknown tokenizer {name!r}; known: 'bytes'")
