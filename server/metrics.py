"""The server's Prometheus metrics (docs/metrics.md), served at ``GET /metrics``.

Two kinds, so the request path stays cheap:

* per request, by :class:`MetricsMiddleware` (pure ASGI, outermost): a
  latency histogram and a counter by route *template* (``/v1/parking/lots/{lot_id}``,
  never the concrete path, so ids cannot blow up the series count), method
  and status. Latency is the time to the response's headers: for an event
  stream that is how long the client waited, not how long it stayed;
* everything else is read when Prometheus scrapes (:class:`StateCollector`):
  live-state sizes per store, readings applied or refused, SSE subscribers,
  sign events and states, broker and database health, stream messages and
  rejections by reason, devices by state, access refusals and keys per role.

Each app has its own :class:`prometheus_client.CollectorRegistry` (tests build
many apps in one process). Nothing here exposes a key, a key's name, a
setting or a payload: only counts, route templates and the site id, which is
why ``/metrics`` is public by default (the access map can raise it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from server.auth import Access
    from server.displays import DisplayEngine
    from server.runtime import Runtime

#: Seconds: the API answers from memory in well under a millisecond to tens of ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The route label of a request no route answered (404s, and refusals before routing).
UNMATCHED = "unmatched"


class ServerMetrics:
    """One app's registry: the request metrics and the state collector."""

    def __init__(self, runtime: Runtime, displays: DisplayEngine, access: Access | None = None) -> None:
        # No ``*_created`` series beside every counter (process-wide switch; the gateway sets it too).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "district_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "district_http_request_duration_seconds",
            "Time from a request's arrival to its response headers, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StateCollector(runtime, displays, access))
        ProcessCollector(namespace="", registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            if len(self._children) < 10_000:  # templates x methods x statuses: bounded, but be safe
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition Prometheus asked for (``Accept``: OpenMetrics or the text format) and its type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def route_template(scope: Scope) -> str:
    """The matched route's path template, or :data:`UNMATCHED`."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED)


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no per-request objects beyond a closure)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self.metrics.observe(
                    scope["method"], route_template(scope), message["status"], time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not started:  # the server answers 500 (or the client left): count it
                self.metrics.observe(scope["method"], route_template(scope), 500, time.perf_counter() - start)
            raise


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    if value is None:
        return GaugeMetricFamily(name, doc, labels=list(labels))
    return GaugeMetricFamily(name, doc, value=value)


class StateCollector(Collector):
    """Reads the server's state when Prometheus scrapes; never on a request's path."""

    def __init__(self, runtime: Runtime, displays: DisplayEngine, access: Access | None) -> None:
        self.runtime = runtime
        self.displays = displays
        self.access = access

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: the families depend on the state

    def collect(self) -> Iterable[Metric]:
        live = self.runtime.live
        site = live.site
        info = _gauge("district_server_info", "The site this server serves (always 1).", labels=["site"])
        info.add_metric([site.site.id], 1)
        yield info

        # -- live state -------------------------------------------------------------------
        entities = _gauge("district_live_entities", "Entities with a live state, per store.", labels=["store"])
        configured = _gauge(
            "district_live_entities_configured", "Entities the site configures, per store.", labels=["store"]
        )
        for name, store in (("bays", live.bays), ("lockers", live.lockers)):
            have = store.count()
            entities.add_metric([name], have)
            configured.add_metric([name], have + store.missing())
        entities.add_metric(["zones"], sum(1 for z in live.crowd() if z.state != "nodata"))
        configured.add_metric(["zones"], len(site.zones))
        devices = live.devices()
        entities.add_metric(["devices"], len(devices))
        yield entities
        yield configured
        readings = CounterMetricFamily(
            "district_live_readings",
            "Readings offered to a store, by outcome (applied, superseded, unknown_entity, future).",
            labels=["store", "outcome"],
        )
        for name, counts in (("bays", live.bays.counts), ("lockers", live.lockers.counts)):
            for outcome, n in dict.copy(counts).items():  # one C-level copy: safe against the MQTT thread
                readings.add_metric([name, outcome], n)
        yield readings
        by_state = _gauge("district_devices", "Devices by their last reported state.", labels=["state"])
        states: dict[str, int] = {}
        for record in devices.values():
            states[record.status.state] = states.get(record.status.state, 0) + 1
        for state, n in sorted(states.items()):
            by_state.add_metric([state], n)
        yield by_state

        # -- displays ---------------------------------------------------------------------
        yield _gauge("district_sse_subscribers", "Open sign event streams (SSE).", self.displays.subscriber_count)
        yield CounterMetricFamily(
            "district_display_events",
            "Sign state changes (each a new event id, pushed to the sign's SSE subscribers).",
            value=self.displays.stats["events"],
        )
        signs = _gauge("district_display_signs", "Signs by what they show now.", labels=["state"])
        sign_states: dict[str, int] = {}
        for sign in list(self.displays.signs.values()):
            state = sign.rendered.state if sign.rendered is not None else "none"
            sign_states[state] = sign_states.get(state, 0) + 1
        for state, n in sorted(sign_states.items()):
            signs.add_metric([state], n)
        yield signs

        # -- broker and stream ------------------------------------------------------------------
        broker = self.runtime.broker.health() if self.runtime.broker is not None else None
        yield _gauge(
            "district_broker_connected",
            "1 while the MQTT subscription is connected.",
            float(bool(broker and broker.connected)),
        )
        if broker is not None and broker.last_message_age_s is not None:
            yield _gauge(
                "district_stream_last_message_age_seconds",
                "Seconds since the last MQTT message arrived.",
                broker.last_message_age_s,
            )
        yield CounterMetricFamily(
            "district_stream_messages", "MQTT messages received.", value=broker.messages if broker else 0
        )
        rejected = CounterMetricFamily(
            "district_stream_rejected", "MQTT messages rejected, by reason.", labels=["reason"]
        )
        for reason, n in sorted((broker.rejected if broker else {}).items()):
            rejected.add_metric([reason], n)
        yield rejected

        # -- database ---------------------------------------------------------------------------
        db = self.runtime.database.health() if self.runtime.database is not None else None
        yield _gauge(
            "district_database_reachable", "1 while InfluxDB answered its last ping.", float(bool(db and db.reachable))
        )
        yield _gauge(
            "district_database_bootstrapped",
            "1 once live state was loaded from InfluxDB.",
            float(bool(db and db.bootstrapped)),
        )
        if db is not None and db.last_check_age_s is not None:
            yield _gauge(
                "district_database_last_check_age_seconds", "Seconds since the last InfluxDB ping.", db.last_check_age_s
            )

        # -- access control -------------------------------------------------------------------
        if self.access is not None:
            refusals = CounterMetricFamily(
                "district_auth_refusals",
                "Requests refused by access control: missing_key, invalid_key (401), role_too_low (403).",
                labels=["reason"],
            )
            for reason in ("missing_key", "invalid_key", "role_too_low"):
                refusals.add_metric([reason], self.access.refusals.get(reason, 0))
            yield refusals
            keys = _gauge("district_api_keys", "API keys the server accepts, by role.", labels=["role"])
            for role, n in self.access.keys.roles().items():
                if role != "public":
                    keys.add_metric([role], n)
            yield keys
