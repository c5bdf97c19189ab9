"""Banned-words filter for Chinese and English (and any other script).

Text and words are normalised the same way: NFKC (full-width letters become ASCII, compatibility
forms fold), case-folded, and with spaces, punctuation and symbols removed, so "B A D",
full-width "bad" and "坏·词" match "bad" and "坏词". Chinese has no word boundaries, so every word is a
substring match; short Latin words would then hit innocent longer words ("ass" in "class"), so
Latin-only words of up to four letters must stand alone in the original text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import ahocorasick


class _LettersAndDigits(dict[int, int | None]):
    """A ``str.translate`` table keeping letters and digits (Unicode categories L* and N*) and
    dropping everything else, filled as characters are met (at most _KEPT of them: text in
    every script of Unicode cannot make it grow without end)."""

    def __missing__(self, point: int) -> int | None:
        kept = point if unicodedata.category(chr(point))[0] in "LN" else None
        if len(self) < _KEPT:
            self[point] = kept
        return kept


_KEPT = 100_000
_LETTERS_AND_DIGITS = _LettersAndDigits()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def normalise(text: str) -> str:
    """NFKC, case-folded, letters and digits only."""
    return _fold(text).translate(_LETTERS_AND_DIGITS)


class BannedWords:
    """Words matched anywhere go in one Aho-Corasick automaton (``pyahocorasick``, a C
    extension): a comment is scanned in one pass whatever the number of words (a regular
    expression of 100,000 alternatives took ~30 ms a comment, and seconds to compile). A short
    Latin word that must stand alone can only be a whole run of Latin letters of the text (a
    letter on either side would touch it): those runs are looked up in a set."""

    def __init__(self, words: Iterable[str]) -> None:
        anywhere = ahocorasick.Automaton()
        standalone: set[str] = set()
        for word in words:
            norm = normalise(word)
            if not norm:
                continue
            if norm.isascii() and norm.isalpha() and len(norm) <= 4:
                standalone.add(norm)
            else:
                anywhere.add_word(_octets(norm), 0)
        self._anywhere: ahocorasick.Automaton | None = None
        if len(anywhere):
            anywhere.make_automaton()
            self._anywhere = anywhere
        self._standalone = frozenset(standalone)

    def __bool__(self) -> bool:
        return self._anywhere is not None or bool(self._standalone)

    def found_in(self, text: str) -> bool:
        folded = _fold(text)
        if self._anywhere is not None:
            for _ in self._anywhere.iter(_octets(folded.translate(_LETTERS_AND_DIGITS))):
                return True
        if self._standalone:
            # in the folded text, spaces and punctuation kept
            return any(run in self._standalone for run in _LATIN_RUNS.findall(folded))
        return False


#: Whole runs of up to four Latin letters (no Latin letter before or after).
_LATIN_RUNS = re.compile("(?<![a-z])[a-z]{1,4}(?![a-z])")


def _octets(norm: str) -> str:
    """A normalised text as its UTF-8 bytes, one character per byte. Searching bytes finds the
    same words (UTF-8 is self-synchronising: a word's bytes in a text's bytes start on a
    character), but the automaton's nodes then have at most 256 children instead of thousands
    of CJK characters: 20 times faster to scan and several times faster to build. normalise()
    keeps letters and digits only, so no lone surrogate is left to fail the encoding."""
    return norm.encode("utf-8").decode("latin-1")
