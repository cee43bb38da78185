"""Token ids -> text: each token's bytes, and an incremental UTF-8 decoder.

The wrapper's streaming detokenizer reports text only, but logprobs need the
exact bytes each token carried, and per-token text must stay O(1). So each
token's bytes are looked up once per tokenizer (cached on first use), and
Python's incremental UTF-8 decoder holds back a character split over several
tokens until its last byte arrives: no U+FFFD for a split character.

The text equals what the wrapper's detokenizer gives, including its one rule
beyond plain decoding: mlx-lm's BPE and SentencePiece detokenizers drop one
leading space from the very start of the output.
"""

from __future__ import annotations

import codecs
import functools
import weakref
from typing import Any

from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, SPMStreamingDetokenizer

_PROBE = "Hi wörld, 你好 😀\n\tx  y"


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: one printable character stands for each byte."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    alphabet = {chr(b): b for b in printable}
    kept = set(printable)
    shifted = 0
    for b in range(256):
        if b not in kept:
            alphabet[chr(256 + shifted)] = b
            shifted += 1
    return alphabet


def _byte_level_bytes(piece: str) -> bytes:
    alphabet = _byte_level_alphabet()
    try:
        return bytes(alphabet[c] for c in piece)
    except KeyError:  # a piece outside the alphabet: take its characters as text
        return b"".join(bytes((alphabet[c],)) if c in alphabet else c.encode() for c in piece)


def _sentencepiece_bytes(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes((int(piece[3:5], 16),))
    return piece.replace("\u2581", " ").encode()


class TokenTable:
    """Bytes and logprob text of every token of one tokenizer, built lazily.

    Shared by all rows of a model (see `token_table`); filling the cache from
    several threads is harmless since every writer stores the same value.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}
        self._pieces: dict[int, tuple[str, tuple[int, ...]]] = {}
        self._added: dict[int, bytes] = {
            token_id: added.content.encode()
            for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items()
        }
        self._size = len(tokenizer)
        detokenizer = tokenizer.detokenizer
        if isinstance(detokenizer, BPEStreamingDetokenizer):
            self._convert, self.trim_leading_space = self._from_byte_level, True
        elif isinstance(detokenizer, SPMStreamingDetokenizer):
            self._convert = self._from_sentencepiece
            self.trim_leading_space = bool(detokenizer.trim_space)
        else:  # a plain `decode` detokenizer: find a per-token rule that agrees with it
            self._convert, self.trim_leading_space = self._probe()

    def bytes_of(self, token: int) -> bytes:
        """The raw bytes a token stands for (b"" for an id outside the vocabulary)."""
        try:
            return self._bytes[token]
        except KeyError:
            pass
        if token in self._added:
            value = self._added[token]
        elif 0 <= token < self._size:
            value = self._convert(token)
        else:
            value = b""
        self._bytes[token] = value
        return value

    def piece(self, token: int) -> tuple[str, tuple[int, ...]]:
        """(text, bytes) of a token as OpenAI logprobs show it.

        Bytes that are not whole UTF-8 characters (part of a character split
        over tokens) are written as `\\xNN` escapes, as OpenAI does; `bytes`
        holds the raw values, so clients can join them.
        """
        try:
            return self._pieces[token]
        except KeyError:
            raw = self.bytes_of(token)
            value = (raw.decode("utf-8", "backslashreplace"), tuple(raw))
            self._pieces[token] = value
            return value

    def _from_byte_level(self, token: int) -> bytes:
        return _byte_level_bytes(self._tokenizer.convert_ids_to_tokens(token) or "")

    def _from_sentencepiece(self, token: int) -> bytes:
        return _sentencepiece_bytes(self._tokenizer.convert_ids_to_tokens(token) or "")

    def _from_decode(self, token: int) -> bytes:
        return self._tokenizer.decode([token]).encode()

    def _probe(self) -> tuple[Any, bool]:
        """Pick the per-token rule whose joined bytes decode like the tokenizer does."""
        ids = self._tokenizer.encode(_PROBE, add_special_tokens=False)
        expected = self._tokenizer.decode(ids).encode()
        for convert in (self._from_byte_level, self._from_sentencepiece):
            joined = b"".join(self._added.get(i) or convert(i) for i in ids)
            if joined == expected:
                return convert, False
            if joined[:1] == b" " and joined[1:] == expected:
                return convert, True
        # Unknown decoder: token by token (a character split over tokens shows as U+FFFD).
        return self._from_decode, False


_TABLES: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()


def token_table(tokenizer: Any) -> TokenTable:
    """The shared `TokenTable` of a tokenizer, so each token is converted once per model."""
    table = _TABLES.get(tokenizer)
    if table is None:
        table = _TABLES[tokenizer] = TokenTable(tokenizer)
    return table


class TextDecoder:
    """Token ids in, new text out; holds back incomplete UTF-8 characters."""

    __slots__ = ("_bytes_of", "_decode", "_trim")

    def __init__(self, table: TokenTable, trim: bool = True) -> None:
        """`trim=False` keeps a leading space the detokenizer would drop (a raw prompt's
        continuation: " there" after "Hello" is not the start of a message)."""
        self._bytes_of = table.bytes_of
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._trim = trim and table.trim_leading_space

    def add(self, token: int) -> str:
        """Text completed by this token ("" while a character is still incomplete)."""
        text = self._decode(self._bytes_of(token))
        if self._trim and text:
            self._trim = False
            if text[0] == " ":
                return text[1:]
        return text

    def finish(self) -> str:
        """Whatever is left: an incomplete character at the very end becomes U+FFFD."""
        text = self._decode(b"", True)
        if self._trim and text:
            self._trim = False
            if text[0] == " ":
                return text[1:]
        return text
