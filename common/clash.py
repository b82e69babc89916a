"""Telling a client-id clash from an ordinary lost connection.

MQTT allows one connection per client id: when a second client connects with
ours, the broker closes the older connection (MQTT 5.0 §3.1.4-3). MQTT 5
brokers may say so with DISCONNECT reason 0x8E "Session taken over"
(§3.14.2.1), but Mosquitto 2.0.11 just closes the socket (its log says
"Client … already connected, closing old connection"), so the client sees an
unspecified connection loss. Two clients with one id then kick each other off
for ever, each reconnecting within a second.

:class:`ClashDetector` names the pattern: a connection that the broker closes
soon after it was accepted (``quick_s``), ``quick_drops`` times within
``window_s``, is taken as a clash. A network that flaps that fast looks the
same, and so do broker restarts in quick succession (two SIGKILLs within a
minute in tests/chaos): three quick drops are needed, a clash first means a
long backoff (the other client keeps the session meanwhile, nothing is lost),
and only a repeated one is fatal. A clustered broker's failover closes fresh
connections too (NATS 2.9 closes one whose JetStream request times out after
4 s, several times during an election: ``../shared/research/clustered-brokers.md``
§4.7), so a client that knows N broker addresses asks for ``3 × N`` quick
drops (:func:`quick_drops_for`): a real clash, reconnecting every second or
two, still reaches that within half a minute.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from common.retry import Backoff

#: MQTT 5 DISCONNECT reason "Session taken over" (MQTT 5.0 spec, 3.14.2.1).
SESSION_TAKEN_OVER = 0x8E


def quick_drops_for(addresses: int) -> int:
    """Quick drops that make a clash for a client with ``addresses`` broker addresses: 3 per address."""
    return 3 * max(1, addresses)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a lost connection means: ``clash`` (named), how long to back off (s), ``fatal`` (stop)."""

    clash: bool
    backoff_s: float = 0.0
    fatal: bool = False
    reason: str = ""


class ClashDetector:
    def __init__(
        self,
        client_id: str,
        *,
        quick_s: float = 10.0,
        quick_drops: int = 3,
        window_s: float = 60.0,
        backoff_s: float = 60.0,
        fatal_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.quick_s = quick_s
        self.quick_drops = quick_drops
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.fatal_after = fatal_after
        self._clock = clock
        self._connected_at: float | None = None
        self._drops: deque[float] = deque()
        #: Clashes seen so far.
        self.clashes = 0
        self._backoff = Backoff(backoff_s, backoff_s * 2 ** max(0, fatal_after - 1))

    def connected(self) -> None:
        self._connected_at = self._clock()

    def lost(self, reason_code: int | None) -> Verdict:
        """A connection that had been accepted was lost; ``reason_code`` from the broker's DISCONNECT, if any."""
        now = self._clock()
        lasted = None if self._connected_at is None else now - self._connected_at
        self._connected_at = None
        if reason_code == SESSION_TAKEN_OVER:
            self.clashes += 1
            return Verdict(
                True,
                fatal=True,
                reason=f"session taken over by another client with id {self.client_id!r} (MQTT 5 reason 0x8E)",
            )
        if lasted is None or lasted >= self.quick_s:
            return Verdict(False)
        self._drops.append(now)
        while self._drops and self._drops[0] < now - self.window_s:
            self._drops.popleft()
        if len(self._drops) < self.quick_drops:
            return Verdict(False)
        self._drops.clear()
        self.clashes += 1
        backoff = self._backoff.next_delay()
        return Verdict(
            True,
            backoff_s=backoff,
            fatal=self.clashes >= self.fatal_after,
            reason=(
                f"the broker closed our connection {self.quick_drops} times within {self.window_s:.0f} s, each "
                f"soon after accepting it: another client is probably using our client id {self.client_id!r} "
                "(the broker keeps one connection per id and closes the older one)"
            ),
        )
