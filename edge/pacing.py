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

A rate alone does not keep the broker's queue short: at city scale 600 devices
replaying 200 readings a second each offer 120,000 a second to gateways that
drain about 1,000 on this box (bench/scale), the queue in front of the gateways
grows by minutes, confirmations arrive minutes late, devices re-send what they
think lost, and the queue fills with duplicates that the gateways store and
confirm again while nothing new is confirmed: a congestion collapse (bench/scale
README, the 10-minute broker outage). So the backlog is also *clocked by
confirmations*: :class:`ConfirmWindow` bounds how many backlog readings may wait
for the gateway at once, and sizes itself from how late confirmations come back.

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
        self._tokens = self._available(now)
        self._at = now
        granted = min(n, int(self._tokens))
        self._tokens -= granted
        return granted

    def wait_s(self) -> float:
        """Seconds until :meth:`take` can grant one token (0.0: now; always 0.0 when unlimited)."""
        if self.rate is None:
            return 0.0
        tokens = self._available(self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _available(self, now: float) -> float:
        """Tokens saved up at ``now``: the refill since the last take, at most ``burst`` (``rate`` is set)."""
        assert self.rate is not None
        return min(float(self.burst), self._tokens + (now - self._at) * self.rate)


class ConfirmWindow:
    """How many backlog readings may be out (published, not yet confirmed by the gateway) at once.

    A congestion window clocked by the gateway's confirmations, as TCP's is by
    ACKs (Jacobson 1988; RFC 5681 for slow start, additive increase and
    multiplicative decrease), with *delay* instead of loss as the congestion
    signal, as LEDBAT does for background transfers (RFC 6817): a replay is
    background traffic, and what it must not do is build the queue that live
    readings wait behind. Sizes are in readings; delays in seconds.

    * :meth:`reset` (a new connection): ``initial``, in slow start;
    * :meth:`confirmed` with ``n`` backlog readings confirmed after at most
      ``delay_s``: the *queueing* delay is ``delay_s`` minus the base delay,
      the least delay seen over the last ``BASE_HISTORY`` minutes (RFC 6817
      sec. 3.4.2: what the path takes with no queue; a loaded gateway's
      batching and a busy broker set it, not the queue). Under
      ``target_delay_s``, slow start adds ``n`` (doubling per round trip), then
      each window's worth of confirmations adds one; over it, the window halves
      (never below ``minimum``) and slow start ends, at most once per round
      trip (the delay just seen), so one late batch is one signal;
    * :meth:`timed_out` (readings re-sent): back to ``minimum``, as TCP after a
      retransmission timeout (RFC 5681 sec. 3.1).

    With N devices the broker holds at most about N x window backlog readings
    for the gateways, and the queue in front of the gateways settles near
    ``target_delay_s`` of waiting when they are the bottleneck. Raises ValueError for
    ``minimum < 1``, ``initial`` outside ``[minimum, maximum]`` or a
    non-positive ``target_delay_s``.
    """

    def __init__(
        self,
        *,
        initial: int = 8,
        minimum: int = 2,
        maximum: int = 10_000,
        target_delay_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if minimum < 1 or not minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        if target_delay_s <= 0:
            raise ValueError("target_delay_s must be positive")
        self.initial, self.minimum, self.maximum = initial, minimum, maximum
        self.target_delay_s = target_delay_s
        self._clock = clock
        self._size = float(initial)
        self.slow_start = True
        self._hold_until = 0.0
        #: Times the window was halved for delay, and cut for a re-send (bench and log).
        self.decreases = 0
        self.timeouts = 0
        #: (minute, least delay seen in it), newest last: the base delay's history.
        self._base: list[tuple[int, float]] = []

    #: Minutes of history the base delay is the minimum of (RFC 6817's BASE_HISTORY).
    BASE_HISTORY = 10

    @property
    def size(self) -> int:
        return int(self._size)

    def reset(self) -> None:
        self._size = float(self.initial)
        self.slow_start = True
        self._hold_until = 0.0

    def base_delay(self) -> float | None:
        """The least confirmation delay seen over the last :data:`BASE_HISTORY` minutes (None before any)."""
        return min((d for _, d in self._base), default=None)

    def _note_delay(self, now: float, delay_s: float) -> float:
        minute = int(now // 60)
        if self._base and self._base[-1][0] == minute:
            self._base[-1] = (minute, min(self._base[-1][1], delay_s))
        else:
            self._base.append((minute, delay_s))
        self._base = [(m, d) for m, d in self._base if m > minute - self.BASE_HISTORY]
        return delay_s - min(d for _, d in self._base)

    def confirmed(self, n: int, delay_s: float) -> None:
        if n <= 0:
            return
        now = self._clock()
        queueing = self._note_delay(now, delay_s)
        if queueing > self.target_delay_s:
            if now >= self._hold_until:
                self._size = max(float(self.minimum), self._size / 2)
                self.slow_start = False
                self._hold_until = now + delay_s
                self.decreases += 1
            return
        if self.slow_start:
            self._size += n
        else:
            self._size += n / self._size
        self._size = min(self._size, float(self.maximum))

    def timed_out(self) -> None:
        self._size = float(self.minimum)
        self.slow_start = False
        self.timeouts += 1


class ResendTimeout:
    """When an unconfirmed reading counts as overdue: RFC 6298's retransmission timeout over confirmation delays.

    ``sample(delay_s)`` takes one measured delay (published -> confirmed,
    seconds); ``value`` is ``SRTT + 4 RTTVAR`` (alpha 1/8, beta 1/4, RFC 6298
    sec. 2), never below ``floor_s`` (the configured ``confirm_timeout_s``) nor
    above ``ceiling_s``. Without samples it is ``floor_s``. A gateway working
    through a long queue thus stretches the timeout with it instead of
    drawing re-sends that only lengthen the queue.
    """

    ALPHA = 1 / 8
    BETA = 1 / 4
    K = 4

    def __init__(self, floor_s: float, ceiling_s: float) -> None:
        if not 0 < floor_s <= ceiling_s:
            raise ValueError("need 0 < floor_s <= ceiling_s")
        self.floor_s, self.ceiling_s = floor_s, ceiling_s
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, delay_s: float) -> None:
        r = max(0.0, delay_s)
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - r)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * r

    @property
    def value(self) -> float:
        if self.srtt is None:
            return self.floor_s
        return min(self.ceiling_s, max(self.floor_s, self.srtt + self.K * self.rttvar))


class PendingRows(Protocol):
    """What the pacer reads of the outbox (:class:`edge.outbox.Outbox`)."""

    @property
    def last_id(self) -> int: ...

    def pending_after(self, after_id: int, limit: int, upto: int | None = None) -> list[OutboxItem]: ...


class ReplayPacer:
    """Chooses the rows a connection publishes; see the module docstring.

    :meth:`begin` on every new connection; :meth:`next` for up to ``room``
    rows (live first, then backlog within the bucket and the ``window``);
    :meth:`rewind` to publish again from a row (a re-send after a missed
    confirmation). ``window`` None: the backlog is bounded by the rate only
    (``delivery: broker``, where nothing is confirmed).
    """

    def __init__(
        self,
        outbox: PendingRows,
        *,
        rate_per_s: float | None = None,
        burst: int = 100,
        window: ConfirmWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.window = window
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
        if self.window is not None:
            self.window.reset()

    def is_backlog(self, row: int) -> bool:
        """Whether outbox row ``row`` belongs to this connection's backlog."""
        return row <= self.boundary

    @property
    def backlog_done(self) -> bool:
        """Every backlog row has been published at least once on this connection."""
        return self._backlog_cursor >= self.boundary

    def next(self, room: int, backlog_out: int = 0) -> list[OutboxItem]:
        """Up to ``room`` rows to publish now: live rows (oldest first), then backlog rows the bucket allows,
        while ``backlog_out`` (backlog rows published and not yet confirmed) stays within the window."""
        if room <= 0:
            return []
        items = self.outbox.pending_after(self._live_cursor, room)
        if items:
            self._live_cursor = items[-1].id
            self.sent_live += len(items)
        room -= len(items)
        if self.window is not None:
            room = min(room, self.window.size - backlog_out)
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

    def wait_s(self, room: int, backlog_out: int = 0) -> float | None:
        """How long until :meth:`next` may release a row with nothing else happening, in seconds.

        ``None``: only an event can (a new row in the outbox, a PUBACK that frees ``room``, a confirmation that
        opens the window); a number: the token bucket's wait for the next backlog row (0.0: now).
        """
        if room <= 0 or self.backlog_done:
            return None
        if self.window is not None and self.window.size - backlog_out <= 0:
            return None
        return self.bucket.wait_s()

    def rewind(self, row: int) -> None:
        """Publish every pending row from ``row`` on again (backlog rows paced again, live rows at once)."""
        self._backlog_cursor = min(self._backlog_cursor, row - 1)
        self._live_cursor = min(self._live_cursor, max(row - 1, self.boundary))
