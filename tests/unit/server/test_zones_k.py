"""The k rule on the public live crowd (issue 14 item 2): /v1/zones, the SSE zones event, CrowdFlowObserved, signs.

A synthetic site with known counts, at k - 1, k and k + 1 people (k = 10, the
site's default), each figure read through every public door; then the
differencing channel the aligned windows close: answers a minute apart never
subtract into a figure resting on fewer than k people.
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
from server.live import LiveState
from server.livefeed import LiveFeed
from tests.unit.server.test_lockers_zones import get
from tests.unit.server.test_server_live import FakeClock

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)  # on a quarter hour and an hour
K = DEFAULT_K
_ids = iter(range(1, 10**9))


def make_site(timezone: str = "UTC") -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test", "timezone": timezone},
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


@pytest.mark.parametrize("n", [K - 1, K, K + 1])
def test_a_quarter_hour_is_published_at_k_people_and_withheld_below(
    live: LiveState, clock: FakeClock, tmp_path: Path, n: int
) -> None:
    clock.advance(60)
    count(live, "shop", n - 2, 2, occupancy=50)  # n people: n - 2 in, 2 out
    clock.advance(15 * 60)  # 12:16: the quarter 12:00-12:15 is complete
    count(live, "shop", 0, 0, occupancy=50)
    got = public(live, tmp_path, "shop")
    assert got["api"] == got["sse"]  # the SSE event carries the same public figures
    q = got["api"]["last_15m"]
    assert (q["start"], q["end"]) == ("2026-05-04T12:00:00Z", "2026-05-04T12:15:00Z")
    ngsi = got["ngsi"]
    assert (ngsi["dateObservedFrom"], ngsi["dateObservedTo"]) == (q["start"], q["end"])
    if n < K:
        assert (q["state"], q["entries"], q["exits"], got["api"]["trend"]) == ("suppressed", None, None, "suppressed")
        assert ngsi["peopleCountState"] == "suppressed"
        assert not {"peopleCount", "peopleCountTowards", "peopleCountAway"} & set(ngsi)
    else:
        assert (q["state"], q["entries"], q["exits"]) == ("ok", n - 2, 2)
        assert (ngsi["peopleCountTowards"], ngsi["peopleCountAway"], ngsi["peopleCount"]) == (n - 2, 2, n)
        assert "peopleCountState" not in ngsi


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
        assert (api["occupancy"], api["share"], api["occupancy_state"]) == (n, round(n / capacity, 4), "ok")
        assert ngsi["occupancy"] == round(min(1.0, n / capacity), 4)
        assert sign.value == n
        assert api["level"] in ("low", "high", "very_high") and api["level"] == ngsi["crowdLevel"]


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
    for q in quarters:
        clock.advance(60)
        if q is not None:
            count(live, "shop", *q, occupancy=50)
        clock.advance(14 * 60)
    clock.advance(60)  # 13:01
    count(live, "shop", 0, 0, occupancy=50)
    zone = live.zone("shop")
    assert zone is not None
    hour = zone.last_1h
    assert (hour.start, hour.end, hour.state) == (T0, T0 + timedelta(hours=1), state)
    total = sum(q[0] for q in quarters if q is not None)
    assert hour.entries == (total if state == "ok" else None)


def test_answers_a_minute_apart_never_subtract_into_fewer_than_k_people(live: LiveState, clock: FakeClock) -> None:
    """Two and a half hours of a quiet zone, a few people a minute, read every minute as the SSE would push it.

    With sliding windows, consecutive answers differ by one minute's crossings (0-2 people). Aligned: a window
    is either the same as a minute ago, with the same figures, or the next one, disjoint from it; every
    published window rests on k people; and an hour minus its published quarters is nothing or k people.
    """
    rng = random.Random(14)
    answers = []
    quarters: dict[datetime, tuple[str, int | None]] = {}  # what each quarter published, by start
    truth: dict[datetime, int] = {}  # the crossings heard in each quarter
    for _ in range(150):
        clock.advance(60)
        towards, away = int(rng.random() < 0.5), int(rng.random() < 0.2)
        count(live, "shop", towards, away, occupancy=50)
        start = datetime.fromtimestamp(clock.now.timestamp() // 900 * 900, UTC)
        truth[start] = truth.get(start, 0) + towards + away
        zone = live.zone("shop")
        assert zone is not None
        answers.append(zone)
        q = zone.last_15m
        quarters[q.start] = (q.state, None if q.entries is None or q.exits is None else q.entries + q.exits)
    states = {state for state, _ in quarters.values()}
    assert {"ok", "suppressed"} <= states  # the stream is quiet enough to need the rule, busy enough to pass it
    for a, b in itertools.pairwise(answers):
        for wa, wb in ((a.last_15m, b.last_15m), (a.last_1h, b.last_1h)):
            assert wa == wb or wb.start >= wa.end, (wa, wb)  # the same window, or one that does not overlap
    for zone in answers:
        for w in (zone.last_15m, zone.last_1h):
            if w.state == "ok":
                assert w.entries is not None and w.exits is not None and w.entries + w.exits >= K
                assert w.entries + w.exits == sum(v for s, v in truth.items() if w.start <= s < w.end)
            else:
                assert w.entries is None and w.exits is None
        hour = zone.last_1h
        if hour.state == "ok" and hour.entries is not None and hour.exits is not None:
            seen = [quarters.get(hour.start + timedelta(minutes=m)) for m in (0, 15, 30, 45)]
            shown = sum(v or 0 for s in seen if s is not None for state, v in [s] if state == "ok")
            remainder = hour.entries + hour.exits - shown
            assert remainder == 0 or remainder >= K, (hour, seen)


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
