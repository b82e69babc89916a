"""The FastAPI application factory.

``create_app(settings)`` builds the app; its lifespan starts the MQTT
subscriber (live state), opens the one shared InfluxDB client, bootstraps the
live state from InfluxDB (bounded by ``bootstrap_timeout_s``: a database that
is down delays nothing, the server starts and fills from the stream) and
starts the background database check. Shutdown undoes it in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from contracts import SiteConfig, utcnow
from contracts.configfile import load_model
from server.alerts import AlertEngine, stream_counts_of
from server.auth import Access, AccessPolicy, install
from server.console import mount_console
from server.dbmonitor import DatabaseMonitor
from server.displays import DisplayEngine
from server.errors import ApiError, api_error_handler
from server.forecast.model import holiday_calendar
from server.forecast.service import ForecastService
from server.influx import InfluxClient, open_http_client
from server.keys import KeyRing
from server.live import Clock, LiveState
from server.livefeed import LiveFeed
from server.metrics import MetricsMiddleware, ServerMetrics
from server.routes import alerts as alert_routes
from server.routes import analytics as analytics_routes
from server.routes import (
    devices,
    displays,
    feeds,
    forecast,
    guidance,
    health,
    history,
    lockers,
    metrics,
    parking,
    zones,
)
from server.routes import live as live_routes
from server.routes import site as site_routes
from server.routes import whoami as whoami_routes
from server.runtime import Runtime
from server.settings import ServerSettings
from server.stream import LiveStream

log = logging.getLogger(__name__)

DESCRIPTION = """Live guidance for a shopping district: free parking per lot, free pickup lockers
per size, and crowd levels per zone, from bay sensors, locker controllers and footfall cameras.

Live answers come from memory, kept current from the MQTT stream and
bootstrapped from InfluxDB at start; a bay not heard from recently is
`unknown`, never `free`.
"""


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (site, live state, bootstrap) out of the garbage collector's scans.

    CPython's full (generation 2) collection walks every tracked object; with a district's live state that
    took 56-116 ms in the sign bench, and one landing in an SSE fan-out to 1,000 signs pushed its p99 from
    about 100 ms to 200-288 ms. ``gc.freeze()`` (Python docs, ``gc`` module; the approach Instagram
    described for long-running servers) puts the start-up objects in a permanent generation: the pauses
    fell to 14-34 ms and the fan-out p99 to 117 ms (``bench/server/README.md``). Objects made later are
    collected as before.
    """
    gc.collect()
    gc.freeze()
    log.info("start-up heap frozen: %d object(s) left out of garbage collection", gc.get_freeze_count())


def create_app(
    settings: ServerSettings,
    *,
    site: SiteConfig | None = None,
    live: LiveState | None = None,
    clock: Clock = utcnow,
    connect: bool = True,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app. ``connect=False`` starts no MQTT or InfluxDB client (API tests inject state);
    ``freeze_heap`` (the ``district server`` process sets it) calls :func:`freeze_startup_heap` once started."""
    if site is None:
        site = load_model(settings.site_config, SiteConfig)
    if live is None:
        live = LiveState(site, clock)
    runtime = Runtime(settings=settings, live=live)
    # Checked here, so an unknown holiday calendar stops the start with its name (ForecastError).
    is_holiday = holiday_calendar(settings.holiday_country, settings.holiday_subdiv)
    display_engine = DisplayEngine(
        site,
        live,
        settings.resolved_state_dir() / f"displays-{site.site.id}.sqlite3",
        tick_s=settings.display_tick_s,
        override_max_s=settings.override_max_s,
    )
    live_feed = LiveFeed(live, display_engine)

    alerts = AlertEngine(
        live,
        topic_prefix=settings.topic_prefix,
        flap_changes=settings.alert_flap_changes,
        flap_window_s=settings.alert_flap_window_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The display engine lives longest: it serves signs whatever the broker and database do.
        async with display_engine.running(), alerts.running(), live_feed.running(), connected(app):
            if freeze_heap:
                freeze_startup_heap()
            yield

    @contextlib.asynccontextmanager
    async def connected(app: FastAPI) -> AsyncIterator[None]:
        if not connect:
            yield
            return
        # Stream first, then bootstrap: nothing published in between is missed,
        # and the bootstrap cannot overwrite anything newer (LiveState orders).
        stream = LiveStream(settings, live)
        stream.start()
        runtime.broker = stream
        alerts.publish = stream.publish_retained
        alerts.stream_counts = stream_counts_of(stream.health)
        http = open_http_client(settings)
        try:
            monitor = DatabaseMonitor(
                InfluxClient(http, settings.influx_db),
                live,
                bootstrap_window_s=settings.bootstrap_window_s,
                interval_s=settings.db_check_interval_s,
            )
            runtime.database = monitor
            stream.on_reconnect = monitor.request_catch_up
            try:
                await asyncio.wait_for(monitor.check(), settings.bootstrap_timeout_s)
            except TimeoutError:
                log.warning(
                    "InfluxDB did not answer within %.0f s; serving from the stream", settings.bootstrap_timeout_s
                )
                monitor.record_failure(f"start-up check timed out after {settings.bootstrap_timeout_s:.0f} s")
            task = asyncio.create_task(monitor.run(), name="influx-monitor")
            forecast_task = None
            if settings.forecast_refresh_s > 0:
                app.state.forecasts = ForecastService(
                    site,
                    monitor.client,
                    is_holiday=is_holiday,
                    clock=clock,
                    refresh_s=settings.forecast_refresh_s,
                )
                forecast_task = asyncio.create_task(app.state.forecasts.run(), name="forecasts")
            log.info("server ready: site %r, %d lot(s)", live.site.site.id, len(live.site.parking))
            try:
                yield
            finally:
                for t in (task, forecast_task):
                    if t is not None:
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await t
        finally:
            await http.aclose()
            stream.stop()

    app = FastAPI(
        title="District guidance API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.forecasts = None
    app.state.displays = display_engine
    app.state.live_feed = live_feed
    app.state.alerts = alerts
    keys = KeyRing(settings.admin_keys(), settings.resolved_keys_file(), reload_s=settings.keys_reload_s)
    access = Access(AccessPolicy(settings.access), keys)
    install(app, access)
    log.info("access control: %r", keys)
    # Outermost, so refused requests are counted too.
    app.state.metrics = ServerMetrics(runtime, display_engine, access)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.state.sse_heartbeat_s = settings.sse_heartbeat_s
    app.add_exception_handler(ApiError, api_error_handler)
    app.include_router(parking.router)
    app.include_router(lockers.router)
    app.include_router(zones.router)
    app.include_router(guidance.router)
    app.include_router(devices.router)
    app.include_router(alert_routes.router)
    app.include_router(health.router)
    app.include_router(feeds.router)
    app.include_router(displays.router)
    app.include_router(metrics.router)
    app.include_router(site_routes.router)
    app.include_router(live_routes.router)
    app.include_router(analytics_routes.router)
    app.include_router(whoami_routes.router)
    app.include_router(history.router)
    app.include_router(forecast.router)
    mount_console(app)
    return app
