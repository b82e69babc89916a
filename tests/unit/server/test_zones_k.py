"""The k rule on the public live crowd (issue 14 item 2): /v1/zones, the SSE zones event, CrowdFlowObserved, signs.

A synthetic site with known counts, at k - 1, k and k + 1 people (k = 10, the
site's default), each figure read through every public door; the live
occupancy, rounded to a multiple of k, for several k; then the differencing
channels the aligned windows and the rounding close: answers a minute apart
never subtract into a figure resting on fewer than k people.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import FootfallCount, LineCount
from contracts.site import DEFAULT_K, SiteConfig
from server.displays.render import gather, render
from server.feeds.ngsild import crowd_flow_observed
from server.feeds.zones import from_crowd
from server.live import LiveState
from server.livefeed import LiveFeed
from tests.unit.server.test_lockers_zones import get
from tests.unit.server.test_server_live import FakeClock

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)  # on a quarter hour and an hour
K = DEFAULT_K
_ids = iter(range(1, 10**9))


def make_site(timezone: str = "UTC", k: int = K) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test", "timezone": timezone},
            "analytics": {"k": k},
            "zones": [
                # Every count under k is "low" here (moderate from 40 people) ...
                {"id": "shop", "name": "Shop", "capacity": 100},
                # ... not here (low 0-4, moderate 5-8, high 9-10): the level would narrow an under-k count.
                {"id": "kiosk", "name": "Kiosk", "capacity": 12},
            ],
            "cameras": [
                {"id": "cam1", "device": "d-cam", "lines": [{"id": "door", "zone": "shop"}]},
                {"id": "cam2", "device": "d-cam", "lines": [{"id": "hatch", "zone": "kiosk"}]},
            ],
            "displays": [
                {"id": "p", "kind": "wayfinding", "coords": {"lat": 51.0, "lng": 13.7}, "zones": ["shop"]},
                {"id": "pk", "kind": "wayfinding", "coords": {"lat": 51.0, "lng": 13.7}, "zones": ["kiosk"]},
                {"id": "both", "kind": "wayfinding", "coords": {"lat": 51.0, "lng": 13.7}, "zones": ["shop", "kiosk"]},
            ],
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def live(clock: FakeClock) -> LiveState:
    return LiveState(make_site(), clock)


def count(live: LiveState, zone: str, towards: int, away: int, occupancy: int | None) -> None:
    """One camera minute ending now, heard now."""
    end = live.clock()
    camera, line = ("cam1", "door") if zone == "shop" else ("cam2", "hatch")
    msg = FootfallCount(
        device_id="d-cam", observed_at=end, reading_id=f"f{next(_ids):09d}", zone_id=zone, camera_id=camera,
        interval_start=end - timedelta(seconds=60), lines=[LineCount(line_id=line, towards=towards, away=away)],
        occupancy=occupancy,
    )  # fmt: skip
    live.apply(msg, end)


def public(live: LiveState, tmp_path: Path, zone: str) -> dict[str, Any]:
    """The zone through each public door: the API, the SSE zones event, NGSI-LD (keyValues), its people sign."""
    api = get(live, tmp_path, f"/v1/zones/{zone}").json()
    _, frame = LiveFeed(live)._build("zones", live.clock()) or (None, b"[]")
    sse = next(z for z in json.loads(frame) if z["id"] == zone)
    ngsi = get(live, tmp_path, f"/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:s1:{zone}?options=keyValues")
    display = live.site.display("p" if zone == "shop" else "pk")
    assert display is not None
    sign = render(display, gather(live.site, live, display, live.clock()))
    return {"api": api, "sse": sse, "ngsi": ngsi.json(), "sign": sign}


#: A quarter hour's (entries, exits) with k = 10 -> its state, the entries and exits shown (None: withheld) and
#: the trend. A direction is shown only if it reaches k itself; the window's crossings alone are not enough.
QUARTERS = [
    ((K - 3, 2), "suppressed", None, None, "suppressed"),  # 9 crossings: nothing
    ((K - 2, 2), "ok", None, None, "suppressed"),  # 10 crossings, but 8 in and 2 out: both under k
    ((30, 2), "ok", 30, None, "suppressed"),  # 30 shown; the 2 out withheld, and the net flow with them
    ((12, 0), "ok", 12, None, "suppressed"),  # 0 out rests on no one: withheld, never shown as 0
    ((5, 5), "ok", None, None, "suppressed"),
    ((0, 12), "ok", None, 12, "suppressed"),
    ((K, K), "ok", K, K, "steady"),  # both at k: shown, and the trend from them
    ((30, 11), "ok", 30, 11, "rising"),
]  # fmt: skip


@pytest.mark.parametrize(("flow", "state", "entries", "exits", "trend"), QUARTERS)
def test_a_quarter_hour_shows_each_direction_only_at_k_people(
    live: LiveState,
    clock: FakeClock,
    tmp_path: Path,
    flow: tuple[int, int],
    state: str,
    entries: int | None,
    exits: int | None,
    trend: str,
) -> None:
    clock.advance(60)
    count(live, "shop", *flow, occupancy=50)
    clock.advance(15 * 60)  # 12:16: the quarter 12:00-12:15 is complete
    count(live, "shop", 0, 0, occupancy=50)
    got = public(live, tmp_path, "shop")
    assert got["api"] == got["sse"]  # the SSE event carries the same public figures
    q = got["api"]["last_15m"]
    assert (q["start"], q["end"]) == ("2026-05-04T12:00:00Z", "2026-05-04T12:15:00Z")
    ngsi = got["ngsi"]
    assert (ngsi["dateObservedFrom"], ngsi["dateObservedTo"]) == (q["start"], q["end"])
    withheld = [p for p, v in (("entries", entries), ("exits", exits)) if v is None] if state == "ok" else []
    assert (q["state"], q["entries"], q["exits"], q["withheld"], got["api"]["trend"]) == (
        state, entries, exits, withheld, trend
    )  # fmt: skip
    if state == "suppressed":
        assert ngsi["peopleCountState"] == "suppressed"
        assert not {"peopleCount", "peopleCountTowards", "peopleCountAway"} & set(ngsi)
        assert not {"peopleCountTowardsState", "peopleCountAwayState"} & set(ngsi)
        return
    for name, value in (("peopleCountTowards", entries), ("peopleCountAway", exits)):
        # A withheld direction is absent, and its extension attribute says why; never 0.
        assert ngsi.get(name) == value
        assert ngsi.get(f"{name}State") == (None if value is not None else "suppressed")
    if entries is not None and exits is not None:
        assert (ngsi["peopleCount"], "peopleCountState" in ngsi) == (entries + exits, False)
    else:  # the sum minus the shown direction would be the withheld one
        assert ("peopleCount" in ngsi, ngsi["peopleCountState"]) == (False, "suppressed")


def band(people: int, capacity: int) -> str:
    """The crowd level of ``people`` by the default crowd_levels (0.4 / 0.7 / 0.9 of the capacity)."""
    share = people / capacity
    return "very_high" if share >= 0.9 else "high" if share >= 0.7 else "moderate" if share >= 0.4 else "low"


#: (k, the cameras' estimate, what is published: the nearest multiple of k, a half up; None: withheld).
#: For each k: k - 1, k, k + 1, the last count that rounds down to k (under 1.5 k), the first that rounds up
#: to 2 k (1.5 k, or the next whole count for an odd k), 2 k + 3.
ROUNDING = [
    (10, 9, None), (10, 10, 10), (10, 11, 10), (10, 14, 10), (10, 15, 20), (10, 23, 20), (10, 25, 30),
    (5, 4, None), (5, 5, 5), (5, 6, 5), (5, 7, 5), (5, 8, 10), (5, 13, 15),
    (3, 2, None), (3, 3, 3), (3, 4, 3), (3, 5, 6), (3, 9, 9),
    (2, 1, None), (2, 2, 2), (2, 3, 4), (2, 7, 8),
    (25, 24, None), (25, 25, 25), (25, 26, 25), (25, 37, 25), (25, 38, 50), (25, 53, 50),
    (1, 0, None), (1, 1, 1), (1, 2, 2), (1, 5, 5),  # k = 1: base 1, nothing to round ("ok")
]  # fmt: skip


@pytest.mark.parametrize(("k", "n", "published"), ROUNDING)
@pytest.mark.parametrize("zone", ["shop", "kiosk"])
def test_occupancy_is_published_rounded_to_a_multiple_of_k_through_every_door(
    clock: FakeClock, tmp_path: Path, k: int, n: int, published: int | None, zone: str
) -> None:
    live = LiveState(make_site(k=k), clock)
    count(live, zone, 0, 0, occupancy=n)
    got = public(live, tmp_path, zone)
    api, ngsi, sign = got["api"], got["ngsi"], got["sign"]
    assert api == got["sse"]  # the SSE event carries the same public figures
    capacity = 100 if zone == "shop" else 12
    if published is None:
        assert (api["occupancy"], api["share"], api["occupancy_state"], api["occupancy_base"]) == (
            None, None, "suppressed", None,
        )  # fmt: skip
        assert "occupancy" not in ngsi and "occupancyBase" not in ngsi
        assert ngsi["occupancyState"] == "suppressed"
        assert sign.value is None  # never 0
        # Under k the level is shown only when every count under k is in the same band (then it is "low").
        level = "low" if band(k - 1, capacity) == "low" else "suppressed"
        assert (api["level"], ngsi["crowdLevel"]) == (level, level)
        assert (sign.text, sign.state) == (("LOW", "open") if level == "low" else ("", "fallback"))
        return
    state = "coarsened" if k > 1 else "ok"
    assert (api["occupancy"], api["occupancy_state"], api["occupancy_base"]) == (published, state, k)
    assert published >= k and published % k == 0  # never under k, never 0
    assert api["share"] == round(published / capacity, 4)  # the share of what is published, not of n
    assert ngsi["occupancy"] == round(min(1.0, published / capacity), 4)
    if k > 1:
        assert (ngsi["occupancyState"], ngsi["occupancyBase"]) == ("coarsened", k)
    else:
        assert "occupancyState" not in ngsi and "occupancyBase" not in ngsi
    assert sign.value == published and sign.state == "open"
    # The level is the band of the published share, so it agrees with the share a client sees.
    assert api["level"] == ngsi["crowdLevel"] == band(published, capacity)
    assert sign.text == {"low": "LOW", "moderate": "MODERATE", "high": "HIGH", "very_high": "VERY HIGH"}[api["level"]]


@pytest.mark.parametrize("n", [K - 1, K, K + 1])
@pytest.mark.parametrize("zone", ["shop", "kiosk"])
def test_occupancy_is_published_at_k_people_and_withheld_below(
    live: LiveState, tmp_path: Path, n: int, zone: str
) -> None:
    count(live, zone, 0, 0, occupancy=n)
    got = public(live, tmp_path, zone)
    api, ngsi, sign = got["api"], got["ngsi"], got["sign"]
    assert api == got["sse"]
    capacity = 100 if zone == "shop" else 12
    if n < K:
        assert (api["occupancy"], api["share"], api["occupancy_state"]) == (None, None, "suppressed")
        assert "occupancy" not in ngsi
        assert sign.value is None  # never 0
        # The shop's under-k counts are all "low": the level says no more than "fewer than k". The kiosk's span
        # three bands, so its level is withheld too.
        level = "low" if zone == "shop" else "suppressed"
        assert (api["level"], ngsi["crowdLevel"]) == (level, level)
        assert sign.text == ("LOW" if zone == "shop" else "") and sign.state == (
            "open" if zone == "shop" else "fallback"
        )
    else:
        # k and k + 1 people are both published as k (rounded to a multiple of k).
        assert (api["occupancy"], api["share"], api["occupancy_state"]) == (K, round(K / capacity, 4), "coarsened")
        assert ngsi["occupancy"] == round(min(1.0, K / capacity), 4)
        assert sign.value == K
        assert api["level"] in ("low", "high", "very_high") and api["level"] == ngsi["crowdLevel"]


def walk(rng: random.Random, k: int, minutes: int) -> list[int]:
    """A zone's occupancy, a minute at a time: people enter one by one up to 4 k, leave one by one, then wander."""
    up = list(range(0, 4 * k + 1))
    path = up + up[::-1]
    n = 0
    for _ in range(minutes - len(path)):
        n = max(0, n + rng.choice((-1, 0, 1)))
        path.append(n)
    return path


