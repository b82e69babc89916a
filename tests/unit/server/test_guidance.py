"""Guidance ranking (server/guidance.py), pure: tables of lots and banks, and a property over random lots."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.configfile import load_model
from contracts.site import SiteConfig
from server import guidance, models
from server.guidance import Destination, DestinationError, rank_lockers, rank_parking, resolve_destination

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)
#: The destination every table below walks to.
LAT, LNG = 51.0, 13.7
DEST = Destination("coords", LAT, LNG)
#: Degrees of latitude per metre of great-circle distance.
DEG_PER_M = 1 / (guidance.EARTH_RADIUS_M * math.pi / 180)


def north(metres: float) -> dict[str, float]:
    """Coordinates ``metres`` (great circle) north of the destination."""
    return {"lat": LAT + metres * DEG_PER_M, "lng": LNG}


@dataclass
class Lot:
    """One row of a table: a lot's configuration and its live view, in a few words."""

    id: str
    at_m: float = 100.0  # great-circle metres north of the destination
    free: int = 50
    total: int = 100
    state: models.LotState = "open"
    fresh: bool = True
    age_s: float | None = 10.0
    direction: models.TrendDirection = "steady"
    free_change: int | None = 0
    window_s: float = 600.0
    full_below: int = 1
    closed: bool = False
    entrances: list[dict[str, Any]] = field(default_factory=list)
    stale_after_s: float = 600.0

    def config(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.id.upper(), "coords": north(self.at_m), "bays": {"count": self.total},
            "full_below": self.full_below, "closed": self.closed, "entrances": self.entrances,
            "stale_after_s": self.stale_after_s,
        }  # fmt: skip

    def live(self) -> models.ParkingLot:
        observed = None if self.age_s is None else T0 - timedelta(seconds=self.age_s)
        return models.ParkingLot(
            id=self.id, name=self.id.upper(), coords=models.Coords(**north(self.at_m)), lot_type="garage",
            total=self.total, free=self.free, occupied=self.total - self.free, unknown=0,
            percent_free=100.0 * self.free / self.total, state=self.state, observed_at=observed, age_s=self.age_s,
            fresh=self.fresh, stale_after_s=self.stale_after_s,
            trend=models.Trend(direction=self.direction, free_change=self.free_change, window_s=self.window_s),
        )  # fmt: skip


def site_of(lots: list[Lot], **extra: Any) -> SiteConfig:
    return SiteConfig.model_validate({"site": {"id": "s", "name": "S"}, "parking": [x.config() for x in lots], **extra})


def rank(lots: list[Lot], **kw: Any) -> models.ParkingGuidance:
    return rank_parking(site_of(lots), [x.live() for x in lots], DEST, **kw)


def ids(answer: models.ParkingGuidance) -> list[str]:
    return [e.lot_id for e in answer.lots]


# -- walking -------------------------------------------------------------------------


def test_walking_distance_is_the_great_circle_times_the_circuity_factor() -> None:
    # One degree of latitude on the IUGG mean sphere is 111.195 km.
    assert guidance.haversine_m(50.0, 13.0, 51.0, 13.0) == pytest.approx(111_195, abs=1)
    assert guidance.walk_m(50.0, 13.0, 51.0, 13.0) == pytest.approx(111_195 * guidance.CIRCUITY, abs=2)
    # 1 km of straight line: 1.3 km of streets at 1.34 m/s is 16.2 minutes.
    assert guidance.walk_min(1000 * guidance.CIRCUITY) == pytest.approx(16.17, abs=0.01)
    assert guidance.haversine_m(LAT, LNG, north(250.0)["lat"], LNG) == pytest.approx(250.0, abs=0.01)


def test_the_walk_starts_at_the_entrance_nearest_the_destination_not_at_the_lot() -> None:
    far_lot_near_door = Lot("a", at_m=800, entrances=[{"name": "far door", "coords": north(900)},
                                                       {"name": "near door", "coords": north(50)}])  # fmt: skip
    plain = Lot("b", at_m=300)
    answer = rank([far_lot_near_door, plain])
    assert ids(answer) == ["a", "b"]
    a = answer.lots[0]
    assert a.entrance.name == "near door" and a.walk_m == pytest.approx(50 * guidance.CIRCUITY, abs=0.1)
    assert a.coords.lat == pytest.approx(north(800)["lat"])  # the lot's own coordinates, still reported
    b = answer.lots[1]
    assert b.entrance.name is None and b.walk_m == pytest.approx(300 * guidance.CIRCUITY, abs=0.1)


