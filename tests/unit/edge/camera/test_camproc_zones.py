"""Zones: occupancy clamp, daily reset across DST, aligned intervals, zero intervals, pauses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.camera.zones import ZoneCounter, interval_end, next_reset

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True)
class Ev:
    line: str
    direction: str


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def counter(**kw: object) -> ZoneCounter:
    args: dict = {"device_id": "edge-1", "interval_s": 60, "reset_at": None, **kw}
    return ZoneCounter({"north": "plaza", "south": "plaza", "gate": "market"}, **args)


def test_occupancy_is_clamped_at_zero() -> None:
    z = counter()
    z.resume(utc(2024, 5, 1, 10, 0, 0))
    z.update(utc(2024, 5, 1, 10, 0, 1), [Ev("north", "out"), Ev("south", "out"), Ev("north", "in")])
    assert z.occupancy("plaza") == 1  # 0 -> 0 -> 0 -> 1, never negative
    z.update(utc(2024, 5, 1, 10, 0, 2), [Ev("gate", "in"), Ev("gate", "in"), Ev("gate", "out")])
    assert (z.occupancy("plaza"), z.occupancy("market")) == (1, 1)


def test_intervals_are_aligned_and_zero_intervals_are_published() -> None:
    z = counter()
    z.resume(utc(2024, 5, 1, 10, 0, 17))
    assert z.update(utc(2024, 5, 1, 10, 0, 30), [Ev("north", "in"), Ev("gate", "out")]) == []
    first = z.update(utc(2024, 5, 1, 10, 1, 0, 200))
    assert {m.zone_id for m in first} == {"plaza", "market"}
    plaza = next(m for m in first if m.zone_id == "plaza")
    assert (plaza.interval_start, plaza.observed_at) == (utc(2024, 5, 1, 10, 0, 17), utc(2024, 5, 1, 10, 1))
    assert [(c.line_id, c.towards, c.away) for c in plaza.lines] == [("north", 1, 0), ("south", 0, 0)]
    assert plaza.occupancy == 1 and plaza.device_id == "edge-1"
    # Nobody crosses for the next two minutes: both intervals are still published, with zeros.
    second = z.update(utc(2024, 5, 1, 10, 2, 0, 5))
    third = z.update(utc(2024, 5, 1, 10, 3, 1))
    for msgs, start in ((second, utc(2024, 5, 1, 10, 1)), (third, utc(2024, 5, 1, 10, 2))):
        assert len(msgs) == 2
        for m in msgs:
            assert (m.interval_start, m.observed_at) == (start, start + timedelta(minutes=1))
            assert m.towards == 0 and m.away == 0
    ids = [m.reading_id for m in first + second + third]
    assert len(set(ids)) == len(ids)


def test_interval_end_alignment() -> None:
    assert interval_end(utc(2024, 5, 1, 10, 7, 3), 300) == utc(2024, 5, 1, 10, 10)
    assert interval_end(utc(2024, 5, 1, 10, 10), 300) == utc(2024, 5, 1, 10, 15)
    assert interval_end(utc(2024, 5, 1, 23, 59, 59), 3600) == utc(2024, 5, 2, 0, 0)


def test_pause_closes_a_partial_interval_and_resume_opens_one() -> None:
    z = counter()
    z.resume(utc(2024, 5, 1, 10, 0, 0))
    z.update(utc(2024, 5, 1, 10, 0, 10), [Ev("north", "in")])
    closed = z.pause(utc(2024, 5, 1, 10, 0, 20))  # camera froze / disconnected
    assert [(m.interval_start, m.observed_at) for m in closed] == [
        (utc(2024, 5, 1, 10, 0), utc(2024, 5, 1, 10, 0, 20))
    ] * 2
    assert z.update(utc(2024, 5, 1, 10, 3, 0)) == []  # nothing covers time not watched
    z.update(utc(2024, 5, 1, 10, 3, 1), [Ev("north", "in")])  # while not watching: occupancy only
    assert z.unwatched_events == 1 and z.occupancy("plaza") == 2
    z.resume(utc(2024, 5, 1, 10, 3, 30))
    msgs = z.update(utc(2024, 5, 1, 10, 4, 0))
    assert {(m.interval_start, m.observed_at) for m in msgs} == {(utc(2024, 5, 1, 10, 3, 30), utc(2024, 5, 1, 10, 4))}
    assert sum(m.towards for m in msgs) == 0
    assert z.pause(utc(2024, 5, 1, 10, 4, 0)) == []  # zero-length: nothing to publish


def test_unknown_line_is_counted_not_fatal() -> None:
    z = counter()
    z.resume(utc(2024, 5, 1, 10, 0, 0))
    z.update(utc(2024, 5, 1, 10, 0, 1), [Ev("nope", "in"), Ev("north", "in")])
    assert z.unknown_line_events == 1 and z.occupancy("plaza") == 1


def test_clock_stepping_back_never_produces_an_invalid_interval() -> None:
    z = counter()
    z.resume(utc(2024, 5, 1, 10, 0, 30))
    assert z.update(utc(2024, 5, 1, 10, 0, 10)) == []  # NTP stepped the clock back 20 s
    msgs = z.update(utc(2024, 5, 1, 10, 1, 0))
    assert all(m.interval_start == utc(2024, 5, 1, 10, 0, 10) for m in msgs)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Spring forward (Sunday 31 March 2024, 02:00 CET -> 03:00 CEST): 04:00 CEST is 02:00 UTC.
        (utc(2024, 3, 30, 12, 0), utc(2024, 3, 31, 2, 0)),
        (utc(2024, 3, 30, 2, 59), utc(2024, 3, 30, 3, 0)),  # the day before: 04:00 CET is 03:00 UTC
        # Fall back (Sunday 27 October 2024): 04:00 CET is 03:00 UTC.
        (utc(2024, 10, 26, 12, 0), utc(2024, 10, 27, 3, 0)),
        (utc(2024, 10, 27, 3, 0), utc(2024, 10, 28, 3, 0)),  # strictly after now
    ],
)
def test_next_reset_follows_local_time_across_dst(now: datetime, expected: datetime) -> None:
    assert next_reset(now, time(4, 0), BERLIN) == expected


def test_nonexistent_and_repeated_local_times_reset_once_per_day() -> None:
    # 02:30 does not exist on the spring-forward day and exists twice on the fall-back day.
    spring = next_reset(utc(2024, 3, 30, 12), time(2, 30), BERLIN)
    assert spring == utc(2024, 3, 31, 1, 30)  # taken with the pre-transition offset: 03:30 CEST
    assert next_reset(spring, time(2, 30), BERLIN) == utc(2024, 4, 1, 0, 30)
    autumn = next_reset(utc(2024, 10, 26, 12), time(2, 30), BERLIN)
    assert autumn == utc(2024, 10, 27, 0, 30)  # the first 02:30 (CEST)
    assert next_reset(autumn, time(2, 30), BERLIN) == utc(2024, 10, 28, 1, 30)


def test_daily_reset_across_the_spring_forward_day() -> None:
    z = counter(reset_at=time(4, 0), timezone="Europe/Berlin", interval_s=3600)
    t = utc(2024, 3, 30, 10, 0)
    z.resume(t)
    resets_seen = []
    # Three days hour by hour; two people enter at every hour, nobody leaves.
    while t < utc(2024, 4, 2, 10, 0):
        t += timedelta(hours=1)
        before = z.resets
        msgs = z.update(t, [Ev("north", "in"), Ev("gate", "in")])
        if z.resets != before:
            resets_seen.append(t)
            assert z.occupancy("plaza") == 1  # reset to 0, then this hour's person
        assert all(m.occupancy is not None for m in msgs)
    # 04:00 local each day: CET on 30 March (03:00 UTC), CEST afterwards (02:00 UTC).
    assert resets_seen == [utc(2024, 3, 31, 2), utc(2024, 4, 1, 2), utc(2024, 4, 2, 2)]


def test_reset_before_the_first_reset_time_does_not_fire_at_start() -> None:
    z = counter(reset_at=time(4, 0), timezone="UTC")
    z.resume(utc(2024, 5, 1, 5, 0))
    z.update(utc(2024, 5, 1, 5, 0, 1), [Ev("north", "in")])
    z.update(utc(2024, 5, 1, 23, 0))
    assert z.occupancy("plaza") == 1 and z.resets == 0
    z.update(utc(2024, 5, 2, 4, 0))
    assert z.occupancy("plaza") == 0 and z.resets == 1


def test_invalid_setup_is_rejected() -> None:
    with pytest.raises(ValueError):
        ZoneCounter({}, device_id="d")
    with pytest.raises(ValueError):
        ZoneCounter({"a": "z"}, device_id="d", interval_s=7)