def read_all(live: LiveState, zone: str) -> dict[str, Any]:
    """What the public sees of the zone now: the store's answer (= API), the SSE frame, NGSI-LD, its signs."""
    crowd = live.zone(zone)
    assert crowd is not None
    _, frame = LiveFeed(live)._build("zones", live.clock()) or (None, b"[]")
    sse = next(z for z in json.loads(frame) if z["id"] == zone)
    ngsi = crowd_flow_observed("s1", from_crowd(crowd), key_values=True)
    signs = {}
    for did in ("p" if zone == "shop" else "pk", "both"):
        display = live.site.display(did)
        assert display is not None
        signs[did] = render(display, gather(live.site, live, display, live.clock())).value
    return {"crowd": crowd, "sse": sse, "ngsi": ngsi, "sign": signs}


@pytest.mark.parametrize("k", [2, 5, 10, 25])
def test_a_zone_read_every_minute_never_shows_two_occupancies_fewer_than_k_apart(clock: FakeClock, k: int) -> None:
    """People enter one by one (and leave, and wander); every read's published figures, pairwise, differ by 0 or k+.

    The exact estimate would let two reads a minute apart subtract into one person (23, then 24). The published
    occupancy, the people a share stands for, and a sign's number (one zone, or the sum of two) are multiples of
    k: any two of them differ by 0 or at least k people. A withheld value is null (absent in NGSI-LD), never 0.
    """
    live = LiveState(make_site(k=k), clock)
    kiosk = k + k // 2 - (1 if k % 2 == 0 else 0)  # the last count rounded down to k: the sign sums k for it
    seen: dict[str, set[int]] = {"occupancy": set(), "share": set(), "ngsi": set(), "p": set(), "both": set()}
    for n in walk(random.Random(k), k, minutes=12 * k + 60):
        clock.advance(60)
        count(live, "shop", 0, 0, occupancy=n)
        count(live, "kiosk", 0, 0, occupancy=kiosk)
        got = read_all(live, "shop")
        crowd, sse, ngsi, sign = got["crowd"], got["sse"], got["ngsi"], got["sign"]
        assert sse == crowd.model_dump(mode="json")
        if n < k:
            assert (crowd.occupancy, crowd.share, crowd.occupancy_state) == (None, None, "suppressed")
            assert "occupancy" not in ngsi and ngsi["occupancyState"] == "suppressed"
            assert sign == {"p": None, "both": None}  # withheld, not 0
            continue
        assert crowd.occupancy is not None and crowd.share is not None and crowd.occupancy_state == "coarsened"
        assert crowd.occupancy >= k and abs(crowd.occupancy - n) <= k / 2  # the nearest multiple of k
        seen["occupancy"].add(crowd.occupancy)
        seen["share"].add(round(crowd.share * 100))  # the people the share stands for (capacity 100)
        seen["ngsi"].add(round(ngsi["occupancy"] * 100))
        assert sign["p"] is not None and sign["both"] is not None
        seen["p"].add(sign["p"])
        seen["both"].add(sign["both"])
        assert sign["both"] == crowd.occupancy + k  # the sum of the published values (the kiosk's is k)
    assert len(seen["occupancy"]) >= 4  # the walk crossed several rounding steps
    for name, values in seen.items():
        for a, b in itertools.combinations(sorted(values), 2):
            assert b - a >= k, (name, a, b)  # never 1 .. k - 1 people apart


