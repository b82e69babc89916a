"""Fan-out: the same batch to several sinks, acknowledged once every one of them took it.

Proof that a second store is one new file: :class:`FanOutSink` is a
:class:`gateway.sink.Sink` like any other, so the batch writer needs no change.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.sink import Entry, Sink, SinkResult


class FanOutSink:
    """Write each batch to every sink, in order; the batch counts as written once all took it.

    If one sink raises (:class:`gateway.sink.SinkUnavailable`, ``SinkFatal`` or
    a bug), the exception propagates and the writer retries the whole batch on
    all sinks, the ones that took it already too: every sink must be
    idempotent (InfluxDB is: a point's key is measurement + tags + time).

    The result sums ``written`` and ``requests`` over the sinks and lists
    every sink's refusals (each with its own reason), so an entry refused by
    two stores is dead-lettered twice.
    """

    def __init__(self, *sinks: Sink) -> None:
        if not sinks:
            raise ValueError("FanOutSink needs at least one sink")
        self.sinks = sinks

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        total = SinkResult()
        for sink in self.sinks:
            result = sink.write(entries)
            total.written += result.written
            total.requests += result.requests
            total.refused.extend(result.refused)
        return total

    def close(self) -> None:
        """Close every sink, even when one fails to (the first error is raised afterwards)."""
        error: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
