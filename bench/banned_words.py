"""What a big banned-words list costs: building the matcher (``gateway.words.BannedWords``, at
start-up) and checking one comment, with ``--words`` random words (Chinese, English, short
English that must stand alone, two-word phrases).

    /work/venv/bin/python bench/banned_words.py                              # this tree
    PYTHONPATH=/work/pristine /work/venv/bin/python bench/banned_words.py    # another tree

Comments are about 220 characters of mixed Chinese and English chat that contain no banned word (the
common case, and the dearest: the whole text is scanned). Times are CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from gateway.words import BannedWords

LATIN = "abcdefghijklmnopqrstuvwxyz"


def word(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(2, 4)))
    if kind < 0.8:
        return "".join(rng.choice(LATIN) for _ in range(rng.randint(5, 10)))
    if kind < 0.9:
        return "".join(rng.choice(LATIN) for _ in range(rng.randint(2, 4)))
    return " ".join("".join(rng.choice(LATIN) for _ in range(4)) for _ in range(2))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--comments", type=int, default=2000)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    words = [word(rng) for _ in range(args.words)]
    started = time.process_time()
    matcher = BannedWords(words)
    build_s = time.process_time() - started
    # no Latin word of four letters or fewer: those are matched whole, and a random list of
    # 100,000 has most of them ("it", "the"), which would refuse every comment
    base = "这个颜色真好看! Beautiful colours, 主播 please display another green teapot 谢谢 0123 "
    comments = [f"{rng.randint(0, 99_999)} {base * 3}" for _ in range(args.comments)]
    started = time.process_time()
    found = sum(matcher.found_in(c) for c in comments)
    per_comment_s = (time.process_time() - started) / len(comments)
    comment_ms = per_comment_s * 1e3
    print(f"{args.words} words: build {build_s:.2f} s CPU; a comment {comment_ms:.3f} ms CPU")
    print(f"({1 / per_comment_s:,.0f} comments/s per core; {found} of {len(comments)} comments refused)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
