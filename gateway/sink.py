"""The seam between the batch writer and a store: :class:`Sink`.

The batch writer (``gateway/pipeline.py``) hands a sink a batch of
*entries*, in receive order: validated messages (:class:`Received`, with the
site and receive time the storage contract needs) and ready-made points of
the gateway's own (:class:`contracts.storage.StoredPoint`, e.g. its stats).
The sink owns everything after that: mapping to its own format (through
:mod:`contracts.storage`, never by hand), the requests, splitting, and which
answers mean what. It reports back in a :class:`SinkResult`.

Rules every sink keeps:

* **Idempotent.** The same batch may be written again after a failure (and
  with :class:`~gateway.sink_fanout.FanOutSink`, to a store that took it
  already): an entry written twice must be stored once.
* **Retry as signalled.** Raise :class:`SinkUnavailable` when nothing is lost
  by trying again later (``retry_after_s`` if the store asked for a delay),
  :class:`SinkFatal` when a person must fix the configuration first (``fix``
  says what). The writer then waits and writes the whole batch again;
  nothing is acknowledged meanwhile. Any other exception is a bug, retried too.
* **Refuse for good, per entry.** An entry (or one of its points) that the
  store will never take is a :class:`Refused` in the result, with the index
  of the entry; the writer dead-letters it and acknowledges its message: one
  bad point never stops the line.

Implementations: ``gateway.influx.InfluxSink`` (InfluxDB) and
``gateway.sink_fanout.FanOutSink`` (the same batch to several sinks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from contracts.messages import Message
from contracts.storage import StoredPoint

#: :attr:`Refused.reason` when the storage contract could not map a message (a bug, but only this message's).
STORAGE_ERROR = "storage_error"


class Received(Protocol):
    """A validated message as the sink needs it (``gateway.pipeline.Accepted`` is one)."""

    @property
    def message(self) -> Message: ...
    @property
    def site_id(self) -> str: ...
    #: When the gateway received it (timezone-aware).
    @property
    def received_at(self) -> datetime: ...
    #: A retained copy the broker sent on subscribing, not the live publish.
    @property
    def retained(self) -> bool: ...


#: What a sink is handed: a message, or a point of the gateway's own.
Entry = Received | StoredPoint


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry (or one of its points) the store will never take.

    ``index``: into the entries written; ``reason``: the dead-letter reason
    (:data:`STORAGE_ERROR`, or the store's own, e.g. ``influx_rejected``);
    ``detail``: the store's message (at most about 300 characters);
    ``payload``: what to keep in the dead-letter file (the refused line, or the message as JSON).
    """

    index: int
    reason: str
    detail: str
    payload: bytes


@dataclass(slots=True)
class SinkResult:
    """``written`` points stored, ``refused`` ones never storable, in ``requests`` requests to the store."""

    written: int = 0
    refused: list[Refused] = field(default_factory=list)
    requests: int = 0


class SinkUnavailable(Exception):
    """The store is down, overloaded or slow: nothing was dropped; write the batch again later.

    ``retry_after_s``: the delay (seconds) the store asked for, or None.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkFatal(SinkUnavailable):
    """The store refuses every write until a person fixes what ``fix`` names. Nothing was dropped."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class Sink(Protocol):
    """A store the batch writer writes to; see the module docstring for the rules."""

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        """Store ``entries``; raise :class:`SinkUnavailable` / :class:`SinkFatal` to have them written again."""
        ...

    def close(self) -> None:
        """Release connections; the sink is not written to afterwards."""
        ...
