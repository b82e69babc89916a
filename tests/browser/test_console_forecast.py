"""The console's Forecast panel in a real browser, against a real server whose forecast ran on stored history.

Five weeks of footfall and Altmarkt garage snapshots (``scripts/analytics_example.py``'s generator, 5-minute
intervals as the gateway stores them) are written into the server's own InfluxDB before it starts, so the
server's ForecastService fits them in its first run (``forecast_refresh_s`` an hour: one run per server, none
during a test). The lots other than Altmarkt have no history: ``insufficient_history``. No camera line of the
demo site counts into Prager Straße (the generator's second camera is not configured), so its forecast is
``unavailable`` whatever is stored. The page is compared with the API it reads: the zone's busiest hour and
band, the lot's expected free bays at an arrival time, words instead of a chart where there is no forecast,
a forecast made three hours ago (a server whose clock is three hours behind the browser's) said to be
stale, and a forecast kept after a failed refresh (the server's link to InfluxDB cut) said not refreshed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from contracts import utcnow
from contracts.storage import StoredPoint, to_ns
from district.services import Service
from scripts.analytics_example import generate, write
from tests.browser.conftest import Browser
from tests.browser.test_console import Api, no_console_errors, open_console, serve, wait_page
from tests.conftest import wait_for
from tests.integration.test_field_faults import CutProxy

pytestmark = pytest.mark.browser

BERLIN = ZoneInfo("Europe/Berlin")
#: Lots without any stored history (the generator writes the Altmarkt garage's only).
EMPTY_LOT = "dresdenkarstadt"


def seeder(keep: Callable[[StoredPoint, int], bool]) -> Callable[[str, str], None]:
    """Five weeks up to now (5-minute steps), the points ``keep(point, now_ns)`` accepts, written to the db."""

    def seed(influx_url: str, db: str) -> None:
        now = utcnow()
        end = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
        points = generate(end - timedelta(days=35), end, 1.0, np.random.default_rng(14))
        write(influx_url, db, [p for p in points if keep(p, to_ns(end))])

    return seed


def two_weeks_of_prager_strasse(p: StoredPoint, now_ns: int) -> bool:
    return p.tags.get("zone") != "prager-strasse" or p.time_ns >= now_ns - 14 * 86400 * 10**9


def forecast_ran(api: Api) -> bool:
    """Every lot's forecast is past ``pending`` (zones are fitted first, then lots: the first run is over)."""
    return all(api.get(f"/v1/parking/lots/{lot}/forecast")["status"] != "pending" for lot in LOTS)


LOTS = ("dresdenaltmarkt", EMPTY_LOT)