def play_hour(live: LiveState, clock: FakeClock, quarters: list[tuple[int, int] | None]) -> None:
    """The shop's four quarters from 12:00, one count (entries, exits) a minute into each (None: nothing heard),
    then a 0/0 count at 13:01 so the hour 12:00-13:00 is the last completed one."""
    for q in quarters:
        clock.advance(60)
        if q is not None:
            count(live, "shop", *q, occupancy=50)
        clock.advance(14 * 60)
    clock.advance(60)  # 13:01
    count(live, "shop", 0, 0, occupancy=50)


@pytest.mark.parametrize(
    ("quarters", "state"),
    [
        ([(12, 0), (12, 0), (3, 0), None], "suppressed"),  # 27 people, but hour - quarters = the hidden 3
        ([(12, 0), (12, 0), (5, 0), (6, 0)], "ok"),  # the two hidden quarters hold 11 together
        ([(12, 0), (12, 0), (12, 0), None], "ok"),  # nothing hidden
        ([(3, 0), (3, 0), (3, 0), None], "suppressed"),  # 9 in the hour
        ([(3, 0), (3, 0), (3, 0), (1, 0)], "ok"),  # 10 in the hour, every quarter hidden: they hold 10
    ],
)
def test_the_hour_is_withheld_when_it_would_reveal_its_withheld_quarters(
    live: LiveState, clock: FakeClock, quarters: list[tuple[int, int] | None], state: str
) -> None:
    play_hour(live, clock, quarters)
    zone = live.zone("shop")
    assert zone is not None
    hour = zone.last_1h
    assert (hour.start, hour.end, hour.state) == (T0, T0 + timedelta(hours=1), state)
    total = sum(q[0] for q in quarters if q is not None)
    assert hour.entries == (total if state == "ok" else None)


