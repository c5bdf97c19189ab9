"""live/gcfreeze.py: when the heap is frozen after a burst of connections, and unfrozen,
collected and frozen again after as many have gone."""

from __future__ import annotations

import gc

import pytest

from live.gcfreeze import GcFreezer


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    done: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: done.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: done.append("unfreeze"))
    monkeypatch.setattr(gc, "collect", lambda generation=2: done.append(f"collect{generation}") or 0)
    return done


def test_a_burst_is_frozen_once_quiet_and_a_small_one_is_not(calls: list[str]) -> None:
    freezer = GcFreezer(lambda: 0, after=100, quiet_s=1.0)
    state = [0.0, 0.0]
    freezer.step(0.5, 60, state)
    freezer.step(0.7, 130, state)  # 130 new, still arriving
    freezer.step(1.5, 130, state)  # quiet for 0.8 s only
    assert calls == []
    freezer.step(1.8, 130, state)
    assert calls == ["collect1", "freeze"] and freezer.freezes == 1
    freezer.step(2.0, 180, state)  # 50 more, quiet: fewer than `after`
    freezer.step(3.5, 180, state)
    assert calls == ["collect1", "freeze"]


def test_after_as_many_have_gone_it_unfreezes_collects_and_freezes(calls: list[str]) -> None:
    freezer = GcFreezer(lambda: 0, after=100, quiet_s=1.0)
    state = [0.0, 0.0]
    freezer.step(0.1, 300, state)
    freezer.step(1.2, 300, state)
    calls.clear()
    freezer.step(2.0, 250, state)
    freezer.step(2.5, 190, state)  # 110 gone
    freezer.step(3.0, 190, state)  # not quiet for a second yet
    assert calls == []
    freezer.step(3.6, 190, state)
    assert calls == ["unfreeze", "collect2", "freeze"] and freezer.refreezes == 1
    freezer.step(5.0, 190, state)  # nothing new since
    assert calls == ["unfreeze", "collect2", "freeze"]
