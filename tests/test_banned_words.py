"""The banned-words matcher (an Aho-Corasick automaton) finds exactly what the simple rule says:
normalise the text and every word (NFKC, case-folded, letters and digits only), then a word is
found when it is a substring; a Latin word of up to four letters only when it stands alone (no
Latin letter right before or after it in the NFKC, case-folded text)."""

from __future__ import annotations

import random
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.words import BannedWords, normalise


def plain_normalise(text: str) -> str:
    """The normalisation as gateway/words.py first wrote it, character by character."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] in "LN")


def reference(words: list[str], text: str) -> bool:
    """The rule, one word at a time, with plain substring search."""
    return by_rule(normalised(words), text)


def normalised(words: list[str]) -> list[str]:
    return [n for n in map(plain_normalise, words) if n]


def by_rule(norms: list[str], text: str) -> bool:
    norm_text = plain_normalise(text)
    folded = unicodedata.normalize("NFKC", text).casefold()
    for norm in norms:
        if not (norm.isascii() and norm.isalpha() and len(norm) <= 4):
            if norm in norm_text:
                return True
            continue
        at = folded.find(norm)
        while at >= 0:
            before = folded[at - 1] if at > 0 else ""
            after = folded[at + len(norm)] if at + len(norm) < len(folded) else ""
            if not ("a" <= before <= "z") and not ("a" <= after <= "z"):
                return True
            at = folded.find(norm, at + 1)
    return False


LATIN = "abcdefghijklmnopqrstuvwxyz"


def random_word(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:  # Chinese, 2 to 4 characters
        return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4)))
    if kind < 0.8:  # English, 5 to 10 letters
        return "".join(rng.choice(LATIN) for _ in range(rng.randint(5, 10)))
    if kind < 0.9:  # short English: must stand alone
        return "".join(rng.choice(LATIN) for _ in range(rng.randint(2, 4)))
    return " ".join("".join(rng.choice(LATIN) for _ in range(4)) for _ in range(2))  # a phrase


def disguise(rng: random.Random, word: str) -> str:
    """The word as a commenter might write it: upper case, full width, spaces and dots inside."""
    out = []
    for ch in word:
        if rng.random() < 0.3:
            ch = ch.upper()
        if rng.random() < 0.2 and "a" <= ch.lower() <= "z":
            ch = chr(ord(ch) - 0x21 + 0xFF01)  # full-width form
        out.append(ch)
        if rng.random() < 0.2:
            out.append(rng.choice(" ·.-!"))
    return "".join(out)


def test_a_list_of_100000_words_finds_every_word_and_misses_the_rest() -> None:
    rng = random.Random(11)
    unique: set[str] = set()
    while len(unique) < 100_000:
        unique.add(random_word(rng))
    words = sorted(unique)
    matcher = BannedWords(words)
    norms = normalised(words)
    short = [w for w in words if len(w) <= 4 and w.isascii()]
    anywhere = sorted(unique - set(short))
    # every sampled word is found, disguised, inside ordinary chat
    for word in rng.sample(anywhere, 2000):
        text = f"主播好 {disguise(rng, word)} 谢谢 nice"
        assert matcher.found_in(text), text
    for word in rng.sample(short, 500):
        assert matcher.found_in(f"so {word.upper()}!"), word
    # glued to other Latin letters, a short word is no word (unless the rule finds another)
    for word in rng.sample(short, 50):
        assert matcher.found_in(f"xq{word}qx") == by_rule(norms, f"xq{word}qx"), word
    # comments made of characters no word has are never refused
    for _ in range(500):
        text = "".join(rng.choice("0123456789 !?。，、😀ぁあいうえおかき") for _ in range(60))  # noqa: RUF001
        assert not matcher.found_in(text), text
    # and on mixed comments, the matcher says what the rule says
    samples = []
    for _ in range(40):
        text = "".join(rng.choice(["好看", "green", " tea ", "!", random_word(rng)[:3]]) for _ in range(8))
        samples.append((text, matcher.found_in(text)))
    assert [found for _, found in samples] == [by_rule(norms, text) for text, _ in samples]
    assert any(found for _, found in samples) and not all(found for _, found in samples)


def test_the_existing_rules_still_hold() -> None:
    words = BannedWords(["代购", "Scam", "buy followers", "  ", "ass", "#!"])
    assert words.found_in("找代·购") and words.found_in("SCAM!!") and words.found_in("buy  FOLLOWERS")
    assert words.found_in("ｓｃａｍ")  # noqa: RUF001 - full-width on purpose
    assert words.found_in("you ass") and words.found_in("ass") and words.found_in("2ass")
    assert not words.found_in("first class") and not words.found_in("scampi")
    assert not words.found_in("代表 good") and not BannedWords([]) and not BannedWords(["  ", "!?"])
    assert bool(BannedWords(["ok"])) and bool(BannedWords(["代购"]))
    assert not words.found_in("\ud800") and words.found_in("\ud800 scam")  # lone surrogates: no crash


# words and texts from a small alphabet (so they meet often) of Latin, Chinese, full-width,
# digits, spaces, punctuation and letters that fold (ß, Σ, the fi ligature)
PIECES = "abcsAB代购好ｓＡ1２ ·.-!ßΣσﬁ"  # noqa: RUF001 - on purpose
word_lists = st.lists(st.text(alphabet=PIECES, min_size=1, max_size=6), max_size=8)


@settings(max_examples=400, deadline=None)
@given(words=word_lists, text=st.text(alphabet=PIECES, max_size=30))
def test_the_automaton_agrees_with_the_rule_on_text_from_the_words_alphabet(
    words: list[str], text: str
) -> None:
    assert BannedWords(words).found_in(text) == reference(words, text)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=60))
def test_the_normalisation_is_the_plain_one(text: str) -> None:
    assert normalise(text) == plain_normalise(text)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.text(max_size=6), max_size=6), text=st.text(max_size=40))
def test_the_automaton_agrees_with_the_rule_on_any_text(words: list[str], text: str) -> None:
    assert BannedWords(words).found_in(text) == reference(words, text)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(), words=st.lists(st.text(alphabet=PIECES, min_size=1, max_size=6), min_size=1, max_size=6)
)
def test_a_word_put_in_a_text_is_found_as_the_rule_finds_it(data: st.DataObject, words: list[str]) -> None:
    word = data.draw(st.sampled_from(words))
    left = data.draw(st.text(alphabet=PIECES, max_size=8))
    right = data.draw(st.text(alphabet=PIECES, max_size=8))
    text = left + word + right
    found = BannedWords(words).found_in(text)
    assert found == reference(words, text)
    if normalise(word) and not normalise(word).isascii():
        assert found  # a word with a non-Latin letter is found wherever it is