# -- the table -----------------------------------------------------------------------


@dataclass
class Case:
    lots: list[Lot]
    ranked: list[str]
    unavailable: dict[str, models.ParkingUnavailableReason] = field(default_factory=dict)
    kw: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "nearer wins when all else is equal": Case([Lot("far", at_m=600), Lot("near", at_m=100)], ["near", "far"]),
    "tie: equal score and distance go by id, whatever the input order": Case(
        [Lot("c"), Lot("a"), Lot("b")], ["a", "b", "c"]
    ),
    "no lot with space: nothing ranked, every reason given": Case(
        [
            Lot("full", free=0, state="full"),
            Lot("closed", closed=True, state="closed"),
            Lot("stale", fresh=False, age_s=900, state="nodata"),
            Lot("never", fresh=False, age_s=None, state="nodata", free=0),
            Lot("unknownbays", state="nodata", free=0),
        ],
        [],
        {"full": "full", "closed": "closed", "stale": "stale", "never": "nodata", "unknownbays": "nodata"},
    ),
    "a full, closed or stale lot next door never ranks above a far lot with space": Case(
        [
            Lot("full", at_m=10, free=0, state="full"),
            Lot("closed", at_m=10, closed=True, state="closed"),
            Lot("stale", at_m=10, fresh=False, age_s=601),
            Lot("open", at_m=2000, free=1),
        ],
        ["open"],
        {"full": "full", "closed": "closed", "stale": "stale"},
    ),
    "reserve: free equal to the reserve still has one space to give": Case(
        [Lot("edge", free=5, full_below=5)], ["edge"]
    ),
    "reserve: free below the reserve is full": Case(
        [Lot("below", free=4, full_below=5, state="full")], [], {"below": "full"}
    ),
    "reserve: a big reserve eats the spare spaces": Case(
        [Lot("reserved", free=12, full_below=10), Lot("plain", free=12)], ["plain", "reserved"]
    ),
    "a lot past the walking limit is too far": Case(
        [Lot("near", at_m=100), Lot("far", at_m=guidance.MAX_WALK_M / guidance.CIRCUITY + 50)],
        ["near"],
        {"far": "too_far"},
    ),
    "filling costs FILLING_MIN without an arrival time": Case(
        [Lot("filling", direction="filling", free_change=-20), Lot("steady", at_m=150)], ["steady", "filling"]
    ),
    "older data ranks lower, all else equal": Case([Lot("old", age_s=590), Lot("new", age_s=5)], ["new", "old"]),
    "few spaces next door lose to many spaces a little farther": Case(
        [Lot("few", at_m=50, free=1), Lot("many", at_m=300, free=200, total=300)], ["many", "few"]
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_ranking_table(case: Case) -> None:
    answer = rank(case.lots, include_unavailable=True, **case.kw)
    ranked = [e for e in answer.lots if e.available]
    assert [e.lot_id for e in ranked] == case.ranked
    assert [e.rank for e in ranked] == list(range(1, len(ranked) + 1))
    assert {e.lot_id: e.reason for e in answer.lots if not e.available} == case.unavailable
    assert (answer.available, answer.unavailable) == (len(case.ranked), len(case.unavailable))
    # Every available entry comes before every unavailable one.
    flags = [e.available for e in answer.lots]
    assert flags == sorted(flags, reverse=True)
    for e in answer.lots:
        assert e.reasons and e.summary
        if e.available:
            assert e.score is not None and e.score_parts is not None
            p = e.score_parts
            assert e.score == pytest.approx(p.walk_min + p.space_risk_min + p.trend_min + p.freshness_min, abs=1e-3)
        else:
            assert (e.rank, e.score, e.score_parts) == (None, None, None)
    if not case.ranked:
        assert answer.note is not None and answer.note.startswith("no lot with space")
        for reason in case.unavailable.values():
            assert reason in answer.note


def test_unavailable_lots_are_left_out_unless_asked_for() -> None:
    lots = [Lot("open"), Lot("full", free=0, state="full")]
    answer = rank(lots)
    assert ids(answer) == ["open"] and (answer.available, answer.unavailable) == (1, 1)
    none = rank([Lot("full", free=0, state="full")])
    assert none.lots == [] and none.note == "no lot with space: 1 full (include_unavailable=true lists them)"


def test_unavailable_reasons_say_why_in_words() -> None:
    answer = rank(
        [
            Lot("full", free=3, full_below=5, state="full", at_m=10),
            Lot("closed", closed=True, state="closed", at_m=20),
            Lot("stale", fresh=False, age_s=900, at_m=30),
        ],
        include_unavailable=True,
    )
    walks = ["0.2 min walk (13 m from the lot)", "0.3 min walk (26 m from the lot)", "0.5 min walk (39 m from the lot)"]
    assert [e.reasons[1] for e in answer.lots] == walks
    assert [e.summary for e in answer.lots] == [
        "FULL is full: 3 free, fewer than its reserve of 5.",
        "CLOSED is closed.",
        "STALE: no bay heard for 900 s (limit 600 s), so its free count cannot be trusted.",
    ]


def test_score_parts_follow_the_published_formula() -> None:
    lot = Lot("a", at_m=200, free=14, full_below=5, age_s=150, direction="filling", free_change=-12)
    [e] = rank([lot]).lots
    assert e.spaces_beyond_reserve == 10 and e.reserve == 5
    assert e.score_parts == models.GuidanceScoreParts(
        walk_min=round(200 * 1.3 / 1.34 / 60, 3),
        space_risk_min=round(10 * math.exp(-10 / 10), 3),
        trend_min=2.0,
        freshness_min=round(2 * 150 / 600, 3),
    )
    assert e.reasons == [
        "3.2 min walk (260 m from the lot): +3.23",
        "10 spaces beyond the reserve of 5: full-lot risk +3.68",
        "filling (-12 bays in 10 min): +2.00",
        "data 150 s old of 600 s allowed: +0.50",
    ]
    assert e.summary == "1. A: 3 min walk, 10 spaces to spare, filling, data 150 s old; score 9.4."


def test_arrival_time_projects_spaces_by_the_trend() -> None:
    # Filling by 30 bays in 10 min = 3 bays/min: in 5 min, 20 spare spaces become about 5.
    filling = Lot("filling", free=20, direction="filling", free_change=-30)
    [e] = rank([filling], arrive_in_min=5).lots
    assert e.spaces_at_arrival == pytest.approx(5.0)
    assert e.score_parts is not None
    assert e.score_parts.trend_min == pytest.approx(guidance.space_risk_min(5) - guidance.space_risk_min(20), abs=1e-3)
    # Emptying makes arrival better than now: a negative trend term.
    emptying = Lot("emptying", free=5, direction="emptying", free_change=10)
    [e] = rank([emptying], arrive_in_min=10).lots
    assert e.spaces_at_arrival == pytest.approx(15.0)
    assert e.score_parts is not None and e.score_parts.trend_min < 0
    # Never below zero spaces; still ranked (fresh with space now), but behind a lot that will have some.
    draining = Lot("draining", at_m=10, free=3, direction="filling", free_change=-100)
    answer = rank([draining, Lot("later", at_m=400)], arrive_in_min=15)
    assert ids(answer) == ["later", "draining"]
    assert answer.lots[1].spaces_at_arrival == 0.0
    # A change too small to show is exactly 0, never -0.0.
    [e] = rank([Lot("steady", free=200, total=300, free_change=1)], arrive_in_min=8).lots
    assert e.score_parts is not None and math.copysign(1, e.score_parts.trend_min) == 1.0
    assert e.reasons[2] == "steady (+1 bay in 10 min): about 201 spaces left on arrival in 8 min: +0.00"
    # An unknown trend projects nothing.
    [e] = rank([Lot("new", direction="unknown", free_change=0, window_s=20)], arrive_in_min=5).lots
    assert e.spaces_at_arrival is None and e.score_parts is not None and e.score_parts.trend_min == 0.0


class Forecasts:
    """The route's ``forecast_change`` for a table: free bays per minute from now by lot (a straight line), or
    nothing for a lot without a fresh forecast; remembers what it was asked."""

    def __init__(self, per_min: dict[str, float]) -> None:
        self.per_min = per_min
        self.asked: list[tuple[str, float]] = []

    def __call__(self, lot_id: str, minutes: float) -> float | None:
        self.asked.append((lot_id, minutes))
        rate = self.per_min.get(lot_id)
        return None if rate is None else rate * minutes


@pytest.mark.parametrize(
    ("lot", "arrive", "forecast_per_min", "basis", "at_arrival"),
    [
        # Filling by 30 in 10 min (-3/min) but the forecast says -0.5/min: over 60 min, 100 spaces become 70 by
        # the forecast (the stretched trend would say 0).
        (Lot("f", free=100, total=200, direction="filling", free_change=-30), 60, -0.5, "forecast", 70.0),
        # A short arrival too: the forecast (bench/forecast/arrival.py: closer than the trend at 15 min already).
        (Lot("f", free=100, total=200, direction="filling", free_change=-30), 8, -0.5, "forecast", 96.0),
        # No fresh forecast for the lot: the trend, as without forecasts.
        (Lot("f", free=100, total=200, direction="filling", free_change=-30), 20, None, "trend", 40.0),
        # Trend unknown (under a minute of changes): the forecast all the same.
        (Lot("n", free=100, total=200, direction="unknown", free_change=0, window_s=20), 30, 1.0, "forecast", 130.0),
        # Neither: nothing projected.
        (Lot("n", free=100, total=200, direction="unknown", free_change=0, window_s=20), 30, None, None, None),
        # Clamped to the lot: never above its bays, never below 0.
        (Lot("e", free=190, total=200, direction="emptying", free_change=5), 120, 2.0, "forecast", 200.0),
        (Lot("d", free=10, total=200, direction="steady", free_change=0), 90, -1.0, "forecast", 0.0),
    ],
)  # fmt: skip
def test_arrival_follows_a_fresh_forecast_else_the_trend(
    lot: Lot, arrive: float, forecast_per_min: float | None, basis: str | None, at_arrival: float | None
) -> None:
    fc = Forecasts({} if forecast_per_min is None else {lot.id: forecast_per_min})
    [e] = rank([lot], arrive_in_min=arrive, forecast_change=fc).lots
    assert (e.arrival_basis, e.spaces_at_arrival) == (basis, at_arrival)
    assert fc.asked == [(lot.id, arrive)]  # from now to the arrival
    assert e.score_parts is not None
    risk = guidance.space_risk_min
    expected = 0.0 if at_arrival is None else risk(at_arrival) - risk(e.spaces_beyond_reserve)
    assert e.score_parts.trend_min == pytest.approx(expected, abs=1e-3)
    if basis is not None:
        assert f"on arrival in {arrive:g} min" in e.reasons[2]
        assert e.reasons[2].startswith("forecast ") == (basis == "forecast")
    # Without an arrival time the forecast plays no part.
    [plain] = rank([lot], forecast_change=fc).lots
    assert plain.arrival_basis is None and plain.spaces_at_arrival is None and len(fc.asked) == 1


def test_equal_scores_go_by_distance_then_id() -> None:
    # Same score, different distances: impossible to build exactly with real inputs, so check the sort key
    # on the shown values: "b" is nearer than "a" but ranks second only if its score is higher.
    lots = [Lot("b", at_m=100), Lot("a", at_m=100), Lot("c", at_m=100.5)]
    answer = rank(lots)
    scores = [e.score for e in answer.lots]
    assert ids(answer) == ["a", "b", "c"] and scores[0] == scores[1]
    assert [ids(rank(list(p))) for p in (lots[::-1], lots[1:] + lots[:1])] == [["a", "b", "c"]] * 2


def test_a_destination_outside_the_site_ranks_nothing_and_says_so() -> None:
    lots = [Lot("a"), Lot("b", at_m=500)]
    answer = rank_parking(site_of(lots), [x.live() for x in lots], Destination("coords", 48.1, 11.6))  # Munich
    assert answer.outside_site and answer.lots == [] and answer.available == 0 and answer.unavailable == 2
    assert answer.note is not None and answer.note.startswith("the destination is outside the site")
    assert "km walk, beyond the 3000 m limit" in answer.note
    listed = rank_parking(site_of(lots), [x.live() for x in lots], Destination("coords", 48.1, 11.6),
                          include_unavailable=True)  # fmt: skip
    assert [(e.lot_id, e.reason) for e in listed.lots] == [("a", "too_far"), ("b", "too_far")]
    # Just inside the limit of one lot: inside the site.
    edge = rank([Lot("a", at_m=guidance.MAX_WALK_M / guidance.CIRCUITY - 5)])
    assert not edge.outside_site and ids(edge) == ["a"]


def test_a_site_without_lots_answers_empty_not_outside() -> None:
    answer = rank([])
    assert (answer.outside_site, answer.lots, answer.note) == (False, [], "site 's' has no parking lots")


def test_limit_caps_the_ranked_and_the_unavailable_lots_each() -> None:
    lots = [Lot(f"o{i}", at_m=100 + i) for i in range(4)] + [Lot(f"f{i}", free=0, state="full") for i in range(3)]
    answer = rank(lots, limit=2, include_unavailable=True)
    assert ids(answer) == ["o0", "o1", "f0", "f1"] and (answer.available, answer.unavailable) == (4, 3)


# -- property: the tiers hold for any lots ---------------------------------------------


def random_lot(rnd: random.Random, n: int) -> Lot:
    total = rnd.randint(1, 300)
    free = rnd.randint(0, total)
    fresh = rnd.random() < 0.7
    direction = rnd.choice(["filling", "emptying", "steady", "unknown"])
    return Lot(
        id=f"l{n}",
        at_m=rnd.choice([rnd.uniform(0, 500), rnd.uniform(0, 3000)]),
        free=free,
        total=total,
        # States drawn freely, not derived from the counts: the ranking must hold even for inconsistent input.
        state=rnd.choice(["open", "open", "full", "closed", "nodata"]),
        fresh=fresh,
        age_s=None if rnd.random() < 0.1 else rnd.uniform(0, 600 if fresh else 5000),
        direction=direction,  # type: ignore[arg-type]
        free_change=rnd.randint(-100, 100),
        window_s=rnd.choice([10.0, 120.0, 600.0]),
        full_below=rnd.randint(0, 20),
        entrances=[{"coords": north(rnd.uniform(0, 1000))} for _ in range(rnd.randint(0, 2))],
    )


@pytest.mark.parametrize("seed", range(300))
def test_no_lot_without_trustworthy_space_ever_ranks_above_one_with_it(seed: int) -> None:
    rnd = random.Random(seed)
    lots = [random_lot(rnd, n) for n in range(rnd.randint(0, 9))]
    site = site_of(lots)
    arrive = rnd.choice([None, rnd.uniform(0, 60)])
    # Some lots have a forecast, rising or falling steeply: it may move the scores, never the tiers.
    fc = Forecasts({x.id: rnd.uniform(-20, 20) for x in lots if rnd.random() < 0.5})
    answer = rank_parking(
        site,
        [x.live() for x in lots],
        DEST,
        arrive_in_min=arrive,
        forecast_change=fc,
        limit=20,
        include_unavailable=True,
    )
    by_id = {x.id: x for x in lots}

    def has_space(x: Lot) -> bool:
        cfg = site.lot(x.id)
        assert cfg is not None
        near = min(guidance.walk_m(c.lat, c.lng, LAT, LNG) for c in cfg.entrance_coords()) <= guidance.MAX_WALK_M
        return x.fresh and x.state == "open" and x.free >= cfg.reserve(x.total) and near

    flags = [e.available for e in answer.lots]
    assert flags == sorted(flags, reverse=True), "an unavailable lot above an available one"
    assert len(answer.lots) == len(lots)
    for e in answer.lots:
        assert e.available == has_space(by_id[e.lot_id]), e
    ranked = [e for e in answer.lots if e.available]
    keys = [(e.score, e.walk_m, e.lot_id) for e in ranked]
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert [e.rank for e in ranked] == list(range(1, len(ranked) + 1))
    assert all(e.spaces_beyond_reserve >= 1 for e in ranked)
    # Deterministic: the same lots in another order give the same answer.
    shuffled = [x.live() for x in lots]
    rnd.shuffle(shuffled)
    again = rank_parking(
        site, shuffled, DEST, arrive_in_min=arrive, forecast_change=fc, limit=20, include_unavailable=True
    )
    assert again == answer


# -- destinations --------------------------------------------------------------------

DEST_SITE = {
    "zones": [{"id": "z1", "name": "Square", "coords": north(10)}, {"id": "z2", "name": "Lane"}],
    "lockers": [{"id": "k1", "name": "Station", "coords": north(20), "compartments": [{"size": "S", "count": 1}]}],
}


@pytest.mark.parametrize(
    ("given", "outcome"),
    [
        ({"lat": 51.0, "lng": 13.7}, ("coords", None)),
        ({"zone": "z1"}, ("zone", "z1")),
        ({"locker_bank": "k1"}, ("locker_bank", "k1")),
        ({}, "destination_missing"),
        ({"lat": 51.0}, "destination_incomplete"),
        ({"lng": 13.7}, "destination_incomplete"),
        ({"lat": 51.0, "lng": 13.7, "zone": "z1"}, "destination_ambiguous"),
        ({"zone": "z1", "locker_bank": "k1"}, "destination_ambiguous"),
        ({"zone": "z2"}, "zone_without_coords"),
        ({"zone": "nope"}, "unknown_zone"),
        ({"locker_bank": "nope"}, "unknown_locker_bank"),
    ],
)
def test_exactly_one_destination_form(given: dict[str, Any], outcome: tuple[str, str | None] | str) -> None:
    site = site_of([], **DEST_SITE)
    if isinstance(outcome, tuple):
        dest = resolve_destination(site, **given)
        assert (dest.source, dest.id) == outcome
        if dest.source == "zone":
            assert (dest.lat, dest.name) == (north(10)["lat"], "Square")
        return
    with pytest.raises(DestinationError) as err:
        resolve_destination(site, **given)
    assert err.value.code == outcome
    assert err.value.not_found == outcome.startswith("unknown")


# -- lockers -------------------------------------------------------------------------


def bank(
    bid: str,
    at_m: float = 100.0,
    free: dict[str, int] | None = None,
    sizes: tuple[str, ...] = ("S", "M", "L"),
    fresh: bool = True,
    age_s: float | None = 5.0,
) -> models.LockerBank:
    free = free or {}
    out = [
        models.LockerSize(
            size=s, total=4, free=free.get(s, 0), occupied=4 - free.get(s, 0), out_of_service=0, unknown=0
        )
        for s in sizes
    ]
    observed = None if age_s is None else T0 - timedelta(seconds=age_s)
    total_free = sum(free.values())
    return models.LockerBank(
        id=bid, name=bid.upper(), coords=models.Coords(**north(at_m)), total=4 * len(sizes), free=total_free,
        occupied=4 * len(sizes) - total_free, out_of_service=0, unknown=0, sizes=out, doors_open=[],
        state=("open" if total_free else "full") if fresh else "nodata", observed_at=observed, age_s=age_s,
        fresh=fresh, stale_after_s=600.0,
    )  # fmt: skip


def test_lockers_offer_the_smallest_fitting_free_size_nearest_first() -> None:
    banks = [
        bank("far", at_m=900, free={"M": 2}),
        bank("larger", at_m=300, free={"S": 3, "L": 1}),  # no M free: offers L
        bank("exact", at_m=600, free={"M": 1, "L": 4}),
        bank("smallonly", at_m=50, free={"S": 4}),  # S does not fit an M parcel
        bank("nobig", at_m=60, sizes=("S",), free={"S": 4}),
        bank("stale", at_m=10, free={"M": 4}, fresh=False, age_s=700),
        bank("never", at_m=20, fresh=False, age_s=None),
    ]
    answer = rank_lockers(banks, DEST, "M", include_unavailable=True)
    got = [(e.bank_id, e.rank, e.size_offered, e.free_of_size, e.reason) for e in answer.banks]
    assert got == [
        ("larger", 1, "L", 1, None),
        ("exact", 2, "M", 1, None),
        ("far", 3, "M", 2, None),
        ("stale", None, None, 0, "stale"),
        ("never", None, None, 0, "nodata"),
        ("smallonly", None, None, 0, "none_free"),
        ("nobig", None, None, 0, "no_size"),
    ]
    larger = answer.banks[0]
    assert [(f.size, f.free) for f in larger.free_fitting] == [("M", 0), ("L", 1)]
    assert larger.reasons[1] == "1 free L (no M free; L is the smallest larger one)"
    assert (answer.available, answer.unavailable) == (3, 4)
    assert [e.bank_id for e in rank_lockers(banks, DEST, "M").banks] == ["larger", "exact", "far"]


@pytest.mark.parametrize(("size", "expected"), [("S", ("S", "M", "L", "XL")), ("L", ("L", "XL")), ("XL", ("XL",))])
def test_fitting_sizes(size: models.CompartmentSize, expected: tuple[str, ...]) -> None:
    assert guidance.fitting_sizes(size) == expected


def test_lockers_tie_on_distance_by_id_and_outside_the_site() -> None:
    banks = [bank("b", free={"S": 1}), bank("a", free={"S": 1})]
    assert [e.bank_id for e in rank_lockers(banks, DEST, "S").banks] == ["a", "b"]
    away = rank_lockers(banks, Destination("coords", 48.1, 11.6), "S")
    assert away.outside_site and away.banks == [] and away.note is not None and "outside the site" in away.note
    none = rank_lockers([bank("a", free={"S": 1})], DEST, "XL")
    assert none.banks == [] and none.note == (
        "no bank with a free XL or larger compartment: 1 no_size (include_unavailable=true lists them)"
    )


# -- docs/guidance.md's worked example -------------------------------------------------


def test_the_worked_example_in_the_docs() -> None:
    site = load_model(Path(__file__).parents[3] / "district" / "sites" / "dresden.yaml", SiteConfig)
    spec: dict[str, tuple[int, models.LotState, float, models.TrendDirection, int]] = {
        "dresdenaltmarkt": (12, "open", 30, "filling", -8),
        "dresdenkarstadt": (80, "open", 45, "steady", 1),
        "dresdencentrumgalerie": (300, "open", 20, "emptying", 25),
        "dresdenwoehrlflorentinum": (0, "full", 15, "filling", -4),
        "dresdencitycenter": (0, "nodata", 900, "unknown", 0),
    }
    lots = []
    for cfg in site.parking:
        free, state, age, direction, change = spec[cfg.id]
        lots.append(
            models.ParkingLot(
                id=cfg.id, name=cfg.name, coords=models.Coords(lat=cfg.coords.lat, lng=cfg.coords.lng),
                lot_type=cfg.lot_type, total=cfg.total, free=free, occupied=cfg.total - free, unknown=0,
                percent_free=None, state=state, observed_at=T0 - timedelta(seconds=age), age_s=age,
                fresh=age < cfg.stale_after_s, stale_after_s=cfg.stale_after_s,
                trend=models.Trend(direction=direction, free_change=change, window_s=600),
            )
        )  # fmt: skip
    dest = resolve_destination(site, zone="altmarkt")
    answer = rank_parking(site, lots, dest, include_unavailable=True)
    assert [(e.name, e.rank, e.score, e.reason) for e in answer.lots] == [
        ("Karstadt", 1, 6.683, None),
        ("Altmarkt", 2, 7.387, None),
        ("Centrum-Galerie", 3, 9.802, None),
        ("Wöhrl / Florentinum", None, None, "full"),
        ("City Center", None, None, "stale"),
    ]
    altmarkt = answer.lots[1]
    assert altmarkt.score_parts == models.GuidanceScoreParts(
        walk_min=0.794, space_risk_min=4.493, trend_min=2.0, freshness_min=0.1
    )
    assert (altmarkt.entrance.name, altmarkt.walk_m, altmarkt.spaces_beyond_reserve) == (
        "Altmarkt north stairs",
        63.8,
        8,
    )
    later = rank_parking(site, lots, dest, arrive_in_min=8).lots[1]
    assert (later.lot_id, later.spaces_at_arrival, later.score) == ("dresdenaltmarkt", 1.6, 9.415)
