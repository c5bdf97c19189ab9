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


def normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


class BannedWords:
    def __init__(self, words: Iterable[str]) -> None:
        anywhere, standalone = [], []
        for word in words:
            norm = normalise(word)
            if not norm:
                continue
            if norm.isascii() and norm.isalpha() and len(norm) <= 4:
                standalone.append(re.escape(norm))
            else:
                anywhere.append(re.escape(norm))
        self._anywhere = re.compile("|".join(anywhere)) if anywhere else None
        self._standalone = (
            re.compile(r"(?<![a-z])(?:" + "|".join(standalone) + r")(?![a-z])") if standalone else None
        )

    def __bool__(self) -> bool:
        return self._anywhere is not None or self._standalone is not None

    def found_in(self, text: str) -> bool:
        if self._anywhere is not None and self._anywhere.search(normalise(text)):
            return True
        if self._standalone is not None:
            folded = unicodedata.normalize("NFKC", text).casefold()
            return self._standalone.search(folded) is not None
        return False