#: The hour's four quarters ((entries, exits); None: nothing heard) -> the hour's entries and exits as shown
#: (None: withheld), k = 10. A direction of the hour is shown only if it reaches k and the quarters of the hour
#: whose same direction was not shown together hold at least k of it (or there are none): else hour minus shown
#: quarters would reveal them, a withheld 0 included.
HOURS = [
    ([(30, 2), (30, 2), (30, 2), (30, 2)], 120, None),  # 8 exits in the hour: under k
    ([(30, 4), (30, 4), (30, 4), None], 90, 12),  # no quarter showed its exits; together 12
    ([(30, 12), (30, 3), (30, 0), None], 90, None),  # 15 exits minus the shown 12 = the withheld 3
    ([(30, 12), (30, 5), (30, 6), None], 90, 23),  # the withheld 5 + 6 = 11 exits: at least k
    ([(30, 12), (30, 12), (30, 0), (30, 0)], 120, None),  # 24 minus the shown 24 would reveal the withheld 0s
    ([(12, 0), (12, 0), (5, 0), (6, 0)], 35, None),  # entries: the withheld 5 + 6 = 11; no exit at all
    ([(12, 0), (12, 0), (9, 1), None], None, None),  # entries: 33 minus the shown 24 = the withheld 9
    ([(15, 15), (15, 15), (15, 15), (15, 15)], 60, 60),  # every quarter shown whole
]  # fmt: skip


