"""Database health and the start-up bootstrap.

A background task pings InfluxDB every ``db_check_interval_s`` (requests never
wait on the database to learn its health). Until a bootstrap has succeeded,
each successful ping retries it, so a server that started while InfluxDB was
down fills in the bays the stream has not mentioned yet as soon as it is back.
The bootstrap cannot undo newer stream state: :class:`server.live.LiveState`
only lets a bay move forward in time.

Every live store (:attr:`server.live.LiveState.stores`: bays, locker
compartments, zones, devices) is loaded the same way, each by its own
``load_history``; what follows holds for all of them.

Gap filling: when everything starts at once (a site after a power cut), the
server may bootstrap before the gateway has stored anything and subscribe
after the edge published its first states, and then know nothing of those
bays until their next refresh. So while some configured bays have no state,
the bootstrap query runs again, with backoff (the check interval, doubling
up to :data:`GAP_FILL_MAX_S`), and stops once every bay is known.

Catch-up: after the server's MQTT link comes back (:meth:`request_catch_up`,
called from the stream), the same query runs on the next checks
(:data:`CATCH_UP_ROUNDS` times, one check interval apart, so changes the
gateway stored just after the reconnect are caught too). A row only replaces
a bay's state if it is newer in the device's order, so the catch-up can
never undo what the stream delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from common.influxdb import InfluxError
from common.retry import Backoff
from server import models
from server.influx import InfluxClient
from server.live import LiveState

log = logging.getLogger(__name__)

#: Longest wait between two gap-filling queries while bays lack any state.
GAP_FILL_MAX_S = 300.0
#: Catch-up queries after a reconnect, one check interval apart.
CATCH_UP_ROUNDS = 2


class DatabaseMonitor:
    def __init__(
        self,
        client: InfluxClient,
        live: LiveState,
        *,
        bootstrap_window_s: float,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.live = live
        self.bootstrap_window_s = bootstrap_window_s
        self.interval_s = interval_s
        self._monotonic = monotonic
        self.reachable = False
        self.error: str | None = "not checked yet"
        self.last_check: float | None = None
        self.bootstrapped = False
        self.bootstrap_bays = 0
        self.gap_fills = 0
        #: Gap-fill delays: the check interval, doubling up to GAP_FILL_MAX_S, no jitter, never reset.
        self._gap_backoff = Backoff(interval_s, GAP_FILL_MAX_S)
        self._gap_next = 0.0
        #: Catch-up rounds still due (set from the MQTT thread: an int store is atomic).
        self._catch_up_due = 0
        self.catch_ups = 0

    def request_catch_up(self) -> None:
        """The stream reconnected: re-read every bay's last state from history on the next checks."""
        self._catch_up_due = CATCH_UP_ROUNDS

    async def _load(self) -> tuple[int, int]:
        """Offer each store's last state in history to it; (rows, applied) over all stores. Raise InfluxError."""
        rows = applied = 0
        site_id = self.live.site.site.id
        for store in self.live.stores:
            n, changed = await store.load_history(self.client, site_id, self.bootstrap_window_s)
            rows += n
            applied += changed
            if changed:
                self.live.notify(store.name)
        return rows, applied

    async def catch_up(self) -> None:
        """Apply what history holds newer than the stream delivered (after a reconnect); raise InfluxError."""
        _, applied = await self._load()
        self.catch_ups += 1
        log.info("catch-up after reconnect: %d state(s) changed while the link was down", applied)

    async def bootstrap(self, *, gap_fill: bool = False) -> None:
        """Load each bay's last state; raise InfluxError."""
        started = self._monotonic()
        n_rows, applied = await self._load()
        self.bootstrapped = True
        self.bootstrap_bays = n_rows
        if gap_fill:
            self.gap_fills += 1
            self._gap_next = self._monotonic() + self._gap_backoff.next_delay()
            if applied:
                log.info("gap fill: %d state(s) the stream had not delivered", applied)
            return
        self._gap_next = self._monotonic() + self._gap_backoff.next_delay()
        log.info(
            "bootstrap: %d state(s) from the last %.0f s, %d newer than the stream's, in %.2f s",
            n_rows,
            self.bootstrap_window_s,
            applied,
            self._monotonic() - started,
        )

    async def check(self) -> None:
        """Ping once (and bootstrap if still needed); record the outcome, never raise."""
        try:
            await self.client.ping()
        except InfluxError as exc:
            if self.reachable or self.last_check is None:
                log.warning("InfluxDB unreachable: %s", exc)
            self._record(False, str(exc))
            return
        if not self.reachable:
            log.info("InfluxDB reachable")
        self._record(True, None)
        if not self.bootstrapped:
            try:
                await self.bootstrap()
            except InfluxError as exc:
                log.warning("bootstrap failed (retried on the next check): %s", exc)
                self.error = f"bootstrap: {exc}"
        elif self._catch_up_due > 0:
            self._catch_up_due -= 1
            try:
                await self.catch_up()
            except InfluxError as exc:
                self._catch_up_due += 1
                log.warning("catch-up after reconnect failed (retried on the next check): %s", exc)
        elif any(store.missing() for store in self.live.stores) and self._monotonic() >= self._gap_next:
            try:
                await self.bootstrap(gap_fill=True)
            except InfluxError as exc:
                log.warning("gap fill failed (retried later): %s", exc)

    def record_failure(self, error: str) -> None:
        self._record(False, error)

    def _record(self, reachable: bool, error: str | None) -> None:
        self.reachable = reachable
        self.error = error
        self.last_check = self._monotonic()

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # check() records failures; this is for bugs
                log.exception("database check failed")

    def health(self) -> models.DatabaseHealth:
        age = None if self.last_check is None else round(self._monotonic() - self.last_check, 3)
        return models.DatabaseHealth(
            reachable=self.reachable,
            last_check_age_s=age,
            error=self.error,
            bootstrapped=self.bootstrapped,
            bootstrap_bays=self.bootstrap_bays,
        )
