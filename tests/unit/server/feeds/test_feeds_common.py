"""The one availability rule every feed follows, and the time formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from server import models
from server.feeds.common import Availability, availability, content_version, iso_naive_utc, iso_z


def test_the_fixture_lots_are_in_the_states_the_tests_assume(lots: dict[str, models.ParkingLot]) -> None:
    assert {i: (lot.state, lot.free, lot.occupied, lot.unknown) for i, lot in lots.items()} == {
        "open": ("open", 1, 1, 2),
        "full": ("full", 1, 2, 0),
        "closed": ("closed", 1, 0, 0),
        "stale": ("nodata", 0, 0, 2),
        "never": ("nodata", 0, 0, 1),
        "my:lot": ("open", 1, 0, 0),
    }
    assert lots["never"].observed_at is None


def test_availability_publishes_counts_only_from_fresh_readings(lots: dict[str, models.ParkingLot]) -> None:
    # Two of four bays unknown: counts, but no share (it would count unknown bays as something).
    assert availability(lots["open"]) == Availability("live", 1, 1, None)
    # Full with one free bay below the reserve: still the true count; every bay known, so a share.
    assert availability(lots["full"]) == Availability("live", 1, 2, 0.6667)
    # Closed: 0 free although its sensor says free.
    assert availability(lots["closed"]) == Availability("closed", 0, None, None)
    # No fresh reading: no count at all, not 0.
    assert availability(lots["stale"]) == Availability("nodata", None, None, None)
    assert availability(lots["never"]) == Availability("nodata", None, None, None)


def test_times_are_utc_whole_seconds() -> None:
    at = datetime(2026, 5, 4, 14, 0, 1, 987000, tzinfo=timezone(timedelta(hours=2)))
    assert iso_z(at) == "2026-05-04T12:00:01Z"
    assert iso_naive_utc(at) == "2026-05-04T12:00:01"
    assert iso_z(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


def test_content_versions_follow_the_content() -> None:
    assert content_version("a", 1) == content_version("a", 1)
    assert content_version("a", 1) != content_version("a", 2)
    assert content_version("a", 1).isdigit()
