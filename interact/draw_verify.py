"""A lucky draw's winners, recomputed from what the draw publishes (docs/draws.md): pure, with
no Redis and no server, so anyone can check a draw (``live draw verify``).

At the open the draw publishes ``commitment`` = SHA-256 of the seed's hex text; at the close it
reveals ``seed`` and lists the ``eligible`` users. The winners are then a function of the two:
sort the eligible users by their UTF-8 bytes; for k = 0 .. n - 1 (n = min(winners, eligible)),
j = k + int(SHA-256(f"{seed}:{k}"), 16) mod (eligible - k), swap pool[k] and pool[j]; the
winners are pool[:n] (a partial Fisher-Yates shuffle). interact/lua/draw_close.lua computes the
same in Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

#: The rules an entrant may be excluded by (the draw's ``excluded``: user -> rule).
RULES = ("banned", "muted", "address_limit", "not_present", "watch_time")


def commitment_of(seed_hex: str) -> str:
    """The commitment a draw publishes at its open: the SHA-256 (hex) of the seed's hex text."""
    return hashlib.sha256(seed_hex.encode("utf-8")).hexdigest()


def utf8_sorted(users: Sequence[str]) -> list[str]:
    """The users in the order of their UTF-8 bytes (not of Python's code points: the same for
    most text, not for characters beyond the BMP next to U+E000..U+FFFF)."""
    return sorted(users, key=lambda user: user.encode("utf-8"))


def draw_winners(seed_hex: str, eligible: Sequence[str], winners: int) -> list[str]:
    """The winners of a draw with this seed and these eligible users (any order)."""
    pool = utf8_sorted(eligible)
    n = min(max(winners, 0), len(pool))
    for k in range(n):
        digest = hashlib.sha256(f"{seed_hex}:{k}".encode()).hexdigest()
        j = k + int(digest, 16) % (len(pool) - k)
        pool[k], pool[j] = pool[j], pool[k]
    return pool[:n]


def problems(draw: Mapping[str, Any], commitment: str | None = None) -> list[str]:
    """What is wrong with a closed draw's published result (an empty list: it verifies).
    ``commitment``: the one published at the open, when the caller kept it (else the draw's)."""
    out: list[str] = []
    if draw.get("state") != "closed":
        return [f"the draw is {draw.get('state')!r}, not closed: nothing to verify yet"]
    seed, published = draw.get("seed"), draw.get("commitment")
    if not isinstance(seed, str) or not isinstance(published, str):
        return ["the draw has no seed or no commitment"]
    if commitment is not None and commitment != published:
        out.append("the draw's commitment is not the one published at its open")
    if commitment_of(seed) != published:
        out.append("the seed does not match the commitment: SHA-256(seed) != commitment")
    eligible = draw.get("eligible")
    winner_ids = draw.get("winner_ids")
    count = draw.get("winners")
    if not isinstance(eligible, list) or not all(isinstance(u, str) for u in eligible):
        return [*out, "the draw has no eligible list"]
    if not isinstance(winner_ids, list) or not isinstance(count, int):
        return [*out, "the draw has no winner_ids or no winners count"]
    if eligible != utf8_sorted(eligible) or len(set(eligible)) != len(eligible):
        out.append("the eligible list is not sorted by UTF-8 bytes without repeats")
    entries, excluded = draw.get("entries"), draw.get("excluded")
    if isinstance(entries, list) and isinstance(excluded, dict):
        if set(eligible) != set(entries) - set(excluded):
            out.append("the eligible users are not the entries less the excluded ones")
        strange = sorted({str(r) for r in excluded.values()} - set(RULES))
        if strange:
            out.append(f"excluded by unknown rules: {', '.join(strange)}")
    counts, entrants = draw.get("excluded_counts"), draw.get("entrants")
    if isinstance(counts, dict):  # the verification read: counts per rule, not who
        strange = sorted(set(map(str, counts)) - set(RULES))
        if strange:
            out.append(f"excluded by unknown rules: {', '.join(strange)}")
        numbers = list(counts.values())
        if not all(type(n) is int and n >= 0 for n in numbers):
            out.append("the excluded counts are not counts")
        elif type(entrants) is int and len(eligible) + sum(numbers) != entrants:
            out.append("the eligible users and the excluded counts do not add up to the entrants")
    expected = draw_winners(seed, eligible, count)
    if winner_ids != expected:
        out.append(f"the winners are not the recomputation: announced {winner_ids}, recomputed {expected}")
    return out
