"""Did the run deliver the load it planned?

An audit that passes says nothing about a rush whose reserves were never sent: buyers still
connecting when it fired, connections refused, a harness that fell behind. Every stream of the
plan (connections, host messages, comments, likes, reserves, team opens, and the confirms,
cancels and joins that answers call for) counts the events it planned and the ones it sent;
a stream with more than ``max_unsent_share`` of them unsent is a shortfall, and the command
exits non-zero for it unless ``--allow-shortfall`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def assess(
    planned: Mapping[str, int],
    sent: Mapping[str, int],
    max_unsent_share: float,
    starts: Mapping[str, Mapping[str, float]],
) -> dict[str, Any]:
    """The result's ``load`` section (docs/loadtest.md): per stream planned, sent, unsent and
    the unsent share; ``short``: the streams past the limit; ``starts``: when each gated stream
    was planned to start and did start (seconds from t = 0)."""
    streams: dict[str, dict[str, Any]] = {}
    for name in sorted(planned):
        wanted = int(planned[name])
        if wanted <= 0:
            continue
        done = min(int(sent.get(name, 0)), wanted)
        streams[name] = {
            "planned": wanted,
            "sent": done,
            "unsent": wanted - done,
            "unsent_share": round((wanted - done) / wanted, 4),
        }
    # Compared exactly, not rounded: 1 of 101 unsent is under 1%, 2 of 101 is not.
    short = [name for name, s in streams.items() if s["unsent"] > max_unsent_share * s["planned"]]
    notes = [
        f"{name}: {s['unsent']} of {s['planned']} planned never sent ({s['unsent'] / s['planned']:.1%})"
        for name, s in streams.items()
        if name in short
    ]
    for name, start in sorted(starts.items()):
        late = float(start.get("late_s", 0.0))
        if late > 0:
            notes.append(f"{name} started {late:.2f} s after its planned start: its senders were connecting")
    return {
        "max_unsent_share": max_unsent_share,
        "shortfall": bool(short),
        "short": short,
        "allowed": False,
        "streams": streams,
        "starts": {name: dict(start) for name, start in sorted(starts.items())},
        "notes": notes,
    }


def describe(load: Mapping[str, Any]) -> str:
    """One line for the terminal."""
    limit = f"{float(load.get('max_unsent_share', 0)) * 100:g}%"
    if not load.get("shortfall"):
        return f"load: as planned (no stream more than {limit} unsent)"
    streams = load.get("streams", {})
    parts = [f"{n} {streams[n]['unsent']} of {streams[n]['planned']} unsent" for n in load.get("short", [])]
    verdict = "accepted by --allow-shortfall" if load.get("allowed") else "the run did not deliver its load"
    return f"load: SHORTFALL ({', '.join(parts)}; limit {limit}): {verdict}"
