"""The live feed (``GET /v1/live/events``) and the site plan (``GET /v1/site``) on injected live state."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.demo import DEMO_SITE
from server.app import create_app
from server.live import LiveState
from server.livefeed import RESOURCES, LiveFeed, LiveSubscriber, without_volatile
from server.settings import ServerSettings
from server.siteplan import site_plan
from tests.unit.server.test_displays_api import AsgiClient, client_for, settle
from tests.unit.server.test_displays_engine import Clock, bays, make_site


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> LiveState:
    return LiveState(make_site(), clock)


@pytest.fixture
def app(live: LiveState, tmp_path: Path) -> FastAPI:
    settings = ServerSettings(site_config=tmp_path / "unused.yaml", state_dir=tmp_path / "state", sse_heartbeat_s=0.2)
    app = create_app(settings, site=live.site, live=live, connect=False)
    feed: LiveFeed = app.state.live_feed
    feed.min_interval_s = 0.05
    feed.tick_s = 0.1
    return app


def run(app: FastAPI, body: Callable[[httpx.AsyncClient, LiveFeed], Awaitable[None]]) -> None:
    async def go() -> None:
        async with client_for(app) as c:
            await body(c, app.state.live_feed)

    asyncio.run(go())


def events(client: AsgiClient) -> list[tuple[int, str, Any]]:
    """(id, event, data) of every event the client received."""
    out = []
    for block in client.body.split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and not line.startswith(b":"))
        if fields:
            out.append((int(fields[b"id"]), fields[b"event"].decode(), json.loads(fields[b"data"])))
    return out


def of(client: AsgiClient, name: str) -> list[Any]:
    return [data for _, event, data in events(client) if event == name]


def test_a_client_gets_every_summary_at_once_then_each_change(app: FastAPI, live: LiveState, clock: Clock) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        client = AsgiClient(app, "/v1/live/events")
        client.start()
        await settle(lambda: len(events(client)) == len(RESOURCES))
        start = client.sent[0]
        assert start["status"] == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        assert [e for _, e, _ in events(client)] == list(RESOURCES)
        # Each summary is what its list endpoint answers (less the ages, which move with the clock).
        assert without_volatile(of(client, "lots")[0]) == without_volatile((await c.get("/v1/parking/lots")).json())
        assert of(client, "zones")[0] == (await c.get("/v1/zones")).json()
        assert of(client, "lockers")[0] == (await c.get("/v1/lockers")).json() == []
        assert [d["display_id"] for d in of(client, "displays")[0]] == ["g", "lv", "p"]
        assert of(client, "lots")[0][0]["state"] == "nodata"

        # A bay reading: a lots event with the new counts (and the signs that sum the lot).
        bays(live, clock, "ffffoooo")
        await settle(lambda: len(of(client, "lots")) == 2)
        lot = of(client, "lots")[1][0]
        assert (lot["free"], lot["occupied"], lot["state"]) == (4, 4, "open")
        await settle(lambda: len(of(client, "displays")) == 2)
        assert of(client, "displays")[1][0]["value"] == 4
        ids = [i for i, _, _ in events(client)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

        # Time alone: ages move, nothing is sent ...
        n = len(events(client))
        clock.step(5)
        await asyncio.sleep(0.4)
        assert len(of(client, "lots")) == 2 and of(client, "zones") == of(client, "zones")[:1]
        assert len(events(client)) == n
        # ... until a summary changes with it: past the lot's stale_after_s its bays are unknown.
        clock.step(600)
        await settle(lambda: len(of(client, "lots")) == 3)
        assert of(client, "lots")[2][0]["state"] == "nodata" and of(client, "lots")[2][0]["unknown"] == 8

        client.gone.set()
        await settle(lambda: client.task is not None and client.task.done())
        assert feed.subscriber_count == 0
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sse-watch")]

    run(app, body)


def test_a_burst_of_readings_is_coalesced(app: FastAPI, live: LiveState, clock: Clock) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        feed.min_interval_s = 0.5
        feed.tick_s = 10.0
        client = AsgiClient(app, "/v1/live/events")
        client.start()
        await settle(lambda: len(events(client)) == len(RESOURCES))

        # 200 readings from the MQTT thread, as fast as it can: at most two rounds of events per second.
        def burst() -> None:
            for n in range(200):
                bays(live, clock, "fo"[n % 2] * 8)

        thread = threading.Thread(target=burst)
        started = asyncio.get_running_loop().time()
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(1.2)
        elapsed = asyncio.get_running_loop().time() - started
        sent = len(of(client, "lots")) - 1
        assert 1 <= sent <= 2 * elapsed + 1, (sent, elapsed)
        # The last state always arrives.
        assert of(client, "lots")[-1][0]["free"] == (await c.get("/v1/parking/lots")).json()[0]["free"]
        client.gone.set()
        await settle(lambda: client.task is not None and client.task.done())

    run(app, body)


def test_a_slow_client_gets_the_newest_summary_of_each_resource() -> None:
    sub = LiveSubscriber()
    sub.offer("zones", b"z1")
    sub.offer("lots", b"l1")
    sub.offer("lots", b"l2")
    assert sub.take() == b"l2z1"  # in resource order, newest of each
    assert sub.take() is None


def test_bounded_streams_and_the_server_stopping_end_the_stream(app: FastAPI) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        r = await c.get("/v1/live/events?max_s=0.3")
        assert r.status_code == 200 and r.text.startswith("id: ") and "event: lots\n" in r.text
        assert (await c.get("/v1/live/events?max_s=0")).status_code == 422
        assert feed.subscriber_count == 0

    run(app, body)

    async def stops() -> None:
        async with app.router.lifespan_context(app):
            client = AsgiClient(app, "/v1/live/events")
            client.start()
            await settle(lambda: len(events(client)) == len(RESOURCES))
        assert client.task is not None
        await asyncio.wait_for(client.task, 5)
        assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert app.state.live_feed.subscriber_count == 0

    asyncio.run(stops())


def test_openapi_documents_the_live_feed_and_the_site_plan(app: FastAPI) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        spec = (await c.get("/openapi.json")).json()
        stream = spec["paths"]["/v1/live/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        kinds = {e["properties"]["event"]["const"]: e for e in stream["schema"]["oneOf"]}
        assert set(kinds) == set(RESOURCES)
        items = kinds["lots"]["properties"]["data"]["contentSchema"]["items"]
        assert items == {"$ref": "#/components/schemas/ParkingLot"}
        for name in ("ParkingLot", "LockerBank", "ZoneCrowd", "SignState", "SitePlan"):
            assert name in spec["components"]["schemas"], name
        assert "max_s" in {p["name"] for p in spec["paths"]["/v1/live/events"]["get"]["parameters"]}
        assert spec["paths"]["/v1/site"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SitePlan"
        }
        assert not [p for p in spec["paths"] if p.startswith("/console")]

    run(app, body)


def test_the_site_plan_has_every_placed_thing_and_no_device() -> None:
    site = load_model(DEMO_SITE, SiteConfig)
    plan = site_plan(site)
    assert [lot.id for lot in plan.lots] == [lot.id for lot in site.parking]
    assert [lot.total for lot in plan.lots] == [lot.total for lot in site.parking]
    assert plan.lots[0].entrances[0].name == "Altmarkt north stairs"
    assert [lv.total for lv in plan.lots[4].levels] == [530, 529]
    assert [b.total for b in plan.lockers] == [24]
    assert [z.id for z in plan.zones] == ["altmarkt", "prager-strasse"]
    assert {d.id: d.shows for d in plan.displays} == {
        "vms-wilsdruffer": "spaces",
        "cg-deck2": "spaces",
        "wayfinding-prager": "people",
    }
    assert plan.displays[1].levels == ["dresdencentrumgalerie/P2"]
    assert plan.timezone == "Europe/Berlin"
    # The centre is the mean of every coordinate: inside the site's extent.
    lats = [lot.coords.lat for lot in site.parking] + [d.coords.lat for d in site.displays]
    assert min(lats) < plan.center.lat < max(lats)
    text = plan.model_dump_json()
    assert not [d.id for d in site.devices if d.id in text]


def test_the_site_endpoint(app: FastAPI) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        r = await c.get("/v1/site")
        assert r.status_code == 200
        plan = r.json()
        assert plan["id"] == "s1" and [lot["id"] for lot in plan["lots"]] == ["L"]
        assert plan["center"] == {"lat": 51.0, "lng": 13.7}

    run(app, body)


def test_the_console_is_served_from_the_package(app: FastAPI) -> None:
    async def body(c: httpx.AsyncClient, feed: LiveFeed) -> None:
        r = await c.get("/console")
        assert r.status_code in (307, 308) and r.headers["location"].endswith("/console/")
        r = await c.get("/console/")
        assert r.status_code == 200 and "console.js" in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-content-type-options"] == "nosniff"
        r = await c.get("/console/vendor/uPlot.iife.min.js")
        assert r.status_code == 200 and r.headers["content-security-policy"]
        assert (await c.get("/console/nope.js")).status_code == 404

    run(app, body)
