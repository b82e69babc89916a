"""The web console in a real browser, against the real server, broker and database.

The server runs under uvicorn on the Dresden demo site with real Mosquitto
and InfluxDB (the session fixtures); a simulated fleet publishes every bay,
locker compartment, a footfall interval and each device's status over MQTT,
as devices do. Headless Chromium (Debian's) loads ``/console/`` and the tests
check what a person sees: no browser console errors, the same numbers as the
API, a bay change on the page within 5 s, device health and history for an
operator key and an "operator key needed" for anonymous visitors, and an
admin override set in the page that shows on the display feed. Screenshots
of each step are kept (``tests/browser/conftest.py``).

Where the server has no lot history (``/v1/parking/lots/{id}/history``) the
app under test gets a stand-in for it (operator key, synthetic points) so the
chart's path is exercised. The zone history and alerts are checked as the
server has them: a chart (or "no history in this span") and a table (or "no
alerts") when it does, "not available on this server" when it does not. The
fleet's bay readings are also written to InfluxDB (as the gateway would), so
a real history endpoint has something to answer. A live 15-minute window with
one direction under k is played on a second server of its own (no fleet), so
the fleet's crossings never join it.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI, Query

from contracts import (
    CameraHealth,
    DeviceStatus,
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    Message,
    ParkingBayState,
    encode,
    new_reading_id,
    topics,
    utcnow,
)
from contracts.configfile import load_model
from contracts.site import SiteConfig
from contracts.storage import to_points
from district.demo import DEMO_SITE
from district.services import Service, free_port
from gateway.influx import line_protocol
from server.app import create_app
from server.auth import OperatorDep
from server.keys import add_key
from server.live import Clock
from tests.browser.conftest import Browser
from tests.conftest import mqtt_access, wait_for
from tests.integration.test_server import settings_for

pytestmark = pytest.mark.browser

SITE = load_model(DEMO_SITE, SiteConfig)
SITE_ID = SITE.site.id
#: The server's keys, one per role, as ``district keys add`` writes them (``ops`` is the admin).
KEY_NAMES = {"display": "sign-1", "operator": "operator-1", "admin": "ops"}
#: Share of each lot's bays occupied in the fleet (Centrum-Galerie nearly full, Wöhrl few left).
OCCUPIED = {
    "dresdenaltmarkt": 0.82,
    "dresdenkarstadt": 0.55,
    "dresdenwoehrlflorentinum": 0.93,
    "dresdencitycenter": 0.35,
    "dresdencentrumgalerie": 0.995,
}
#: Bays that never report (so the console shows unknown bays honestly).
SILENT = {"dresdencitycenter": 12}


# -- the server -----------------------------------------------------------------------------------------


def history_stand_in() -> APIRouter:
    """``GET /v1/parking/lots/{id}/history`` until the history endpoints land: synthetic, operator key."""
    router = APIRouter()
    totals = {lot.id: lot.total for lot in SITE.parking}

    @router.get("/v1/parking/lots/{lot_id}/history", include_in_schema=True)
    async def lot_history(
        lot_id: str,
        who: OperatorDep,
        every: Annotated[str, Query()] = "5m",
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        total = totals.get(lot_id, 100)
        step = {"5m": 300, "1h": 3600, "1d": 86400}.get(every, 300)
        to = end or datetime.now(UTC)
        frm = start or to - timedelta(days=1)
        points = []
        t = frm
        while t < to:
            hour = t.hour + t.minute / 60
            busy = 0.15 + 0.75 * max(0.0, math.sin(math.pi * (hour - 7) / 13)) if 7 <= hour <= 20 else 0.15
            occ = round(total * busy)
            points.append(
                {
                    "start": t.isoformat(),
                    "free": {"mean": total - occ, "min": max(0, total - occ - 9), "max": min(total, total - occ + 9)},
                    "occupied": {"mean": occ},
                }
            )
            t += timedelta(seconds=step)
        return {"lot_id": lot_id, "every": every, "points": points}

    return router


class _Server(uvicorn.Server):
    """uvicorn that ends the event streams as it stops (as ``district server`` does)."""

    app: FastAPI

    async def shutdown(self, sockets: Any = None) -> None:
        self.app.state.displays.close_streams()
        self.app.state.live_feed.close_streams()
        await super().shutdown(sockets)


def route_paths(app: FastAPI) -> set[str]:
    """The app's API paths (as its OpenAPI lists them), parameters written ``{}`` (names differ between branches)."""
    paths = {re.sub(r"\{[^}]*\}", "{}", path) for path in app.openapi()["paths"]}
    app.openapi_schema = None  # built again on request, with whatever is added meanwhile
    return paths


LOT_HISTORY = "/v1/parking/lots/{}/history"
ZONE_HISTORY = "/v1/zones/{}/history"
ALERTS = "/v1/alerts"


@dataclass
class Api:
    url: str
    client: httpx.Client
    prefix: str
    broker: Service
    influx_url: str
    db: str
    #: Route paths of the server itself (before any stand-in), ``{}`` for parameters.
    paths: set[str]
    #: A key per role (display, operator, admin), from the server's key file.
    keys: dict[str, str]

    def get(self, path: str, key: str | None = None) -> Any:
        r = self.client.get(path, headers={"X-API-Key": key} if key else {})
        r.raise_for_status()
        return r.json()


