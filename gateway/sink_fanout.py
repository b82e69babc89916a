"""Fan-out: the same batch to several sinks, acknowledged once every one of them took it.

Proof that a second store is one new file: :class:`FanOutSink` is a
:class:`gateway.sink.Sink` like any other, so the batch writer needs no change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.sink import Entry, Sink, SinkResult

if TYPE_CHECKING:
    from gateway.influx import InfluxSink
    from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


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


def build_sink(settings: GatewaySettings) -> tuple[Sink, InfluxSink | None]:
    """The sink ``settings.sinks`` names, and its InfluxDB sink if any (for ``CREATE DATABASE`` and history).

    One store: its sink. Several: a :class:`FanOutSink` over them in the
    order given (a batch is acknowledged once all took it). A VictoriaMetrics
    server that says it stores duplicates gets a warning here
    (:meth:`gateway.victoria.VictoriaSink.warn_unless_deduplicating`).
    """
    from gateway.influx import InfluxSink
    from gateway.victoria import VictoriaSink

    sinks: list[Sink] = []
    influx: InfluxSink | None = None
    for name in settings.sink_names:
        if name == "influxdb":
            influx = InfluxSink.from_settings(settings)
            sinks.append(influx)
        else:
            victoria = VictoriaSink.from_settings(settings)
            victoria.warn_unless_deduplicating()
            sinks.append(victoria)
    log.info("stores: %s", settings.sinks)
    return (sinks[0] if len(sinks) == 1 else FanOutSink(*sinks)), influx
