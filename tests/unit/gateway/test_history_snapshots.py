"""Lot and locker snapshots: each bay's last state summed per lot at every minute of device time, and
locker deposits/pickups from state transitions (gateway/snapshots.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from contracts import LockerCompartmentState, ParkingBayState, new_reading_id
from contracts import history as h
from contracts.site import SiteConfig
from contracts.storage import StoredPoint, to_ns
from gateway.sink import Entry, Refused, SinkResult, SinkUnavailable
from gateway.snapshots import HistorySink, HistoryTracker, LateMarks

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
NS = 1_000_000_000


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s", "name": "S", "timezone": "Europe/Berlin"},
            "parking": [
                {"id": "L", "name": "L", "coords": {"lat": 51, "lng": 13}, "bays": ["b1", "b2", "b3"],
                 "stale_after_s": 300},
            ],
            "lockers": [
                {"id": "K", "name": "K", "coords": {"lat": 51, "lng": 13}, "stale_after_s": 300,
                 "compartments": [{"id": "c1", "size": "S"}, {"id": "c2", "size": "M"}]},
            ],
        }
    )  # fmt: skip


def bay(bay_id: str, status: str, at_s: float, *, seq: int | None = None, rid: str | None = None) -> ParkingBayState:
    return ParkingBayState(
        device_id="edge-1", observed_at=T0 + timedelta(seconds=at_s), reading_id=rid or new_reading_id(),
        lot_id="L", bay_id=bay_id, status=status, epoch="e1" if seq is not None else None, seq=seq,  # type: ignore[arg-type]
    )  # fmt: skip


def comp(cid: str, status: str, at_s: float, rid: str | None = None) -> LockerCompartmentState:
    return LockerCompartmentState(
        device_id="edge-k", observed_at=T0 + timedelta(seconds=at_s), reading_id=rid or new_reading_id(),
        bank_id="K", compartment_id=cid, status=status,  # type: ignore[arg-type]
    )  # fmt: skip


def feed(tracker: HistoryTracker, messages: Sequence[object]) -> list[StoredPoint]:
    points: list[StoredPoint] = []
    for m in messages:
        points += tracker.apply(m, site_id="s")
    return points


def lots(points: list[StoredPoint]) -> list[tuple[float, int, int, int]]:
    """(seconds after T0, free, occupied, unknown) of each lot snapshot."""
    return [
        ((p.time_ns - to_ns(T0)) / NS, int(p.fields["free"]), int(p.fields["occupied"]), int(p.fields["unknown"]))
        for p in points
        if p.measurement == h.M_LOT_OCCUPANCY
    ]


def test_a_lot_snapshot_is_the_sum_of_each_bays_last_state_at_each_minute_of_device_time() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=60)
    points = feed(
        tracker,
        [
            bay("b1", "free", 0),  # first reading: snapshots from 60 s of device time on
            bay("b2", "occupied", 10),
            bay("b1", "occupied", 30),
            bay("b1", "occupied", 50),  # a refresh: no change
            bay("b3", "free", 61),  # passes 60: the 60 s snapshot holds what was known at 60 s (b3 not yet)
            bay("b2", "free", 150),  # passes 120: b1 occupied, b2 occupied, b3 free
        ],
    )
    assert lots(points) == [(60, 0, 2, 1), (120, 1, 2, 0)]
    # Bays reporting at different rates do not weigh differently: the snapshot counts bays, not points.


def test_a_bay_not_heard_within_the_lots_stale_limit_is_unknown_never_free() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    points = feed(tracker, [bay("b1", "free", 0), bay("b2", "free", 0), bay("b3", "closed", 1), bay("b2", "free", 400)])
    # No warm-up: the first boundary is the first reading's. At 300 s b1 and b2 are exactly at the limit (still
    # fresh); at 360 s both are stale; closed is never free.
    fresh = [(t, 2, 0, 1) for t in (0, 60, 120, 180, 240, 300)]
    assert lots(points) == [*fresh, (360, 0, 0, 3)]


@pytest.mark.parametrize("limit", [float("inf"), float("nan")])
def test_a_non_finite_stale_limit_means_never_stale_not_a_gateway_that_cannot_start(limit: float) -> None:
    # ../shared/bugcases/15: the loader logs `stale_after_s: .inf` (check-config refuses it); the gateway runs.
    cfg = site()
    cfg = cfg.model_copy(update={"parking": [cfg.parking[0].model_copy(update={"stale_after_s": limit})]})
    tracker = HistoryTracker(cfg, every_s=60, warmup_s=0)
    points = feed(tracker, [bay("b1", "free", 0), bay("b2", "free", 0), bay("b3", "free", 1), bay("b2", "free", 900)])
    assert lots(points)[-1] == (840, 3, 0, 0)  # with the 300 s limit: (840, 1, 0, 2)


def test_replays_and_retried_batches_never_move_a_bay_back_and_late_readings_are_counted() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    first = bay("b1", "occupied", 10, seq=5)
    feed(tracker, [bay("b1", "free", 5, seq=4), first])
    assert feed(tracker, [first]) == []  # the same reading again (a retried batch): nothing new
    points = feed(tracker, [bay("b1", "free", 2, seq=3), bay("b2", "free", 70)])  # an older one (a replay)
    assert lots(points) == [(60, 0, 1, 2)]
    feed(tracker, [bay("b3", "free", 30)])  # observed before the 60 s snapshot already written
    assert tracker.stats().late == 1
    assert lots(feed(tracker, [bay("b1", "occupied", 121, seq=6)])) == [(120, 2, 1, 0)]


def test_a_backlog_replayed_after_an_outage_yields_the_snapshots_of_the_outage_at_their_own_times() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    replay = [bay(b, "free", 0) for b in ("b1", "b2", "b3")]
    replay += [bay("b1", "occupied", 90), bay("b2", "occupied", 150), bay("b3", "occupied", 170)]
    replay += [bay(b, "occupied", 200) for b in ("b1", "b2", "b3")]
    assert lots(feed(tracker, replay)) == [(0, 3, 0, 0), (60, 3, 0, 0), (120, 2, 1, 0), (180, 0, 3, 0)]


def test_a_lot_silent_for_days_writes_at_most_one_day_of_catch_up() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    feed(tracker, [bay("b1", "free", 0)])
    points = feed(tracker, [bay("b1", "free", 3 * 86_400 + 30)])
    assert len(lots(points)) == 1440
    assert all(unknown == 3 for *_, unknown in lots(points))


def test_locker_deposits_pickups_and_dwell_come_from_state_transitions() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    pickup_id = new_reading_id()
    points = feed(
        tracker,
        [
            comp("c1", "free", 0),  # first reading: no transition (what was before is not known)
            comp("c2", "occupied", 0),  # occupied since before we knew: its pickup has no dwell
            comp("c1", "occupied", 100),  # deposit
            comp("c1", "occupied", 130),  # refresh
            comp("c1", "out_of_service", 140),  # does not break the pair
            comp("c1", "free", 400, rid=pickup_id),  # pickup after 300 s
            comp("c1", "free", 400, rid=pickup_id),  # redelivered: not a second pickup
            comp("c2", "free", 410),
        ],
    )
    moves = [
        ((p.time_ns // NS) - to_ns(T0) // NS, p.tags["compartment"], p.fields["deposits"], p.fields["pickups"],
         p.fields.get("dwell_s"))
        for p in points if p.measurement == h.M_LOCKER_TRANSITION
    ]  # fmt: skip
    assert moves == [(100, "c1", 1, 0, None), (400, "c1", 0, 1, 300.0), (410, "c2", 0, 1, None)]
    bank = [p for p in points if p.measurement == h.M_LOCKER_OCCUPANCY]
    at_120 = next(p for p in bank if p.time_ns == to_ns(T0 + timedelta(seconds=120)))
    assert dict(at_120.fields) == {"free": 0, "occupied": 2, "out_of_service": 0, "unknown": 0}
    at_180 = next(p for p in bank if p.time_ns == to_ns(T0 + timedelta(seconds=180)))
    assert dict(at_180.fields) == {"free": 0, "occupied": 1, "out_of_service": 1, "unknown": 0}


def test_readings_about_things_the_site_does_not_have_make_no_points() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=0)
    stray = ParkingBayState(
        device_id="x", observed_at=T0, reading_id=new_reading_id(), lot_id="nope", bay_id="b1", status="free"
    )
    assert feed(tracker, [stray]) == []
    # A bay the lot does not have still tells the lot's device time, but is never counted.
    points = feed(tracker, [bay("zz", "free", 0), bay("zz", "free", 200)])
    assert lots(points) == [(0, 0, 0, 3), (60, 0, 0, 3), (120, 0, 0, 3), (180, 0, 0, 3)]


def test_every_s_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        HistoryTracker(site(), every_s=7)


# -- the sink ------------------------------------------------------------------------------------


class Received:
    def __init__(self, message: ParkingBayState | LockerCompartmentState, received_at: datetime) -> None:
        self.message = message
        self.site_id = "s"
        self.received_at = received_at
        self.retained = False


class Store:
    """Takes batches; fails while ``down``; refuses points of ``refuse`` measurement."""

    def __init__(self) -> None:
        self.down = False
        self.refuse: str | None = None
        self.batches: list[list[Entry]] = []

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        if self.down:
            raise SinkUnavailable("down")
        self.batches.append(list(entries))
        refused = [
            Refused(i, "influx_rejected", "no", b"")
            for i, e in enumerate(entries)
            if isinstance(e, StoredPoint) and e.measurement == self.refuse
        ]
        return SinkResult(written=len(entries) - len(refused), refused=refused, requests=1)

    def close(self) -> None:
        pass


def test_the_sink_writes_derived_points_with_their_batch_and_again_after_a_failed_write() -> None:
    store, late = Store(), LateMarks()
    sink = HistorySink(store, HistoryTracker(site(), every_s=60, warmup_s=60), late=late, late_after_s=600)
    now = datetime.now(UTC)
    sink.write([Received(bay("b1", "free", 0), now)])
    batch = [Received(bay("b1", "occupied", 61), now), Received(comp("c1", "free", 0), now)]
    store.down = True
    with pytest.raises(SinkUnavailable):
        sink.write(batch)
    store.down = False
    store.refuse = h.M_LOCKER_OCCUPANCY
    result = sink.write(batch)  # the retry: the same readings again, the pending snapshot with them
    written = store.batches[-1]
    assert [type(e).__name__ for e in written] == ["Received", "Received", "StoredPoint"]
    assert lots([e for e in written if isinstance(e, StoredPoint)]) == [(60, 1, 0, 2)]
    assert result.refused == [] and result.written == 3
    # T0 is long ago: noted for the rollups to be rebuilt.
    assert late.take() == to_ns(T0) and late.take() is None


def test_the_sink_refuses_only_the_writers_entries_and_counts_its_own() -> None:
    store = Store()
    store.refuse = h.M_LOT_OCCUPANCY
    sink = HistorySink(store, HistoryTracker(site(), every_s=60, warmup_s=60))
    now = datetime.now(UTC)
    sink.write([Received(bay("b1", "free", 0), now)])
    result = sink.write([Received(bay("b1", "free", 61), now)])
    assert result.refused == [] and sink.refused_points == 1


def test_a_lot_snapshot_counts_the_bays_gone_free_to_occupied_since_the_one_before() -> None:
    tracker = HistoryTracker(site(), every_s=60, warmup_s=60)
    points = feed(
        tracker,
        [
            bay("b1", "free", 0),
            bay("b2", "occupied", 1),  # a first reading is no arrival: occupied since before we knew
            bay("b3", "free", 2),
            bay("b1", "occupied", 70),  # arrival, in the snapshot at 120
            bay("b3", "unknown", 80),
            bay("b3", "occupied", 90),  # free -> (unknown) -> occupied: an arrival
            bay("b2", "occupied", 100),  # a refresh, no change
            bay("b1", "free", 130),  # a departure: not an arrival
            bay("b1", "occupied", 200),  # arrival, in the snapshot at 240 (180 has none)
            bay("b1", "occupied", 250),
        ],
    )
    arrivals = [
        ((p.time_ns - to_ns(T0)) // NS, p.fields[h.F_ARRIVALS]) for p in points if p.measurement == h.M_LOT_OCCUPANCY
    ]
    assert arrivals == [(60, 0), (120, 2), (180, 0), (240, 1)]
