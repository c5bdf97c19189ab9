"""live-loadtest schedules count their events exactly: none at or after the stop time, none
before it missing, whatever the floats (issue 11, item 20: `ceil((stop - start) * rate)` once
scheduled a 51st event exactly at the stop of a 50-event schedule)."""

from __future__ import annotations

import math
import time

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from loadtest.schedule import Schedule, paced

#: Brute-force counting below walks every event, so schedules stay this small.
MOST_EVENTS = 20_000


def due_before(start: float, rate: float, stop: float, count: int) -> int:
    """The number of k < count with start + k / rate < stop, by walking k (the definition)."""
    n = 0
    for k in range(count):
        if not start + k / rate < stop:
            # The due times only grow, so no later k can be before stop either.
            assert all(not start + j / rate < stop for j in range(k, min(count, k + 50)))
            break
        n += 1
    return n


@settings(max_examples=400, deadline=None)
@given(
    start=st.floats(min_value=0.0, max_value=1e7, allow_nan=False),
    span=st.floats(min_value=-10.0, max_value=1e4, allow_nan=False),
    rate=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
    count=st.integers(min_value=0, max_value=10**9),
)
@example(start=5000.3, span=0.05, rate=1000.0, count=10**9)  # the CI failure: old count 51
@example(start=1.1, span=0.05, rate=1000.0, count=10**9)
@example(start=98765.4321, span=0.05, rate=1000.0, count=10**9)
@example(start=0.0, span=1.0, rate=3.0, count=10**9)
@example(start=10.0, span=0.0, rate=5.0, count=10**9)
def test_a_schedule_counts_exactly_the_events_due_before_its_stop(
    start: float, span: float, rate: float, count: int
) -> None:
    stop = start + span
    assume(span * rate <= MOST_EVENTS)
    schedule = Schedule(start, rate, count, stop)
    n = schedule.until(stop)
    assert n == due_before(start, rate, stop, min(count, MOST_EVENTS + 10))
    if n:
        assert start <= schedule.due(n - 1) < stop  # the last event is strictly before stop
    if n < count:
        assert schedule.due(n) >= stop  # and the next one is not


def test_the_count_is_capped_by_the_schedules_own_count() -> None:
    assert Schedule(0.0, 1000.0, 7, 100.0).until(100.0) == 7
    assert Schedule(0.0, 1000.0, 0, 100.0).until(100.0) == 0
    assert Schedule(5.0, 1000.0, 10, 100.0).until(5.0) == 0
    assert Schedule(5.0, 1000.0, 10, 100.0).until(4.0) == 0


def _starts_the_old_formula_got_wrong() -> list[float]:
    """Start times in the past (so every event is overdue and paced() never sleeps) at which
    ``ceil((stop - start) * rate)`` said 51 for a 50-event schedule. ``stop - start`` is 0.05
    rounded to the grid of start's binade, so one start per binade is enough to try."""
    now = time.monotonic()
    candidates = [1.1 * 2**e for e in range(-2, 40)] + [now - 1]
    found = [s for s in candidates if s < now - 1 and math.ceil(((s + 0.05) - s) * 1000.0) == 51]
    assert found, "no start breaks the old formula: the test would prove nothing"
    return found[:5]


async def test_paced_never_yields_an_event_at_or_after_its_stop() -> None:
    for start in _starts_the_old_formula_got_wrong():
        schedule = Schedule(start, rate=1000.0, count=10**9, stop=start + 0.05)
        for workers in (1, 3):
            seen = [item for w in range(workers) async for item in paced(schedule, w, workers)]
            assert sorted(i for i, _ in seen) == list(range(50))
            assert all(start <= intended < schedule.stop for _, intended in seen)


def test_the_old_formula_really_was_wrong_for_these_starts() -> None:
    # The examples above are the ones that broke: keep them honest.
    assert math.ceil(((5000.3 + 0.05) - 5000.3) * 1000.0) == 51
    assert due_before(5000.3, 1000.0, 5000.3 + 0.05, 100) == 50