@contextmanager
def serve(
    mosquitto: Service,
    influxd: Service,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    seed: Callable[[str, str], None] | None = None,
    clock: Clock = utcnow,
    influx_port: int | None = None,
    **settings_kw: Any,
) -> Iterator[Api]:
    """The server on the demo site under uvicorn, with its own topic prefix, database and keys.

    ``seed(influx_url, db)`` writes history before the server starts (so its first forecast run reads it);
    ``clock`` is the server's; ``influx_port``: the server reaches InfluxDB there (a proxy that can be cut)
    instead of at ``influxd``'s own port; ``settings_kw`` are further server settings (``forecast_refresh_s``).
    """
    prefix = f"t{uuid.uuid4().hex[:10]}"
    db = f"t{uuid.uuid4().hex[:10]}"
    influx_url = f"http://{influxd.host}:{influxd.port}"
    q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{influx_url}/query", data=q, timeout=10).read()
    keyfile = tmp_path_factory.mktemp("console-keys") / "api-keys"
    keys = {role: add_key(keyfile, name, role) for role, name in KEY_NAMES.items()}  # type: ignore[arg-type]
    settings = settings_for(
        DEMO_SITE,
        prefix,
        mosquitto,
        f"http://{influxd.host}:{influx_port}" if influx_port else influx_url,
        db,
        keys_file=keyfile,
        state_dir=tmp_path_factory.mktemp("console-state"),
        **settings_kw,
    )
    if seed is not None:
        seed(influx_url, db)
    app = create_app(settings, clock=clock)
    paths = route_paths(app)
    if LOT_HISTORY not in paths:
        app.include_router(history_stand_in())
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    server.app = app
    thread = threading.Thread(target=server.run, name="uvicorn-console", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=30, what="uvicorn to start")
        assert server.started, "the app did not start"
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_for(lambda: client.get("/healthz").status_code == 200, timeout=20, what="healthz ok")
            yield Api(url, client, prefix, mosquitto, influx_url, db, paths, keys)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop"
        q = urllib.parse.urlencode({"q": f'DROP DATABASE "{db}"'}).encode()
        urllib.request.urlopen(f"{influx_url}/query", data=q, timeout=10).read()