@pytest.mark.parametrize(("quarters", "entries", "exits"), HOURS)
def test_each_direction_of_the_hour_is_withheld_when_it_would_reveal_its_withheld_quarters(
    live: LiveState,
    clock: FakeClock,
    tmp_path: Path,
    quarters: list[tuple[int, int] | None],
    entries: int | None,
    exits: int | None,
) -> None:
    play_hour(live, clock, quarters)
    got = public(live, tmp_path, "shop")
    assert got["api"] == got["sse"]
    hour = got["api"]["last_1h"]
    withheld = [p for p, v in (("entries", entries), ("exits", exits)) if v is None]
    assert (hour["start"], hour["state"]) == ("2026-05-04T12:00:00Z", "ok")
    assert (hour["entries"], hour["exits"], hour["withheld"]) == (entries, exits, withheld)


def test_answers_a_minute_apart_never_subtract_into_fewer_than_k_people(live: LiveState, clock: FakeClock) -> None:
    """Two and a half hours of a quiet zone, a few people a minute, read every minute as the SSE would push it.

    With sliding windows, consecutive answers differ by one minute's crossings (0-2 people). Aligned: a window
    is either the same as a minute ago, with the same figures, or the next one, disjoint from it; every
    published window rests on k people; and an hour minus its published quarters is nothing or k people.
    """
    rng = random.Random(14)
    answers = []
    quarters: dict[datetime, tuple[str, int | None, int | None]] = {}  # what each quarter published, by start
    truth: dict[datetime, tuple[int, int]] = {}  # the entries and exits heard in each quarter
    for _ in range(150):
        clock.advance(60)
        towards, away = int(rng.random() < 0.5), int(rng.random() < 0.2)
        count(live, "shop", towards, away, occupancy=50)
        start = datetime.fromtimestamp(clock.now.timestamp() // 900 * 900, UTC)
        held = truth.get(start, (0, 0))
        truth[start] = (held[0] + towards, held[1] + away)
        zone = live.zone("shop")
        assert zone is not None
        answers.append(zone)
        q = zone.last_15m
        quarters[q.start] = (q.state, q.entries, q.exits)
    states = {state for state, _, _ in quarters.values()}
    assert {"ok", "suppressed"} <= states  # the stream is quiet enough to need the rule, busy enough to pass it
    for a, b in itertools.pairwise(answers):
        for wa, wb in ((a.last_15m, b.last_15m), (a.last_1h, b.last_1h)):
            assert wa == wb or wb.start >= wa.end, (wa, wb)  # the same window, or one that does not overlap
    for zone in answers:
        for w in (zone.last_15m, zone.last_1h):
            heard = [v for s, v in truth.items() if w.start <= s < w.end]
            if w.state != "ok":
                assert (w.entries, w.exits, w.withheld) == (None, None, [])
                continue
            assert sum(e + x for e, x in heard) >= K
            for i, (name, value) in enumerate((("entries", w.entries), ("exits", w.exits))):
                assert (value is None) == (name in w.withheld)
                assert value is None or (value >= K and value == sum(v[i] for v in heard))
        hour = zone.last_1h
        for i, value in enumerate((hour.entries, hour.exits)):
            if hour.state == "ok" and value is not None:  # the hour minus its shown quarters, direction by direction
                seen = [quarters.get(hour.start + timedelta(minutes=m)) for m in (0, 15, 30, 45)]
                shown = sum(s[1 + i] or 0 for s in seen if s is not None and s[0] == "ok")
                assert value - shown == 0 or value - shown >= K, (hour, seen)


def test_the_hour_follows_the_sites_clock(clock: FakeClock) -> None:
    """India is UTC+5:30: its hours end at :30 UTC, its quarter hours on UTC's (the same for every zone today)."""
    live = LiveState(make_site("Asia/Kolkata"), clock)
    clock.advance(40 * 60)  # 12:40 UTC = 18:10 in Kolkata
    count(live, "shop", 0, 0, occupancy=50)
    zone = live.zone("shop")
    assert zone is not None
    assert (zone.last_1h.start, zone.last_1h.end) == (T0 - timedelta(minutes=30), T0 + timedelta(minutes=30))
    assert (zone.last_15m.start, zone.last_15m.end) == (T0 + timedelta(minutes=15), T0 + timedelta(minutes=30))


def test_an_interval_replayed_into_a_completed_quarter_counts(live: LiveState, clock: FakeClock) -> None:
    """Completed quarters are summed once and kept; one heard late (history loaded after a gap) is not lost."""
    clock.advance(60)
    count(live, "shop", 5, 0, occupancy=50)
    clock.advance(15 * 60)
    count(live, "shop", 0, 0, occupancy=50)
    zone = live.zone("shop")
    assert zone is not None and zone.last_15m.state == "suppressed"  # 5 people, and now summed
    heard = (T0 + timedelta(minutes=10)).timestamp()
    assert live.zones.add("shop", "cam1", "door", "late000001", heard, 6, 0)
    zone = live.zone("shop")
    assert zone is not None and (zone.last_15m.state, zone.last_15m.entries) == ("ok", 11)
