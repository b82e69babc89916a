"""What the edge publishes next after a reconnect: live readings first, the backlog after, paced.

After an outage every device comes back with a backlog in its outbox. Sent
oldest first, a reading taken *now* (a bay that just changed) waits behind
the whole backlog of its device, and the broker's queue to the gateway and to
the server fills with every device's history: live state arrives last.
(``bench/backpressure``: before this, a live reading made during a burst
reconnect of 8 devices with 5,000 readings each waited for its device's whole
backlog.)

:class:`ReplayPacer` splits the outbox at the moment a connection starts:

* **backlog**: rows already there (``id <= boundary``), published oldest
  first, at most as fast as a :class:`TokenBucket` allows
  (``mqtt.replay_rate_per_s``, ``mqtt.replay_burst``), so that thousands of
  devices replaying at once leave room for live traffic at the gateway and
  the server;
* **live**: rows written after (``id > boundary``), published first, as soon
  as there is room in the in-flight window, never paced.

Nothing is lost or reordered where it matters: every row is still published
until confirmed, with the same bytes; the server orders each device's
readings by ``seq`` (docs/live-state.md), so a replay that arrives after a
newer live reading never overwrites it; and storage is keyed by time, not by
arrival.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from edge.outbox import OutboxItem


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; starts full.

    ``take(n)`` grants up to ``n`` (possibly 0) and spends them. ``rate_per_s``
    None: unlimited. Classic token bucket (RFC 2697's single-rate idea; also
    Telegraf's and Envoy's rate limiters).
    """

    def __init__(self, rate_per_s: float | None, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive (or None: unlimited)")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self, n: int) -> int:
        if n <= 0:
            return 0
        if self.rate is None:
            return n
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        granted = min(n, int(self._tokens))
        self._tokens -= granted
        return granted


class PendingRows(Protocol):
    """What the pacer reads of the outbox (:class:`edge.outbox.Outbox`)."""

    @property
    def last_id(self) -> int: ...

    def pending_after(self, after_id: int, limit: int, upto: int | None = None) -> list[OutboxItem]: ...


class ReplayPacer:
    """Chooses the rows a connection publishes; see the module docstring.

    :meth:`begin` on every new connection; :meth:`next` for up to ``room``
    rows (live first, then backlog within the bucket); :meth:`rewind` to
    publish again from a row (a re-send after a missed confirmation).
    """

    def __init__(
        self,
        outbox: PendingRows,
        *,
        rate_per_s: float | None = None,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self.bucket = TokenBucket(rate_per_s, burst, clock)
        #: Rows up to here were in the outbox when the connection began: the backlog.
        self.boundary = 0
        self._backlog_cursor = 0
        self._live_cursor = 0
        #: Rows published from the backlog and live on this connection (for the bench and the log).
        self.sent_backlog = 0
        self.sent_live = 0

    def begin(self) -> None:
        """A new connection: everything pending now is backlog, to be walked from its oldest row."""
        self.boundary = self.outbox.last_id
        self._backlog_cursor = 0
        self._live_cursor = self.boundary
        self.bucket = TokenBucket(self._rate, self._burst, self._clock)
        self.sent_backlog = self.sent_live = 0

    @property
    def backlog_done(self) -> bool:
        """Every backlog row has been published at least once on this connection."""
        return self._backlog_cursor >= self.boundary

    def next(self, room: int) -> list[OutboxItem]:
        """Up to ``room`` rows to publish now: live rows (oldest first), then backlog rows the bucket allows."""
        if room <= 0:
            return []
        items = self.outbox.pending_after(self._live_cursor, room)
        if items:
            self._live_cursor = items[-1].id
            self.sent_live += len(items)
        room -= len(items)
        if room > 0 and not self.backlog_done:
            # Ask the bucket only for what it may spend; a short read (rows confirmed meanwhile) refunds nothing,
            # which errs on the slow side.
            allowed = self.bucket.take(room)
            if allowed:
                backlog = self.outbox.pending_after(self._backlog_cursor, allowed, upto=self.boundary)
                if backlog:
                    self._backlog_cursor = backlog[-1].id
                    self.sent_backlog += len(backlog)
                    items = items + backlog
                else:
                    self._backlog_cursor = self.boundary
        return items

    def rewind(self, row: int) -> None:
        """Publish every pending row from ``row`` on again (backlog rows paced again, live rows at once)."""
        self._backlog_cursor = min(self._backlog_cursor, row - 1)
        self._live_cursor = min(self._live_cursor, max(row - 1, self.boundary))
