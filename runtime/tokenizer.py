"""CLIP byte-level BPE tokenizer in plain Python: the same ids as ``open_clip.tokenize``.

Vocabulary: ``bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's BPE merge list (MIT License), as shipped with open_clip.

Text goes through open_clip's default ("lower") cleaning: ftfy ``fix_text``,
HTML unescaped twice, whitespace runs collapsed to one space, stripped,
lowercased. It is then split by CLIP's regex (case-insensitive as open_clip
compiles it: "it'ſ" keeps "'ſ" as one contraction), each piece is UTF-8 encoded,
mapped byte by byte to printable characters and merged by BPE rank.
"""
from __future__ import annotations

import gzip
import html
import warnings
from pathlib import Path

import ftfy
import numpy as np
import regex

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
END_OF_WORD = "</w>"
# CLIP's vocabulary is 49408 entries: 256 bytes, 256 end-of-word bytes, 48894 merges, 2 special tokens.
_MERGE_COUNT = 49152 - 256 - 2
_PIECE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_alphabet() -> dict[int, str]:
    """The reversible map of the 256 byte values to printable characters (CLIP's ``bytes_to_unicode``).

    The order matters: printable bytes first, then the others; it is the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable}
    chars.update({b: chr(256 + n) for n, b in enumerate(others)})
    return chars


def clean_text(text: str) -> str:
    """open_clip's default cleaning: ftfy, HTML unescape twice, collapse whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """The ranked BPE merges of a CLIP vocabulary file (gzip text, one ``a b`` pair a line after a header)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:_MERGE_COUNT + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != _MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} is not a CLIP BPE vocabulary: expected {_MERGE_COUNT} merge lines of two symbols")
    return merges


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every non-overlapping occurrence of ``pair``, left to right, by its concatenation."""
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


class ClipTokenizer:
    """``tokenizer(texts, context_length=77) -> (N, context_length) int64`` ids, as ``open_clip.tokenize``."""

    def __init__(self, vocab_file: str | Path = VOCAB_FILE):
        merges = read_merges(vocab_file)
        self.byte_chars = byte_alphabet()
        symbols = list(self.byte_chars.values())
        vocab = symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.start_id = self.encoder[START_OF_TEXT]
        self.end_id = self.encoder[END_OF_TEXT]
        specials = f"{START_OF_TEXT}|{END_OF_TEXT}"
        self.pattern = regex.compile(f"{specials}|{_PIECE_PATTERN}", regex.IGNORECASE)
        self._bpe_cache: dict[str, tuple[str, ...]] = {START_OF_TEXT: (START_OF_TEXT,), END_OF_TEXT: (END_OF_TEXT,)}

    def bpe(self, piece: str) -> tuple[str, ...]:
        """The vocabulary tokens of one byte-mapped piece (cached per tokenizer)."""
        cached = self._bpe_cache.get(piece)
        if cached is not None:
            return cached
        symbols = (*piece[:-1], piece[-1] + END_OF_WORD)
        while len(symbols) > 1:
            best = min(zip(symbols, symbols[1:]), key=lambda pair: self.ranks.get(pair, _MERGE_COUNT))
            if best not in self.ranks:
                break
            symbols = merge_pair(symbols, best)
        self._bpe_cache[piece] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start/end tokens."""
        ids = []
        for piece in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(mapped))
        return ids

    def __call__(self, texts: str | list[str], context_length: int = 77) -> np.ndarray:
        """Start token, ids, end token, zero padding; over-long text is cut and ends with the end token."""
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in zip(out, texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > context_length:
                warnings.warn(f"prompt truncated to the context length {context_length}: {len(ids) - context_length} "
                              f"of its {len(ids) - 2} tokens dropped ({text[:40]!r}...)", stacklevel=2)
                ids = ids[:context_length - 1] + [self.end_id]
            row[:len(ids)] = ids
        return out
