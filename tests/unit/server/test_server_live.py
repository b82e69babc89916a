"""Lot availability from bay readings: freshness, ordering, lot states (injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import DeviceStatus, ParkingBayState
from contracts.site import SiteConfig
from server.live import BayReading, LiveState, ns_to_datetime, summarize_lot

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "parking": [
                {
                    "id": "L1",
                    "name": "One",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "address": "Street 1",
                    "bays": {"prefix": "B", "count": 4},
                    "stale_after_s": 60,
                    "full_below": 1,
                },
                {
                    "id": "L2",
                    "name": "Two",
                    "coords": {"lat": 51.1, "lng": 13.8},
                    "bays": ["x", "y"],
                    "closed": True,
                },
                {
                    "id": "L3",
                    "name": "Three",
                    "coords": {"lat": 51.2, "lng": 13.9},
                    "bays": {"prefix": "C", "count": 10},
                    "full_below": 3,
                },
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


_seq = 0


def reading(status: str, age_s: float, rid: str | None = None) -> BayReading:
    global _seq
    _seq += 1
    return BayReading.of(status, T0 - timedelta(seconds=age_s), rid or f"reading{_seq:06d}")


def test_a_lot_without_readings_has_no_data(live: LiveState) -> None:
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.total, lot.free, lot.occupied, lot.unknown) == (4, 0, 0, 4)
    assert lot.state == "nodata"
    assert lot.observed_at is None and lot.age_s is None and lot.fresh is False
    assert lot.percent_free is None


def test_fresh_readings_count_and_the_lot_is_open(live: LiveState) -> None:
    live.apply_bay("L1", "B001", reading("free", 10))
    live.apply_bay("L1", "B002", reading("occupied", 5))
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.free, lot.occupied, lot.unknown) == (1, 1, 2)
    assert lot.state == "open"
    assert lot.percent_free == 25.0
    assert lot.observed_at == T0 - timedelta(seconds=5)
    assert lot.age_s == 5.0
    assert lot.fresh is True


def test_a_stale_bay_is_never_free(live: LiveState, clock: FakeClock) -> None:
    live.apply_bay("L1", "B001", reading("free", 59.999))
    live.apply_bay("L1", "B002", reading("free", 60))  # exactly stale_after_s: no longer younger
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.free, lot.unknown) == (1, 3)

    clock.advance(0.002)  # now B001 is 60.001 s old too
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.free, lot.occupied, lot.unknown) == (0, 0, 4)
    assert lot.state == "nodata"
    assert lot.fresh is False
    assert lot.percent_free is None
    # The newest observation is still reported, so a display can say "no data since ...".
    assert lot.observed_at == T0 - timedelta(seconds=59.999)
    assert lot.age_s == pytest.approx(60.001)


def test_unknown_and_closed_bay_status_count_as_unknown(live: LiveState) -> None:
    live.apply_bay("L1", "B001", reading("unknown", 1))
    live.apply_bay("L1", "B002", reading("closed", 1))
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.free, lot.occupied, lot.unknown) == (0, 0, 4)
    assert lot.state == "nodata"  # fresh, but nothing says free or occupied
    assert lot.fresh is True  # the lot's sensors are talking


def test_a_reading_slightly_in_the_future_counts_as_age_zero(live: LiveState) -> None:
    live.apply_bay("L1", "B001", reading("free", -30))  # device clock 30 s ahead
    lot = live.lot("L1")
    assert lot is not None
    assert lot.free == 1
    assert lot.age_s == 0.0
    assert lot.fresh is True


def test_a_reading_far_in_the_future_is_refused_and_never_counted(live: LiveState) -> None:
    far = reading("free", -3600)
    assert live.apply_bay("L1", "B001", far) is False
    assert live.counts["future"] == 1
    assert live.bay("L1", "B001") is None
    # Even if one got into a readings map (say, from storage), it is not fresh and not "newest".
    lot = summarize_lot(make_site().parking[0], {"B001": far}, T0)
    assert (lot.free, lot.unknown, lot.state, lot.observed_at) == (0, 4, "nodata", None)


def test_an_older_reading_never_overwrites_a_newer_one(live: LiveState) -> None:
    newer = reading("occupied", 5)
    replayed = reading("free", 50)  # store-and-forward replay arriving late
    assert live.apply_bay("L1", "B001", newer) is True
    assert live.apply_bay("L1", "B001", replayed) is False
    assert live.bay("L1", "B001") == newer
    assert live.apply_bay("L1", "B001", newer) is False  # a QoS 1 redelivery changes nothing
    assert live.counts["superseded"] == 2
    lot = live.lot("L1")
    assert lot is not None
    assert (lot.free, lot.occupied) == (0, 1)
    assert live.apply_bay("L1", "B001", reading("free", 1)) is True
    assert live.bay("L1", "B001").status == "free"  # type: ignore[union-attr]


def test_equal_timestamps_the_later_message_wins(clock: FakeClock) -> None:
    """Bugcase 08: a whole-second clock stamps a refresh and a change alike; the later message is the truth,
    whatever the reading ids (the old rule compared them)."""
    live = LiveState(make_site(), clock)
    at = T0 - timedelta(seconds=10)
    older = ParkingBayState(
        device_id="d1", observed_at=at, reading_id="f" * 32, lot_id="L1", bay_id="B001", status="free"
    )
    later = older.model_copy(update={"reading_id": "0" * 31 + "1", "status": "occupied"})
    assert live.apply_message(older, T0) and live.apply_message(later, T0)
    assert live.bay("L1", "B001").status == "occupied"  # type: ignore[union-attr]
    # A replayed copy of the older one does not bring it back.
    assert not live.apply_message(older, T0)
    # Two rows from history (no arrival order): the one held stays.
    assert not live.apply_bay("L1", "B001", BayReading.of("free", at, "c" * 32))
    assert live.bay("L1", "B001").status == "occupied"  # type: ignore[union-attr]


def test_sequence_orders_a_device_whose_clock_stepped_back(clock: FakeClock) -> None:
    """NTP steps a Pi's clock back an hour after boot: its later readings carry earlier times.
    Within one epoch, seq decides; wall time only orders readings of different sequences."""
    live = LiveState(make_site(), clock)
    before = ParkingBayState(
        device_id="d1", observed_at=T0, reading_id="r" * 10, lot_id="L1", bay_id="B001", status="occupied",
        epoch="boot1", seq=41,
    )  # fmt: skip
    after = before.model_copy(
        update={"observed_at": T0 - timedelta(hours=1), "reading_id": "s" * 10, "status": "free", "seq": 42}
    )
    assert live.apply_message(before, T0) and live.apply_message(after, T0 + timedelta(seconds=1))
    assert live.bay("L1", "B001").status == "free"  # type: ignore[union-attr]
    # A redelivered older reading of the same sequence never wins, whatever its time.
    stale = before.model_copy(update={"reading_id": "t" * 10, "seq": 40, "observed_at": T0 + timedelta(seconds=5)})
    assert not live.apply_message(stale, T0 + timedelta(seconds=2))
    lot = live.lot("L1", T0 + timedelta(seconds=3))
    assert lot is not None and (lot.free, lot.occupied) == (1, 0)


def test_a_device_clock_far_behind_still_counts_as_heard(clock: FakeClock) -> None:
    """Bugcase 06: readings every 2 s stamped 11 minutes in the past are fresh; the offset is reported."""
    live = LiveState(make_site(), clock)
    for i in range(3):
        now = T0 + timedelta(seconds=2 * i)
        m = ParkingBayState(
            device_id="lagging", observed_at=now - timedelta(minutes=11), reading_id=f"lag{i:07d}",
            lot_id="L1", bay_id="B001", status="occupied",
        )  # fmt: skip
        live.apply_message(m, now)
    lot = live.lot("L1", T0 + timedelta(seconds=5))
    assert lot is not None
    assert (lot.occupied, lot.state != "nodata", lot.fresh) == (1, True, True)
    assert lot.age_s is not None and lot.age_s < 10
    assert live.clock_offsets() == {"lagging": pytest.approx(660.0)}


def test_a_replayed_old_reading_is_not_made_fresh(clock: FakeClock) -> None:
    """A store-and-forward replay of an hour-old reading arrives now, but the device's clock is right:
    its live heartbeat pins the offset near 0, so the replay stays an hour old."""
    live = LiveState(make_site(), clock)
    live.apply_device_status(DeviceStatus(device_id="d1", observed_at=T0, reading_id="hb00000001", state="online"), T0)
    old = ParkingBayState(
        device_id="d1", observed_at=T0 - timedelta(hours=1), reading_id="old0000001", lot_id="L1", bay_id="B001",
        status="free",
    )  # fmt: skip
    live.apply_message(old, T0 + timedelta(seconds=1))
    lot = live.lot("L1", T0 + timedelta(seconds=2))
    assert lot is not None and lot.free == 0 and lot.unknown == lot.total
    assert live.clock_offsets()["d1"] == pytest.approx(0.0)


def test_a_closed_lot_is_closed_whatever_its_bays_say(live: LiveState) -> None:
    live.apply_bay("L2", "x", reading("free", 1))
    lot = live.lot("L2")
    assert lot is not None
    assert lot.state == "closed"
    assert (lot.free, lot.unknown) == (1, 1)  # counts stay what the sensors say


@pytest.mark.parametrize(("free", "state"), [(0, "full"), (2, "full"), (3, "open"), (5, "open")])
def test_full_below_threshold(live: LiveState, free: int, state: str) -> None:
    for n in range(1, 11):
        live.apply_bay("L3", f"C{n:03d}", reading("free" if n <= free else "occupied", 1))
    lot = live.lot("L3")
    assert lot is not None
    assert (lot.free, lot.occupied, lot.state) == (free, 10 - free, state)


def test_readings_for_unknown_lots_or_bays_are_counted_and_dropped(live: LiveState) -> None:
    assert live.apply_bay("nope", "B001", reading("free", 1)) is False
    assert live.apply_bay("L1", "B999", reading("free", 1)) is False
    assert live.counts["unknown_bay"] == 2
    assert live.bay_count() == 0
    assert live.lot("nope") is None


def test_lots_come_in_configuration_order_judged_at_one_instant(live: LiveState) -> None:
    assert [lot.id for lot in live.lots()] == ["L1", "L2", "L3"]


def test_messages_apply_like_readings(live: LiveState) -> None:
    msg = ParkingBayState(
        device_id="d1", observed_at=T0, reading_id="r0000000001", lot_id="L1", bay_id="B003", status="occupied"
    )
    assert live.apply_message(msg) is True
    assert live.bay("L1", "B003") == BayReading.of("occupied", T0, "r0000000001")


def test_device_status_is_ordered_by_arrival_not_observed_at(live: LiveState, clock: FakeClock) -> None:
    online = DeviceStatus(device_id="d1", observed_at=T0, reading_id="s0000000001", state="online")
    will = DeviceStatus(  # a last will carries its (older) connect time
        device_id="d1", observed_at=T0 - timedelta(hours=1), reading_id="s0000000002", state="offline"
    )
    live.apply_device_status(online)
    clock.advance(5)
    live.apply_device_status(will)
    record = live.devices()["d1"]
    assert record.status.state == "offline"
    assert record.received_at == T0 + timedelta(seconds=5)


def test_nanoseconds_convert_to_utc_microseconds() -> None:
    assert ns_to_datetime(1_700_000_000_123_456_789) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)


def test_the_cached_tally_always_equals_a_fresh_count(live: LiveState, clock: FakeClock) -> None:
    """Random readings and clock moves (including steps back): the cache never shows stale counts."""
    import random

    rng = random.Random(7)
    site_lot = make_site().parking[0]
    bays = site_lot.bay_ids()
    for step in range(3000):
        action = rng.random()
        if action < 0.4:
            age = rng.choice([rng.uniform(-400, 120), 59.9, 60.0, 60.1])
            live.apply_bay("L1", rng.choice(bays), BayReading.of(
                rng.choice(["free", "occupied", "unknown"]), clock.now - timedelta(seconds=age), f"r{step:08d}"
            ))  # fmt: skip
        elif action < 0.95:
            clock.advance(rng.choice([0.001, 0.5, 7.0, 30.0]))
        else:
            clock.advance(-rng.uniform(0, 30))  # an NTP step back
        readings = {b: r for b in bays if (r := live.bay("L1", b)) is not None}
        lot = live.lot("L1")
        assert lot is not None
        fresh_count = summarize_lot(site_lot, readings, clock.now)
        assert lot.model_copy(update={"trend": fresh_count.trend}) == fresh_count, f"step {step}"