@pytest.fixture(scope="module")
def api(mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serve(mosquitto, influxd, tmp_path_factory) as started:
        yield started


# -- the fleet -----------------------------------------------------------------------------------------------


class Fleet:
    """Publishes as the site's devices do (QoS 1), and remembers each bay's last status."""

    def __init__(self, broker: Service, prefix: str) -> None:
        self.prefix = prefix
        self.client = mqtt_access(broker).client(f"console-fleet-{uuid.uuid4().hex[:8]}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.bays: dict[tuple[str, str], str] = {}
        self.sent: list[Message] = []

    def publish(self, messages: Sequence[Message], *, retain: bool = False) -> None:
        infos = [
            self.client.publish(
                topics.build(self.prefix, SITE_ID, m.device_id, m.kind), encode(m), qos=1, retain=retain
            )
            for m in messages
        ]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
        self.sent.extend(messages)

    def store(self, influx_url: str, db: str) -> None:
        """What was published, written to InfluxDB as the gateway stores it (history for a real endpoint)."""
        lines = [
            line_protocol(p)
            for m in self.sent
            for p in to_points(m, site_id=SITE_ID, received_at=m.observed_at + timedelta(milliseconds=50))
        ]
        params = urllib.parse.urlencode({"db": db, "precision": "ns"})
        req = urllib.request.Request(f"{influx_url}/write?{params}", data="\n".join(lines).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204

    def bay(self, lot_id: str, bay_id: str, status: str) -> ParkingBayState:
        self.bays[(lot_id, bay_id)] = status
        return ParkingBayState(
            device_id=f"edge-{lot_id}",
            observed_at=utcnow(),
            reading_id=new_reading_id(),
            lot_id=lot_id,
            bay_id=bay_id,
            status=status,  # type: ignore[arg-type]
        )

    def populate(self) -> None:
        rnd = random.Random(20260504)
        now = utcnow()
        bays = []
        for lot in SITE.parking:
            ids = lot.bay_ids()
            silent = SILENT.get(lot.id, 0)
            reporting = ids[: len(ids) - silent]
            occupied = set(rnd.sample(reporting, round(len(reporting) * OCCUPIED[lot.id])))
            bays += [self.bay(lot.id, b, "occupied" if b in occupied else "free") for b in reporting]
        self.publish(bays)
        lockers = []
        for bank in SITE.lockers:
            for n, c in enumerate(bank.compartment_list()):
                status = "occupied" if n % 3 else "free"
                if n == 5:
                    status = "out_of_service"
                lockers.append(
                    LockerCompartmentState(
                        device_id=f"edge-{bank.id}",
                        observed_at=now,
                        reading_id=new_reading_id(),
                        bank_id=bank.id,
                        compartment_id=c.id,
                        status=status,  # type: ignore[arg-type]
                        door="open" if n == 1 else "closed",
                    )
                )
        self.publish(lockers)
        camera = SITE.cameras[0]
        footfall = FootfallCount(
            device_id=camera.device,
            observed_at=now,
            reading_id=new_reading_id(),
            zone_id="altmarkt",
            camera_id=camera.id,
            interval_start=now - timedelta(seconds=60),
            occupancy=640,
            lines=[LineCount(line_id=ln.id, towards=40 + 7 * i, away=31 + 5 * i) for i, ln in enumerate(camera.lines)],
        )
        self.publish([footfall])
        statuses = []
        for n, device in enumerate(SITE.devices):
            cameras = (
                [CameraHealth(camera_id=camera.id, state="ok", fps=12.4, dropped_frames=17, last_frame_age_s=0.1)]
                if device.kind == "camera_node"
                else []
            )
            statuses.append(
                DeviceStatus(
                    device_id=device.id,
                    observed_at=now,
                    reading_id=new_reading_id(),
                    state="degraded" if device.kind == "locker_controller" else "online",
                    reason="battery low" if device.kind == "locker_controller" else None,
                    uptime_s=86_400.0 + n * 3_600,
                    battery_pct=15.0 if device.kind == "locker_controller" else 96.0,
                    signal_dbm=-61.0 - n,
                    firmware="1.4.2",
                    cameras=cameras,
                    outbox_pending=0 if n else 140,
                )
            )
        self.publish(statuses)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def fleet(api: Api) -> Iterator[Fleet]:
    fleet = Fleet(api.broker, api.prefix)
    try:
        fleet.populate()
        fleet.store(api.influx_url, api.db)
        total = sum(lot.total - SILENT.get(lot.id, 0) for lot in SITE.parking)

        def reported() -> bool:
            lots = api.get("/v1/parking/lots")
            return sum(lot["free"] + lot["occupied"] for lot in lots) == total

        wait_for(reported, timeout=20, what="every published bay in the live state")
        wait_for(lambda: api.get("/v1/zones/altmarkt")["state"] == "ok", what="the footfall interval")
        wait_for(lambda: len(api.get("/v1/devices", api.keys["operator"])) >= len(SITE.devices), what="device statuses")
        yield fleet
    finally:
        fleet.close()


# -- the page ------------------------------------------------------------------------------------------------

READ_PAGE = """
const rows = (sel, fields) => [...document.querySelectorAll(sel + ' tbody tr')].map(tr => {
  const out = {id: tr.dataset.id};
  for (const f of fields) {
    const c = tr.querySelector('[data-field=' + f + ']');
    out[f] = c ? c.textContent.trim() : null;
  }
  return out;
});
return {
  lots: rows('#lots-table', ['free', 'occupied', 'unknown', 'total', 'state']),
  lockers: rows('#lockers-table', ['free', 'occupied', 'out_of_service', 'unknown', 'state']),
  zones: rows('#zones-table', ['occupancy']),
  signs: rows('#signs-table', ['text', 'state', 'mode']),
  plan_free: Object.fromEntries([...document.querySelectorAll('#plan .mark.lot')].map(
    g => [g.dataset.id, g.getAttribute('data-free')])),
  live: document.body.dataset.live,
  role: document.body.dataset.role,
};
"""


#: A chart drawn, or the page saying the span holds no history (a real endpoint on a fresh database).
CHART_OR_EMPTY = (
    "(document.querySelector('#history-chart canvas') !== null"
    " || document.querySelector('#history-chart [data-empty]') !== null)"
)


def open_console(browser: Browser, api: Api, key: str | None = None) -> None:
    """Load the console fresh (a key, if any, as a visitor would type it) and wait until it is live."""
    # A new tab is a new visitor: its sessionStorage starts empty (no key from an earlier test).
    old = browser.driver.current_window_handle
    browser.driver.switch_to.new_window("tab")
    new = browser.driver.current_window_handle
    browser.driver.switch_to.window(old)
    browser.driver.close()
    browser.driver.switch_to.window(new)
    browser.driver.get(f"{api.url}/console/")
    wait_page(
        browser,
        "document.body.dataset.ready === '1' && document.body.dataset.live === 'open'"
        " && document.querySelectorAll('#lots-table tbody tr').length > 0",
        what="the console to go live",
    )
    if key is not None:
        from selenium.webdriver.common.by import By

        field = browser.driver.find_element(By.ID, "api-key")
        field.send_keys(key)
        browser.driver.find_element(By.ID, "key-use").click()
        wait_page(browser, "document.body.dataset.role !== 'public'", what="the key to be taken")


def wait_page(browser: Browser, condition: str, timeout: float = 10.0, what: str = "") -> None:
    wait_for(lambda: browser.js(f"return !!({condition});"), timeout=timeout, what=what or condition)


def no_console_errors(browser: Browser) -> None:
    severe = browser.severe()
    assert not severe, "browser console errors:\n" + "\n".join(str(e) for e in severe)


def page(browser: Browser) -> dict[str, Any]:
    result: dict[str, Any] = browser.js(READ_PAGE)
    return result


# -- the tests -------------------------------------------------------------------------------------------------


def test_console_is_served_from_the_package_with_a_strict_policy(api: Api) -> None:
    r = api.client.get("/console", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/console/")
    r = api.client.get("/console/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    for asset in ("console.js", "console.css", "favicon.svg", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        assert api.client.get(f"/console/{asset}").status_code == 200, asset
    assert not any(p.startswith("/console") for p in api.client.get("/openapi.json").json()["paths"])


def test_the_console_loads_without_errors_and_shows_the_apis_numbers(api: Api, fleet: Fleet, browser: Browser) -> None:
    open_console(browser, api)
    lots = api.get("/v1/parking/lots")
    wait_page(browser, f"document.querySelectorAll('#lots-table tbody tr').length === {len(lots)}")
    # Nothing is published meanwhile, so the API's answers and the page must agree exactly.
    shown = page(browser)
    lots = api.get("/v1/parking/lots")
    assert [r["id"] for r in shown["lots"]] == [lot["id"] for lot in lots]
    for row, lot in zip(shown["lots"], lots, strict=True):
        assert row["free"] == str(lot["free"]) and row["occupied"] == str(lot["occupied"]), (row, lot)
        assert row["unknown"] == str(lot["unknown"]) and row["total"] == str(lot["total"]), (row, lot)
        assert row["state"] == lot["state"]
        assert shown["plan_free"][lot["id"]] == str(lot["free"])
    assert any(lot["unknown"] for lot in lots) and any(lot["state"] == "full" for lot in lots)
    for row, bank in zip(shown["lockers"], api.get("/v1/lockers"), strict=True):
        assert row["id"] == bank["id"] and row["free"] == str(bank["free"])
        assert row["out_of_service"] == str(bank["out_of_service"])
    zones = api.get("/v1/zones")
    assert any(zone["occupancy_state"] == "coarsened" for zone in zones)  # the fleet's 640 people, rounded to k
    for row, zone in zip(shown["zones"], zones, strict=True):
        assert row["id"] == zone["id"]
        # A count under k is withheld and said so (issue 14), never shown as 0; a rounded one reads "about".
        if zone["occupancy"] is None:
            expected = "< k" if zone["occupancy_state"] == "suppressed" else "–"
        else:
            expected = (
                f"about {zone['occupancy']}" if zone["occupancy_state"] == "coarsened" else str(zone["occupancy"])
            )
        assert row["occupancy"] == expected, (row, zone)
    for row, sign in zip(shown["signs"], api.get("/v1/displays"), strict=True):
        assert row["id"] == sign["display_id"] and row["text"] == (sign["text"] or "")
        assert row["mode"] == sign["mode"] and row["state"] == sign["state"]
    # An anonymous visitor: public data only, and the page says what a key would add.
    assert shown["role"] == "public"
    assert browser.js("return document.getElementById('devices-table').hidden") is True
    gate = browser.js("return document.getElementById('devices-gate').textContent")
    assert "Operator key needed" in gate
    browser.screenshot("01-public")
    no_console_errors(browser)


def test_a_bay_change_shows_on_the_page_within_5_s(api: Api, fleet: Fleet, browser: Browser) -> None:
    open_console(browser, api)
    lot_id = "dresdenkarstadt"
    bay_id = next(b for (lot, b), status in fleet.bays.items() if lot == lot_id and status == "free")
    before = api.get(f"/v1/parking/lots/{lot_id}")["free"]
    script = f"return document.querySelector('#lots-table tr[data-id=\"{lot_id}\"] [data-field=free]').textContent"
    assert browser.js(script) == str(before)
    started = time.monotonic()
    fleet.publish([fleet.bay(lot_id, bay_id, "occupied")])
    wait_for(lambda: browser.js(script) == str(before - 1), timeout=5, interval=0.02, what="the page to show it")
    took = time.monotonic() - started
    assert api.get(f"/v1/parking/lots/{lot_id}")["free"] == before - 1
    plan = f"return document.querySelector('#plan .mark.lot[data-id=\"{lot_id}\"]').getAttribute('data-free')"
    assert browser.js(plan) == str(before - 1)
    assert took < 5
    # ... and back.
    fleet.publish([fleet.bay(lot_id, bay_id, "free")])
    wait_for(lambda: browser.js(script) == str(before), timeout=5, interval=0.02, what="the page to show it back")
    browser.screenshot("02-after-bay-change")
    no_console_errors(browser)


def test_an_operator_key_sees_devices_and_history_an_anonymous_visitor_does_not(
    api: Api, fleet: Fleet, browser: Browser
) -> None:
    open_console(browser, api)
    # Anonymous: a clear "operator key needed" for devices and history, no rows, no chart.
    assert browser.js("return document.querySelectorAll('#devices-table tbody tr').length") == 0
    assert "Operator key needed" in browser.js("return document.getElementById('devices-gate').textContent")
    history_gate = "return document.getElementById('history-gate')"
    assert "Operator key needed" in browser.js(history_gate + ".textContent")
    assert browser.js("return document.querySelector('#history-chart canvas')") is None
    no_console_errors(browser)

    # A sign's key (role display): public data only, and the page says the key is not an operator's.
    open_console(browser, api, api.keys["display"])
    wait_page(browser, "document.body.dataset.role === 'display'")
    assert "not an operator key" in browser.js("return document.getElementById('devices-gate').textContent")
    assert browser.js("return document.querySelectorAll('#devices-table tbody tr').length") == 0
    no_console_errors(browser)

    open_console(browser, api, api.keys["operator"])
    wait_page(browser, "document.body.dataset.role === 'operator'")
    assert browser.js("return document.getElementById('key-message').textContent") == 'key "operator-1"'
    wait_page(browser, f"document.querySelectorAll('#devices-table tbody tr').length === {len(SITE.devices)}")
    assert browser.js("return document.getElementById('devices-gate').hidden") is True
    devices = {d["id"]: d for d in api.get("/v1/devices", api.keys["operator"])}
    rows = browser.js(
        "return [...document.querySelectorAll('#devices-table tbody tr')].map(tr =>"
        " [tr.dataset.id, tr.querySelector('[data-field=state] .badge').textContent])"
    )
    assert {i: s for i, s in rows} == {i: d["state"] for i, d in devices.items()}
    assert "degraded" in {s for _, s in rows}
    # Lot history: a chart with the answer's points (the stand-in's 24 h by 5 min, or the server's own).
    wait_page(browser, CHART_OR_EMPTY, what="the history chart")
    assert browser.js(history_gate + ".hidden") is True
    if LOT_HISTORY not in api.paths:
        assert int(browser.js("return document.getElementById('history-chart').dataset.points")) >= 280
    # An operator may not override signs or read their audit log: said so, and never asked (no 403 logged).
    assert browser.js("return document.getElementById('audit-table').hidden") is True
    assert "Admin key needed" in browser.js("return document.getElementById('audit-gate').textContent")
    browser.screenshot("03-operator")
    # Zone history: a chart where the server has it, else "not available" (and nothing asked that fails).
    browser.js(
        "const s = document.getElementById('history-of'); s.value = 'zone:altmarkt';"
        " s.dispatchEvent(new Event('change'));"
    )
    if ZONE_HISTORY in api.paths:
        wait_page(browser, CHART_OR_EMPTY + " && document.getElementById('history-gate').hidden")
    else:
        wait_page(browser, "document.getElementById('history-gate').textContent.includes('not available')")
        assert browser.js("return document.querySelector('#history-chart canvas')") is None
    no_console_errors(browser)


def test_an_admin_override_set_in_the_console_shows_on_the_display_feed(
    api: Api, fleet: Fleet, browser: Browser
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    display = "vms-wilsdruffer"
    open_console(browser, api, api.keys["admin"])
    wait_page(browser, "document.body.dataset.role === 'admin'")
    browser.driver.find_element(By.CSS_SELECTOR, f"#signs-table tr[data-id='{display}']").click()
    wait_page(browser, "!document.getElementById('override-form').hidden", what="the override form")
    wait_page(browser, "document.getElementById('sign-feed').dataset.mode === 'auto'", what="the sign's own feed")
    Select(browser.driver.find_element(By.ID, "ov-mode")).select_by_value("text")
    browser.driver.find_element(By.ID, "ov-text").send_keys("MARKT HEUTE")
    browser.driver.find_element(By.ID, "ov-reason").send_keys("market day")
    browser.driver.find_element(By.ID, "ov-set").click()

    sign = wait_for(
        lambda: (s := api.get(f"/v1/displays/{display}"))["mode"] == "text" and s, timeout=5, what="the override"
    )
    assert sign["text"] == "MARKT HEUTE" and sign["state"] == "text"
    assert sign["override"]["by"] == "ops" and sign["override"]["reason"] == "market day"
    # The page shows it from the sign's display feed, in the signs table, on the plan and in the audit log.
    wait_page(browser, "document.getElementById('sign-feed').dataset.text === 'MARKT HEUTE'")
    wait_page(
        browser, f"document.querySelector('#signs-table tr[data-id=\"{display}\"] .led').textContent === 'MARKT HEUTE'"
    )
    wait_page(
        browser,
        f"document.querySelector('#plan .mark.sign[data-id=\"{display}\"] .value').textContent === 'MARKT HEUTE'",
    )
    wait_page(browser, "document.querySelectorAll('#audit-table tbody tr').length > 0", what="the audit log")
    assert "market day" in browser.js("return document.querySelector('#audit-table tbody tr').textContent")
    browser.screenshot("04-admin-override")

    browser.driver.find_element(By.ID, "ov-clear").click()
    wait_for(lambda: api.get(f"/v1/displays/{display}")["mode"] == "auto", timeout=5, what="the override cleared")
    wait_page(browser, "document.getElementById('sign-feed').dataset.mode === 'auto'")
    no_console_errors(browser)


def test_alerts_as_the_server_has_them(api: Api, fleet: Fleet, browser: Browser) -> None:
    """Alerts for a key where the server has them; otherwise the console says so and asks for nothing."""
    open_console(browser, api)
    if ALERTS in api.paths:
        assert "Operator key needed" in browser.js("return document.getElementById('alerts-gate').textContent")
        assert browser.js("return document.getElementById('alerts-table').hidden") is True
        # The fleet's locker controller reports a 15 % battery: an alert the page lists as the API does.
        alerts = wait_for(
            lambda: (
                [a for a in api.get(ALERTS, api.keys["operator"]) if a["kind"] == "battery_low"]
                and api.get(ALERTS, api.keys["operator"])
            ),
            what="a battery_low alert",
        )
        open_console(browser, api, api.keys["operator"])
        wait_page(browser, f"document.querySelectorAll('#alerts-table tbody tr').length === {len(alerts)}")
        shown = browser.js("return [...document.querySelectorAll('#alerts-table tbody tr')].map(tr => tr.dataset.id)")
        assert sorted(shown) == sorted(a["id"] for a in alerts)
        pill = browser.js("return document.getElementById('alert-count').textContent")
        assert pill.startswith(f"{len(alerts)} alert")
        battery = next(a for a in alerts if a["kind"] == "battery_low")
        row = f'#devices-table tr[data-id="{battery["subject"]["id"]}"]'
        wait_page(browser, f"document.querySelector('{row}').classList.contains('alerted')")
        browser.screenshot("05-alerts")
    else:
        wait_page(browser, "document.getElementById('alerts-gate').textContent.includes('not available')")
        assert browser.js("return document.getElementById('alerts-table').hidden") is True
    no_console_errors(browser)


def write_influx(api: Api, body: str) -> None:
    """Line protocol straight into the test's InfluxDB (as the gateway would have stored it)."""
    req = urllib.request.Request(
        f"{api.influx_url}/write?{urllib.parse.urlencode({'db': api.db, 'precision': 'ns'})}",
        data=body.encode(), method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def store_count(api: Api, at: datetime, zone_id: str, line_id: str, *, towards: int, away: int) -> None:
    """One minute's footfall interval of the Altmarkt camera, ending at ``at``, written straight into InfluxDB
    (history the live fleet never sent: days back, or under k)."""
    interval = FootfallCount(
        device_id="edge-cam-altmarkt", observed_at=at, reading_id=new_reading_id(), zone_id=zone_id,
        camera_id="cam-altmarkt-north", interval_start=at - timedelta(seconds=60),
        lines=[LineCount(line_id=line_id, towards=towards, away=away)],
    )  # fmt: skip
    write_influx(api, "\n".join(line_protocol(p) for p in to_points(interval, site_id=SITE_ID, received_at=at)))


def store_lot_snapshots(api: Api, lot_id: str, end: datetime, *, occupied: int, minutes: int) -> None:
    """``minutes`` of a lot's per-minute snapshots ending at ``end``, ``occupied`` bays each, straight into InfluxDB
    (as the gateway writes them, ``contracts.history``)."""
    total = next(lot.total for lot in SITE.parking if lot.id == lot_id)
    write_influx(api, "\n".join(
        f"lot_occupancy,site={SITE_ID},lot={lot_id} free={total - occupied}i,occupied={occupied}i,unknown=0i"
        f" {int((end - timedelta(minutes=n)).timestamp() * 1e9)}"
        for n in range(minutes)
    ))  # fmt: skip


def test_the_analytics_panel_shows_the_apis_figures_and_suppressed_ones_as_suppressed(
    api: Api, fleet: Fleet, browser: Browser
) -> None:
    """An operator sees a zone's analytics as the API computes them; a figure under k is a word, never 0."""
    # The default week is the last 7 complete days: 20 entries in it two days ago, and one interval of 4 in the
    # week before, so week-on-week rests on 4 people (< k = 10).
    line = SITE.cameras[0].lines[0].id
    store_count(api, utcnow() - timedelta(days=2), "altmarkt", line, towards=20, away=20)
    store_count(api, utcnow() - timedelta(days=9), "altmarkt", line, towards=4, away=4)

    open_console(browser, api)
    assert "Operator key needed" in browser.js("return document.getElementById('analytics-gate').textContent")
    assert browser.js("return document.getElementById('analytics-table').hidden") is True

    open_console(browser, api, api.keys["operator"])
    browser.js(
        "const s = document.getElementById('analytics-of'); s.value = 'zone:altmarkt';"
        " s.dispatchEvent(new Event('change'));"
    )
    rows_js = (
        "return Object.fromEntries([...document.querySelectorAll('#analytics-table tbody tr')].map(tr =>"
        " [tr.dataset.figure, [tr.dataset.state, tr.children[1].textContent, tr.children[4].textContent]]))"
    )
    wait_page(browser, "document.querySelector('#analytics-table tr[data-figure=\"Week on week\"]') !== null",
              what="the analytics table")  # fmt: skip
    rows = browser.js(rows_js)
    change = api.get("/v1/analytics/zones/altmarkt/change", api.keys["operator"])
    week = change["changes"][0]
    assert week["state"] == "suppressed" and week["value"] is None
    state, value, counts = rows["Week on week"]
    assert state == "suppressed" and "suppressed" in value and "0" not in value and counts == "–"
    # The peak hour the page shows is the API's, with its mean.
    peaks = api.get("/v1/analytics/zones/altmarkt/peaks", api.keys["operator"])
    assert peaks["peak_hour"] is not None
    assert rows["Peak hour"][0] == "ok" and rows["Peak hour"][1].startswith(f"{peaks['peak_hour']}:00: ")
    assert rows["Peak hour"][1].endswith(f" {peaks['unit']}") and "((" not in rows["Peak hour"][1], rows["Peak hour"]
    # Dwell time: Little's law over the last 7 days, in minutes, standing on entries and exits.
    assert rows["Dwell time (Little's law)"][0] == "ok" and rows["Dwell time (Little's law)"][1].endswith(" min")
    assert "entries" in rows["Dwell time (Little's law)"][2]
    assert "k = 10" in browser.js("return document.getElementById('analytics-k').textContent")
    browser.screenshot("06-analytics")

    # A lot's figures rest on vehicles (the most parked at once), not people: 3 cars for an hour, under k = 10.
    store_lot_snapshots(api, "dresdenkarstadt", utcnow() - timedelta(hours=2), occupied=3, minutes=30)
    lot_peaks = api.get("/v1/analytics/lots/dresdenkarstadt/peaks", api.keys["operator"])
    assert lot_peaks["peak_hour"] is None and {c["state"] for c in lot_peaks["hours"]} == {"nodata", "suppressed"}
    browser.js(
        "const s = document.getElementById('analytics-of'); s.value = 'lot:dresdenkarstadt';"
        " s.dispatchEvent(new Event('change'));"
    )
    lot_peak = "document.querySelector('#analytics-table tr[data-figure=\"Peak hour\"][data-state=suppressed]')"
    wait_page(browser, lot_peak, what="the lot's analytics")
    rows = browser.js(rows_js)
    state, value, _ = rows["Peak hour"]
    assert state == "suppressed" and value == "suppressed: fewer than k vehicles", rows["Peak hour"]
    note = browser.js("return document.getElementById('analytics-k').textContent")
    assert note.startswith("No figure rests on fewer than k = 10 vehicles parked at once") and "people" not in note
    table = browser.js("return document.getElementById('analytics-table').textContent")
    assert "people" not in table, table
    browser.screenshot("06b-analytics-lot")
    no_console_errors(browser)


def test_a_zone_history_under_k_reads_as_suppressed_never_as_0(api: Api, fleet: Fleet, browser: Browser) -> None:
    """A zone whose last day holds 5 crossings (< k = 10): the API withholds the bucket, the page says so."""
    at = utcnow() - timedelta(hours=1)
    store_count(api, at, "prager-strasse", "pavement", towards=3, away=2)
    history = api.get("/v1/zones/prager-strasse/history?every=5m", api.keys["operator"])
    withheld = [b for b in history["buckets"] if b["state"] != "nodata"]
    assert [(b["state"], b["entries"], b["exits"], b["lines"]) for b in withheld] == [("suppressed", None, None, [])]

    open_console(browser, api, api.keys["operator"])
    browser.js(
        "const s = document.getElementById('history-of'); s.value = 'zone:prager-strasse';"
        " s.dispatchEvent(new Event('change'));"
    )
    wait_page(browser, "document.getElementById('history-k') !== null", what="the k note under the zone history")
    note = browser.js("const n = document.getElementById('history-k'); return [n.dataset.suppressed, n.textContent]")
    assert note[0] == "1" and note[1].startswith("1 bucket suppressed: fewer than k = 10 people")
    assert "never 0" in note[1]
    # Nothing is drawn (a 0 would be a line at the bottom): the page says why instead of "no history".
    assert browser.js("return document.querySelector('#history-chart canvas')") is None
    empty = browser.js("return document.querySelector('#history-chart [data-empty]').textContent")
    assert "under the privacy threshold" in empty
    browser.screenshot("07-history-suppressed")
    no_console_errors(browser)


def test_a_zone_history_part_under_k_reads_as_withheld_never_as_0(api: Api, fleet: Fleet, browser: Browser) -> None:
    """30 in and 2 out two days ago (32 crossings, k = 10): the bucket is published, its 2 exits are not.

    Two days back, so the last day's answer of the test above is left alone; this one reads the 7-day view
    (hourly), where the 5 crossings written above, if run, join this bucket and leave its exits under k.
    """
    at = utcnow() - timedelta(days=2)
    store_count(api, at, "prager-strasse", "pavement", towards=30, away=2)
    # The last day (5-minute buckets, as the test above reads): untouched, 0 or 5 crossings.
    history = api.get("/v1/zones/prager-strasse/history?every=5m", api.keys["operator"])
    assert all(b["state"] in ("nodata", "suppressed") for b in history["buckets"])
    history = api.get("/v1/zones/prager-strasse/history?every=1h", api.keys["operator"])  # the last 7 days
    (shown,) = [b for b in history["buckets"] if b["state"] in ("ok", "coarsened")]
    assert shown["entries"] in (30, 33) and (shown["exits"], shown["withheld"]) == (None, ["exits"])
    assert [(ln["entries"], ln["exits"], ln["withheld"]) for ln in shown["lines"]] == [
        (shown["entries"], None, ["exits"])
    ]

    open_console(browser, api, api.keys["operator"])
    browser.js(
        "const p = document.getElementById('history-span'); p.value = '7d'; p.dispatchEvent(new Event('change'));"
        " const s = document.getElementById('history-of'); s.value = 'zone:prager-strasse';"
        " s.dispatchEvent(new Event('change'));"
    )
    wait_page(browser, "document.getElementById('history-k') !== null && document.getElementById('history-k')"
              ".dataset.withheld === '1'", what="the k note under the zone's 7-day history")  # fmt: skip
    note = browser.js("return document.getElementById('history-k').textContent")
    assert "1 with entries, exits" in note and "< k = 10" in note and "never 0" in note
    # The entries are drawn; the exits are a series with no point (a gap, not a line at 0).
    assert browser.js("return document.querySelector('#history-chart canvas')") is not None
    labels = browser.js(
        "return [...document.querySelectorAll('#history-chart .u-legend .u-label')].map(e => e.textContent)"
    )
    assert "entries" in labels and "exits" in labels
    browser.screenshot("07b-history-part-withheld")
    no_console_errors(browser)


def test_the_history_legend_names_what_each_series_counts(api: Api, fleet: Fleet, browser: Browser) -> None:
    """A lot's history legend says "free bays (mean)", not the answer's field name ``free.mean``."""
    store_lot_snapshots(api, "dresdencitycenter", utcnow() - timedelta(hours=1), occupied=120, minutes=30)
    history = api.get("/v1/parking/lots/dresdencitycenter/history?every=5m", api.keys["operator"])
    assert any(b["occupied"]["mean"] == 120 for b in history["buckets"])

    open_console(browser, api, api.keys["operator"])
    browser.js(
        "const s = document.getElementById('history-of'); s.value = 'lot:dresdencitycenter';"
        " s.dispatchEvent(new Event('change'));"
    )
    # The lot's own chart, not the first lot's drawn on opening (the title names the lot).
    title = "document.querySelector('#history-chart .u-title')"
    wait_page(browser, f"document.querySelector('#history-chart canvas') && {title}"
              f" && {title}.textContent.startsWith('City Center')", what="the lot's history chart")  # fmt: skip
    labels = browser.js(
        "return [...document.querySelectorAll('#history-chart .u-legend .u-series:not(:first-child) .u-label')]"
        ".map(e => e.textContent)"
    )
    assert labels[:3] == ["free bays (mean)", "free bays (min)", "free bays (max)"], labels
    assert "snapshots" not in labels and "samples" not in labels, labels  # bookkeeping, not drawn
    assert "occupied bays (mean)" in labels and "bays without a reading (mean)" in labels, labels
    assert not [label for label in labels if "." in label or "_" in label], labels
    browser.screenshot("07c-history-legend")
    no_console_errors(browser)


def test_a_lot_with_no_history_in_the_span_says_so_and_draws_nothing(
    mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """A server of its own, nothing stored: the API answers every bucket with 0 snapshots and no bays, and the
    page says there is no history instead of drawing a line of 0 snapshots."""
    with serve(mosquitto, influxd, tmp_path_factory) as empty:
        history = empty.get("/v1/parking/lots/dresdencitycenter/history?every=1h", empty.keys["operator"])
        assert history["buckets"] and all(b["samples"] == 0 for b in history["buckets"]), history
        open_console(browser, empty, empty.keys["operator"])
        browser.js(
            "const s = document.getElementById('history-of'); s.value = 'lot:dresdencitycenter';"
            " s.dispatchEvent(new Event('change'));"
        )
        said = "document.querySelector('#history-chart [data-empty]')"
        wait_page(browser, f"{said} && {said}.textContent.includes('City Center')", what="'no history'")
        said_text = browser.js(f"return {said}.textContent")
        assert said_text.startswith("No history for City Center"), said_text
        assert browser.js("return document.querySelector('#history-chart canvas')") is None
        no_console_errors(browser)
        browser.driver.get("about:blank")  # no event stream left open on a server about to stop


def test_a_live_direction_under_k_reads_as_withheld_never_as_0(
    mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """12 in and 3 out in the last full quarter hour (15 crossings, k = 10): the window is published, its 3 exits
    are not, and the zones table reads "12 / < k" and a trend of "< k people".

    On a server of its own: the shared fleet's interval (141 in, 108 out) would join the quarter whenever a
    quarter hour ends between the fleet's start and this test, and no direction of it would be under k.
    """
    camera = SITE.cameras[0]
    with serve(mosquitto, influxd, tmp_path_factory) as quiet:
        cam = Fleet(quiet.broker, quiet.prefix)
        try:
            # The quarter under test is the one before now: the checks must be done before the next one ends.
            if 900 - time.time() % 900 < 45:
                time.sleep(900 - time.time() % 900 + 1)
            now = utcnow()
            quarter_end = datetime.fromtimestamp(now.timestamp() // 900 * 900, UTC)

            def interval(at: datetime, towards: tuple[int, int], away: tuple[int, int]) -> FootfallCount:
                return FootfallCount(
                    device_id=camera.device, observed_at=at, reading_id=new_reading_id(), zone_id="altmarkt",
                    camera_id=camera.id, interval_start=at - timedelta(seconds=60),
                    lines=[LineCount(line_id=ln.id, towards=t, away=a)
                           for ln, t, a in zip(camera.lines[::2], towards, away, strict=True)],
                )  # fmt: skip

            # The camera's minute now (nobody crossed): the zone's camera works, and the server has a fresh sample
            # of the camera's clock, so a minute it sends late is placed when it was counted, not when it arrived.
            cam.publish([interval(now, (0, 0), (0, 0))])
            wait_for(lambda: quiet.get("/v1/zones/altmarkt")["state"] == "ok", what="the camera's minute")
            # ... and a minute from the middle of the last full quarter hour, sent late (as after an outage).
            cam.publish([interval(quarter_end - timedelta(seconds=450), (7, 5), (2, 1))])
            zone = wait_for(
                lambda: (z := quiet.get("/v1/zones/altmarkt"))["last_15m"]["state"] != "nodata" and z,
                what="the late minute in the last quarter hour",
            )
            flow = zone["last_15m"]
            assert flow["start"] == (quarter_end - timedelta(seconds=900)).isoformat().replace("+00:00", "Z")
            assert (flow["state"], flow["entries"], flow["exits"], flow["withheld"]) == ("ok", 12, None, ["exits"])
            # The net flow would narrow the 3 exits down: no trend either.
            assert zone["state"] == "ok" and zone["trend"] == "suppressed"

            open_console(browser, quiet)
            cells = (
                "const heads = [...document.querySelectorAll('#zones-table thead th')].map(th => th.textContent);"
                " const row = document.querySelector('#zones-table tr[data-id=\"altmarkt\"]');"
                " return row && Object.fromEntries(heads.map((th, i) => [th, row.children[i].textContent]));"
            )
            row = wait_for(lambda: browser.js(cells), what="the Altmarkt row")
            assert row["In / out, last full 15 min"] == "12 / < k", row
            assert row["Trend"] == "< k people", row
            # Nothing moved meanwhile: the page shows the quarter the API answered for.
            assert quiet.get("/v1/zones/altmarkt")["last_15m"] == flow
            browser.screenshot("08-live-direction-under-k")
            no_console_errors(browser)
            browser.driver.get("about:blank")  # no event stream left open on a server about to stop
        finally:
            cam.close()


def test_a_device_the_site_does_not_list_reads_as_such_and_the_gateway_as_the_gateway(
    api: Api, fleet: Fleet, browser: Browser
) -> None:
    """The gateway's own status (firmware ``district-gateway ...``) and a stray device, neither in the site
    configuration: the kind column says so ("not in site config"), and the gateway is named, never "not configured".

    Last in the module: two devices more than the site lists (the operator test above counts the rows).
    """
    now = utcnow()
    fleet.publish([
        DeviceStatus(device_id=device_id, observed_at=now, reading_id=new_reading_id(), state="online", firmware=fw)
        for device_id, fw in (("district-gateway", "district-gateway 0.1.0"), ("edge-stray", "1.0.0"))
    ])  # fmt: skip

    def listed() -> bool:
        return {"district-gateway", "edge-stray"} <= {d["id"] for d in api.get("/v1/devices", api.keys["operator"])}

    wait_for(listed, what="the two statuses")
    devices = {d["id"]: d for d in api.get("/v1/devices", api.keys["operator"])}
    assert [(devices[i]["kind"], devices[i]["configured"]) for i in ("district-gateway", "edge-stray")] == [
        (None, False),
        (None, False),
    ]

    open_console(browser, api, api.keys["operator"])
    wait_page(browser, "document.querySelector('#devices-table tr[data-id=\"edge-stray\"]') !== null",
              what="the stray device's row")  # fmt: skip
    kinds = browser.js(
        "return Object.fromEntries([...document.querySelectorAll('#devices-table tbody tr')].map(tr =>"
        " [tr.dataset.id, [tr.children[1].textContent, tr.children[1].title]]))"
    )
    assert kinds["district-gateway"][0] == "gateway (not in site config)", kinds["district-gateway"]
    assert "district gateway, part of the system" in kinds["district-gateway"][1]
    assert kinds["edge-stray"][0] == "not in site config", kinds["edge-stray"]
    assert "not listed in the site configuration" in kinds["edge-stray"][1]
    # A configured device keeps the site's kind.
    assert kinds["edge-cam-altmarkt"][0] == "camera_node"
    assert not [k for k, _ in kinds.values() if "not configured" in k]
    browser.screenshot("09-devices-not-in-site-config")
    no_console_errors(browser)