@pytest.fixture(scope="module")
def fc_api(mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serve(
        mosquitto, influxd, tmp_path_factory, seed=seeder(two_weeks_of_prager_strasse), forecast_refresh_s=3600
    ) as started:
        wait_for(lambda: forecast_ran(started), timeout=180, what="the server's first forecast run")
        yield started


def choose(browser: Browser, value: str, arrival: str | None = None) -> None:
    script = "const s = document.getElementById('forecast-of'); s.value = arguments[0];"
    if arrival is not None:
        script += " document.getElementById('forecast-arrival').value = arguments[1];"
    browser.js(script + " s.dispatchEvent(new Event('change'));", value, arrival)


def text(browser: Browser, sel: str) -> str:
    result: str = browser.js("return document.querySelector(arguments[0]).textContent", sel)
    return result


def hidden(browser: Browser, sel: str) -> bool:
    result: bool = browser.js("return document.querySelector(arguments[0]).hidden", sel)
    return result


def band(b: dict[str, Any]) -> str:
    """A band as the page writes it: the API's numbers as JavaScript prints them (12.0 as 12)."""
    return f"{b['mean']:g} (80 %: {b['lower']:g}–{b['upper']:g})"


def test_the_zone_forecast_chart_and_its_busiest_hour_are_the_apis(fc_api: Api, browser: Browser) -> None:
    fc = fc_api.get("/v1/zones/altmarkt/forecast")
    assert fc["status"] == "ok" and len(fc["points"]) == 48, fc
    open_console(browser, fc_api)
    choose(browser, "zone:altmarkt")
    wait_page(browser, "document.querySelector('#forecast-chart canvas') !== null"
              " && document.getElementById('forecast-peak') !== null", what="the zone's forecast chart")  # fmt: skip
    assert browser.js("return document.getElementById('forecast-chart').dataset.points") == "48"
    labels = browser.js(
        "return [...document.querySelectorAll('#forecast-chart .u-legend .u-label')].map(e => e.textContent)"
    )
    assert labels[1:] == ["80 % lower", "80 % upper", "expected entries"], labels

    # The busiest hour the page names is the API's highest mean (the first of equals), with its band.
    top = max(fc["points"], key=lambda p: p["entries"]["mean"])
    peak = browser.js("return {...document.getElementById('forecast-peak').dataset}")
    assert peak == {
        "start": top["start"],
        "mean": f"{top['entries']['mean']:g}",
        "lower": f"{top['entries']['lower']:g}",
        "upper": f"{top['entries']['upper']:g}",
    }
    summary = text(browser, "#forecast-summary")
    hour = datetime.fromisoformat(top["start"]).astimezone(BERLIN).strftime("%H:%M")
    assert "Busiest expected hour: " in summary and hour in summary, summary
    assert f"{band(top['entries'])} entries" in summary, (summary, top)
    made = datetime.fromisoformat(fc["made_at"]).astimezone(BERLIN).strftime("%H:%M:%S")
    since = datetime.fromisoformat(fc["history_from"]).astimezone(BERLIN).strftime("%d %b %Y")
    assert "made at " in summary and made in summary and f"from history since {since}" in summary, summary
    assert "80 % interval" in summary
    # Fresh: no staleness said.
    assert browser.js("return document.getElementById('forecast-section').dataset.stale") == "0"
    assert hidden(browser, "#forecast-stale") and hidden(browser, "#forecast-gate")
    browser.screenshot("09-forecast-zone")
    no_console_errors(browser)


def test_the_lots_expected_free_bays_at_an_arrival_are_the_apis(fc_api: Api, browser: Browser) -> None:
    open_console(browser, fc_api)
    choose(browser, "lot:dresdenaltmarkt", "60")
    wait_page(browser, "document.querySelector('#forecast-chart canvas') !== null"
              " && !document.getElementById('forecast-arrival-answer').hidden", what="the lot's forecast")  # fmt: skip
    asked = browser.js("return document.getElementById('forecast-arrival-answer').dataset.asked")
    # The arrival the page asked for is an hour from now, sent as UTC.
    assert abs(datetime.fromisoformat(asked) - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    fc = fc_api.get(f"/v1/parking/lots/dresdenaltmarkt/forecast?arrival={asked}")
    assert fc["status"] == "ok" and fc["arrival"]["free"] is not None, fc
    answer = text(browser, "#forecast-arrival-answer")
    assert answer.startswith("Expected free at your arrival (") and answer.endswith(f"): {band(fc['arrival']['free'])}")
    assert browser.js("return document.getElementById('forecast-arrival-answer').dataset.free") == (
        f"{fc['arrival']['free']['mean']:g}"
    )
    assert text(browser, "#forecast-summary").startswith(f"{fc['total']} bays in all; made at ")
    assert fc["total"] == 400
    assert browser.js("return document.getElementById('forecast-chart').dataset.points") == "96"
    labels = browser.js(
        "return [...document.querySelectorAll('#forecast-chart .u-legend .u-label')].map(e => e.textContent)"
    )
    assert labels[1:] == ["80 % lower", "80 % upper", "expected free bays"], labels
    browser.screenshot("10-forecast-lot")
    no_console_errors(browser)


@pytest.mark.parametrize(("choice", "path", "status", "words"), [
    # The demo site has no camera line into Prager Straße: no history will come, so not "yet".
    ("zone:prager-strasse", "/v1/zones/prager-strasse/forecast", "unavailable", "forecast unavailable"),
    (f"lot:{EMPTY_LOT}", f"/v1/parking/lots/{EMPTY_LOT}/forecast", "insufficient_history", "not enough history yet"),
])  # fmt: skip
def test_no_forecast_reads_as_words_never_as_a_chart(
    fc_api: Api, browser: Browser, choice: str, path: str, status: str, words: str
) -> None:
    fc = fc_api.get(path)
    assert fc["status"] == status and fc["points"] == [] and fc["detail"], fc
    open_console(browser, fc_api)
    choose(browser, choice)
    wait_page(browser, f"document.getElementById('forecast-section').dataset.status === '{status}'",
              what="the forecast's status")  # fmt: skip
    assert text(browser, "#forecast-gate") == f"{words}: {fc['detail']}"
    assert not hidden(browser, "#forecast-gate")
    # Nothing drawn and no figure: no canvas, no summary, no arrival answer.
    assert browser.js("return document.querySelector('#forecast-chart').childElementCount") == 0
    for sel in ("#forecast-summary", "#forecast-arrival-answer", "#forecast-stale"):
        assert hidden(browser, sel) and text(browser, sel) == "", sel
    browser.screenshot(f"11-forecast-{status}-{choice.split(':')[0]}")
    no_console_errors(browser)


def test_a_forecast_made_three_hours_ago_is_said_to_be_stale(
    mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """A server whose clock is three hours behind the browser's: its forecast was made three hours ago (the
    default refresh is an hour; twice that is the limit)."""
    behind = timedelta(hours=3)
    with serve(
        mosquitto, influxd, tmp_path_factory,
        seed=seeder(lambda p, _: p.tags.get("zone") == "altmarkt"),
        clock=lambda: utcnow() - behind, forecast_refresh_s=3600,
    ) as late:  # fmt: skip
        fc = wait_for(lambda: (r := late.get("/v1/zones/altmarkt/forecast"))["status"] != "pending" and r,
                      timeout=180, what="the late server's forecast")  # fmt: skip
        assert fc["status"] == "ok", fc
        age = datetime.now(UTC) - datetime.fromisoformat(fc["made_at"])
        assert timedelta(hours=2) < age < timedelta(hours=3, minutes=5), age
        open_console(browser, late)
        choose(browser, "zone:altmarkt")
        wait_page(browser, "document.getElementById('forecast-section').dataset.stale === '1'", what="'stale'")
        made = datetime.fromisoformat(fc["made_at"]).astimezone(BERLIN).strftime("%H:%M:%S")
        said = text(browser, "#forecast-stale")
        assert not hidden(browser, "#forecast-stale") and said.startswith("stale: made at ") and made in said, said
        assert browser.js("return document.getElementById('forecast-chart').classList.contains('stale')") is True
        browser.screenshot("12-forecast-stale")
        no_console_errors(browser)
        browser.driver.get("about:blank")  # no event stream left open on a server about to stop


def test_a_forecast_kept_after_a_failed_refresh_is_drawn_and_said_not_refreshed(
    mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """The link from the server to InfluxDB is cut after its first forecast (a real TCP cut): the next refreshes
    fail, the server keeps its last forecast with a ``detail``, and the page draws it, not stale, saying it was
    not refreshed and why."""
    proxy = CutProxy(influxd.port)
    try:
        with serve(
            mosquitto, influxd, tmp_path_factory,
            seed=seeder(lambda p, _: p.tags.get("zone") == "altmarkt"),
            influx_port=proxy.port, forecast_refresh_s=5,
        ) as cut:  # fmt: skip
            fc = wait_for(lambda: (r := cut.get("/v1/zones/altmarkt/forecast"))["status"] == "ok" and r,
                          timeout=180, what="the first forecast")  # fmt: skip
            proxy.cut()
            kept = wait_for(lambda: (r := cut.get("/v1/zones/altmarkt/forecast"))["detail"] and r,
                            timeout=60, what="a refresh that failed on the cut link")  # fmt: skip
            assert kept["status"] == "ok" and kept["made_at"] >= fc["made_at"] and not kept["stale"]
            open_console(browser, cut)
            choose(browser, "zone:altmarkt")
            wait_page(browser, "document.getElementById('forecast-section').dataset.status === 'ok'"
                      " && !document.getElementById('forecast-stale').hidden", what="'not refreshed'")  # fmt: skip
            said = text(browser, "#forecast-stale")
            assert said.startswith("Not refreshed: the refresh at ") and "InfluxDB failed the history query" in said
            assert f"this is the forecast made at {kept['made_at'][:19]}" in said, said
            assert browser.js("return document.getElementById('forecast-section').dataset.stale") == "0"
            assert browser.js("return document.getElementById('forecast-chart').classList.contains('stale')") is False
            assert browser.js("return document.getElementById('forecast-chart').dataset.points") == "48"
            no_console_errors(browser)
            browser.driver.get("about:blank")  # no event stream left open on a server about to stop
    finally:
        proxy.close()
