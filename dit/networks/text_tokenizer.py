"""Captions to token ids: the front end of the trainable text encoder (text_encoder.py), recorded in its
config so a checkpoint reads prompts the way it was trained.

Two tokenizers, both without files to fetch:
    words   a vocabulary of lower-case words (runs of letters and digits; punctuation is dropped), built
            from the training captions (or the built-in data's templates); unknown words read as UNK
    bytes   the caption's UTF-8 bytes: any text, longer sequences
Ids: PAD 0 (padding, and the whole of an empty caption: the null text of classifier-free guidance),
UNK 1 (words only), then the words in vocabulary order (or byte b as b + 1). A caption longer than
`length` tokens is cut at `length`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from dit.errors import UserError

PAD, UNK = 0, 1
TOKENIZERS = ("words", "bytes")
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    """The words of a caption as the word tokenizer reads them: lower case, letters and digits only."""
    return _WORD.findall(text.lower())


def build_vocabulary(captions: Iterable[str]) -> list[str]:
    """The sorted words of `captions` (a word tokenizer's vocabulary)."""
    return sorted({w for c in captions for w in split_words(c)})


class TextTokenizer:
    """kind "words" (with `vocabulary`) or "bytes" -> fixed-length id rows (module docstring)."""

    def __init__(self, kind: str, vocabulary: Iterable[str] = ()):
        if kind not in TOKENIZERS:
            raise UserError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")
        self.kind, self.vocabulary = kind, tuple(vocabulary)
        if kind == "words" and not self.vocabulary:
            raise UserError("a word tokenizer needs a vocabulary (the training captions had no words)")
        if kind == "words" and len(set(self.vocabulary)) != len(self.vocabulary):
            raise UserError("a word tokenizer's vocabulary holds a word twice")
        self._ids = {w: i + 2 for i, w in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table: PAD, UNK and the words; or PAD and the 256 bytes."""
        return len(self.vocabulary) + 2 if self.kind == "words" else 257

    def ids(self, text: str) -> list[int]:
        if self.kind == "bytes":
            return [b + 1 for b in text.encode("utf-8")]
        return [self._ids.get(w, UNK) for w in split_words(text)]

    def unknown(self, text: str) -> list[str]:
        """The words of `text` this tokenizer reads as UNK (none for bytes)."""
        return [] if self.kind == "bytes" else [w for w in split_words(text) if w not in self._ids]

    def encode(self, texts: Iterable[str], length: int) -> torch.Tensor:
        """(B, length) long ids, PAD after each caption's tokens, each cut at `length`."""
        rows = [self.ids(t)[:length] for t in texts]
        out = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out
