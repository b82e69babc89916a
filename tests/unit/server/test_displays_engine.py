"""The display engine on injected live state: events, ETags, event ids across restarts, overrides, expiry."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.site import SiteConfig
from server.displays import DisplayEngine, OverrideRejected
from server.live import BayReading, LiveState

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "s1", "name": "Test"},
            "zones": [{"id": "z", "name": "Zone", "capacity": 100}],
            "parking": [
                {
                    "id": "L",
                    "name": "Lot",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "bays": {"prefix": "B", "count": 8},
                    "stale_after_s": 600,
                    "levels": [{"id": "P1", "bays": ["B001", "B002", "B003", "B004"]}],
                }
            ],
            "displays": [
                {
                    "id": "g",
                    "kind": "garage",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "lots": ["L"],
                    "stale_after_s": 30,
                    "low_threshold": 2,
                },
                {
                    "id": "lv",
                    "kind": "garage",
                    "coords": {"lat": 51.0, "lng": 13.7},
                    "levels": [{"lot": "L", "level": "P1"}],
                },
                {"id": "p", "kind": "wayfinding", "coords": {"lat": 51.0, "lng": 13.7}, "zones": ["z"]},
            ],
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> LiveState:
    return LiveState(make_site(), clock)


_n = iter(range(1, 10**9))


def bays(live: LiveState, clock: Clock, statuses: str) -> None:
    """One reading per bay now: ``f`` free, ``o`` occupied, ``-`` none."""
    for i, s in enumerate(statuses, start=1):
        if s != "-":
            status = "free" if s == "f" else "occupied"
            live.apply_bay("L", f"B{i:03d}", BayReading.of(status, clock(), f"r{next(_n):09d}"))


def body(engine: DisplayEngine, display_id: str) -> dict[str, Any]:
    sign = engine.sign(display_id)
    assert sign is not None
    out: dict[str, Any] = json.loads(sign.body)
    assert out["event_id"] == sign.event_id and sign.etag == f'"{sign.event_id}"'
    return out


class Running:
    """An engine running on its own event loop in a thread (as under uvicorn)."""

    def __init__(self, engine: DisplayEngine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(engine.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def sync(self, fn: Any, *args: Any) -> Any:
        async def go() -> Any:
            return fn(*args)

        return self.call(go())

    def stop(self) -> None:
        self.call(self.engine.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def make_engine(live: LiveState, tmp_path: Path) -> Iterator[Any]:
    running: list[Running] = []

    def make(
        *, tick_s: float = 3600.0, id_block: int = 1000, wall_clock: Any = None, site_live: LiveState | None = None
    ) -> Running:
        engine = DisplayEngine(
            live.site,
            site_live or live,
            tmp_path / "state" / "displays.sqlite3",
            tick_s=tick_s,
            id_block=id_block,
            wall_clock=wall_clock,
        )
        r = Running(engine)
        running.append(r)
        return r

    yield make
    for r in running:
        if r.engine.started:
            r.stop()


def test_a_sign_follows_its_bays_and_only_changes_advance_the_event_id(
    make_engine: Any, live: LiveState, clock: Clock
) -> None:
    r = make_engine()
    e = r.engine
    first = body(e, "g")
    assert (first["value"], first["text"], first["state"], first["stale"], first["trusted"]) == (
        None,
        "",
        "fallback",
        True,
        False,
    )
    assert first["data_age_s"] is None and first["mode"] == "auto" and first["override"] is None

    bays(live, clock, "ffffoooo")
    r.sync(e.refresh)
    b = body(e, "g")
    assert (b["value"], b["text"], b["state"], b["stale"], b["trusted"], b["trust"]) == (
        4,
        "4",
        "open",
        False,
        True,
        1.0,
    )
    assert b["event_id"] > first["event_id"]
    assert b["sources"] == [
        {
            "id": "L",
            "kind": "lot",
            "value": 4,
            "capacity": 8,
            "reporting": 8,
            "fresh": True,
            "data_age_s": 0,
            "closed": False,
            "level": None,
            "suppressed": False,
        }
    ]
    lv = body(e, "lv")
    assert (lv["value"], lv["state"]) == (4, "open")

    # Time passes, nothing else changes: data_age_s moves, the event id and updated_at stay.
    clock.step(10)
    r.sync(e.refresh)
    later = body(e, "g")
    assert later["data_age_s"] == 10 and later["event_id"] == b["event_id"] and later["updated_at"] == b["updated_at"]

    bays(live, clock, "oo------")  # 2 free: LOW
    r.sync(e.refresh)
    low = body(e, "g")
    assert (low["value"], low["text"], low["state"]) == (2, "LOW", "low") and low["event_id"] > later["event_id"]


def test_staleness_is_an_event_and_never_shows_the_old_number(make_engine: Any, live: LiveState, clock: Clock) -> None:
    r = make_engine()
    e = r.engine
    bays(live, clock, "ffffffff")
    r.sync(e.refresh)
    fresh = body(e, "g")
    assert fresh["value"] == 8
    clock.step(29.9)
    r.sync(e.refresh)
    assert body(e, "g")["value"] == 8  # just inside the limit: still shown
    clock.step(0.6)
    r.sync(e.refresh)
    stale = body(e, "g")
    assert (stale["value"], stale["text"], stale["state"], stale["stale"]) == (None, "", "fallback", True)
    assert stale["event_id"] > fresh["event_id"] and stale["data_age_s"] == 30
    # One fresh reading does not make the sign trust the seven bays it has not heard for 30 s.
    bays(live, clock, "f-------")
    r.sync(e.refresh)
    one = body(e, "g")
    assert (one["value"], one["state"], one["stale"], one["trusted"]) == (None, "fallback", False, False)
    bays(live, clock, "ffffffff")
    r.sync(e.refresh)
    back = body(e, "g")
    assert (back["value"], back["state"], back["stale"]) == (8, "open", False) and back["event_id"] > one["event_id"]


def test_trust_dropping_below_the_share_is_an_event(make_engine: Any, live: LiveState, clock: Clock) -> None:
    r = make_engine()
    e = r.engine
    bays(live, clock, "ffffff--")  # 6 of 8 report: 0.75
    r.sync(e.refresh)
    ok = body(e, "g")
    assert (ok["value"], ok["trusted"], ok["trust"]) == (6, True, 0.75)
    # Five of them go stale for the lot (600 s), while one bay keeps the data fresh.
    clock.step(601)
    bays(live, clock, "f-------")
    r.sync(e.refresh)
    low = body(e, "g")
    assert (low["state"], low["trusted"], low["stale"], low["trust"]) == ("fallback", False, False, 0.125)
    assert low["event_id"] > ok["event_id"]


def test_a_people_sign_shows_people_and_the_crowd_level(make_engine: Any, live: LiveState, clock: Clock) -> None:
    from contracts import FootfallCount

    r = make_engine()
    e = r.engine
    assert body(e, "p")["state"] == "fallback"  # nodata zone: never 0 people
    live.apply(
        FootfallCount.model_validate(
            {
                "device_id": "cam",
                "observed_at": clock(),
                "reading_id": "f000000001",
                "zone_id": "z",
                "interval_start": clock() - timedelta(seconds=60),
                "lines": [{"line_id": "l1", "towards": 50, "away": 5}],
                "occupancy": 45,
            }
        ),
        clock(),
    )
    r.sync(e.refresh)
    p = body(e, "p")
    # The zone publishes 45 people rounded to a multiple of k = 10 (a half up): the sign's number is that.
    assert (p["value"], p["text"], p["state"], p["shows"]) == (50, "MODERATE", "open", "people")


@pytest.mark.parametrize(
    ("occupancy", "value", "text", "source_value"),
    # k = 10 (the site's default); a published occupancy is rounded to a multiple of k: 11 is shown as 10.
    [(9, None, "LOW", None), (10, 10, "LOW", 10), (11, 10, "LOW", 10)],
)
def test_a_people_sign_never_shows_a_count_under_k(
    make_engine: Any,
    live: LiveState,
    clock: Clock,
    occupancy: int,
    value: int | None,
    text: str,
    source_value: int | None,
) -> None:
    from contracts import FootfallCount

    r = make_engine()
    e = r.engine
    live.apply(
        FootfallCount.model_validate(
            {"device_id": "cam", "observed_at": clock(), "reading_id": "f000000001", "zone_id": "z",
             "interval_start": clock() - timedelta(seconds=60), "lines": [{"line_id": "l1", "towards": 3, "away": 0}],
             "occupancy": occupancy}
        ),
        clock(),
    )  # fmt: skip
    r.sync(e.refresh)
    p = body(e, "p")
    # Under k the number is withheld (null, never 0) and the sign shows the level, trusted: the zone has data.
    assert (p["value"], p["text"], p["state"], p["trusted"]) == (value, text, "open", True)
    [src] = p["sources"]
    assert (src["value"], src["suppressed"], src["level"]) == (source_value, occupancy < 10, "low")


def test_a_people_sign_with_nothing_publishable_shows_its_fallback() -> None:
    from server.displays.render import SourceView, render

    display = make_site().display("p")
    assert display is not None
    hidden = SourceView("z", "zone", None, 0, 1, 1, 1.0, suppressed=True)  # under k, a zone without capacity
    shown = render(display, [hidden])
    assert (shown.value, shown.state, shown.trusted) == (None, "fallback", True)
    assert render(display, [SourceView("z", "zone", 12, 0, 1, 1, 1.0)]).text == "12"


def test_event_ids_stay_monotonic_across_restarts_and_clock_steps(
    live: LiveState, clock: Clock, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "displays.sqlite3"
    wall = [1_800_000_000.0]
    runs: list[list[int]] = []
    for _ in range(3):
        r = Running(DisplayEngine(live.site, live, path, tick_s=3600, id_block=3, wall_clock=lambda: wall[0]))
        ids = [r.engine.signs[d].event_id for d in ("g", "lv", "p")]
        for i in range(5):
            bays(live, clock, "f" * (i + 1) + "o" * (7 - i))
            r.sync(r.engine.refresh)
            ids.append(body(r.engine, "g")["event_id"])
            # The wall clock steps back between events: ids do not follow it.
            clock.step(1)
            wall[0] -= 3600
        r.stop()
        runs.append(ids)
    flat = [i for ids in runs for i in ids]
    assert flat == sorted(flat) and len(set(flat)) == len(flat), runs
    # A fresh file starts at the wall clock in ms; a restart continues above the last reserved block.
    assert runs[0][0] == 1_800_000_000_000 + 1
    assert runs[1][0] > runs[0][-1] and runs[2][0] > runs[1][-1]


def test_overrides_set_clear_expire_persist_and_are_audited(make_engine: Any, live: LiveState, clock: Clock) -> None:
    r = make_engine()
    e = r.engine
    bays(live, clock, "ffffoooo")
    r.sync(e.refresh)
    auto = body(e, "g")
    sign = e.signs["g"]

    r.sync(e.set_override, sign, "text", "EVENT", clock() + timedelta(minutes=10), "ops", "market day")
    text = body(e, "g")
    assert (text["value"], text["text"], text["mode"], text["state"]) == (None, "EVENT", "text", "text")
    assert text["override"]["by"] == "ops" and text["override"]["until"] == "2026-05-04T12:10:00Z"
    assert text["event_id"] > auto["event_id"]

    # The same mode with another text or until is a change too.
    r.sync(e.set_override, sign, "text", "EVENT", clock() + timedelta(minutes=20), "ops", None)
    assert body(e, "g")["event_id"] > text["event_id"]

    for bad, why in [
        (("text", None, clock() + timedelta(minutes=1)), "needs a text"),
        (("blank", "X", clock() + timedelta(minutes=1)), "shows no text"),
        (("blank", None, clock() - timedelta(seconds=1)), "in the future"),
        (("blank", None, clock() + timedelta(days=8)), "at most"),
    ]:
        with pytest.raises(OverrideRejected, match=why):
            r.sync(e.set_override, sign, *bad, "ops", None)

    # A restart keeps the override.
    r.stop()
    r = make_engine()
    e = r.engine
    sign = e.signs["g"]
    assert body(e, "g")["mode"] == "text"

    # It ends by itself at its until.
    clock.step(20 * 60)
    bays(live, clock, "ffffoooo")
    r.sync(e.refresh)
    after = body(e, "g")
    assert (after["mode"], after["text"], after["override"]) == ("auto", "4", None)

    r.sync(e.set_override, sign, "full", None, clock() + timedelta(minutes=1), "alice", None)
    assert body(e, "g")["text"] == "FULL"
    assert r.sync(e.clear_override, sign, "bob") is True
    assert r.sync(e.clear_override, sign, "bob") is False
    assert body(e, "g")["mode"] == "auto"

    audit = [(a.action, a.by, a.mode, a.text) for a in r.sync(e.audit, "g", 100)]
    assert audit == [
        ("clear", "bob", "full", None),
        ("set", "alice", "full", None),
        ("expire", "expiry", "text", "EVENT"),
        ("set", "ops", "text", "EVENT"),
        ("set", "ops", "text", "EVENT"),
    ]
    assert r.sync(e.audit, "lv", 100) == []


def test_subscribers_get_the_newest_state_and_a_resume_skips_nothing(
    make_engine: Any, live: LiveState, clock: Clock
) -> None:
    r = make_engine()
    e = r.engine
    sign = e.signs["g"]
    current = str(sign.event_id)
    fresh = r.sync(e.subscribe, sign, None)
    resumed = r.sync(e.subscribe, sign, current)
    behind = r.sync(e.subscribe, sign, "12")
    garbage = r.sync(e.subscribe, sign, "not a number")
    assert fresh.take() == sign.frame and behind.take() == sign.frame and garbage.take() == sign.frame
    assert resumed.take() is None  # it has this state already
    for statuses in ("ffffoooo", "ffoooooo", "fooooooo"):
        clock.step(1)
        bays(live, clock, statuses)
        r.sync(e.refresh)
    # A slow subscriber holds one frame: the newest.
    frame = resumed.take()
    assert frame is not None and frame.startswith(b"id: %d\nevent: state\ndata: {" % sign.event_id)
    assert json.loads(frame.split(b"data: ", 1)[1])["value"] == 1
    assert resumed.take() is None
    assert e.subscriber_count == 4
    for sub in (fresh, resumed, behind, garbage):
        r.sync(e.unsubscribe, sub)
    assert e.subscriber_count == 0


def test_a_live_change_recomputes_promptly_without_the_tick(make_engine: Any, live: LiveState, clock: Clock) -> None:
    r = make_engine(tick_s=3600)
    e = r.engine
    before = e.signs["g"].event_id
    thread = threading.Thread(target=bays, args=(live, clock, "ffffffff"))  # as the MQTT thread would
    thread.start()
    thread.join()
    from tests.conftest import wait_for

    wait_for(lambda: e.signs["g"].event_id > before, timeout=5, what="a prompt recompute")
    assert body(e, "g")["value"] == 8
    assert e.stats["pokes"] >= 1
