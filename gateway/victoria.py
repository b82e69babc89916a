"""The gateway's VictoriaMetrics sink: the same line protocol, a store that scales out.

VictoriaMetrics takes InfluxDB line protocol on ``/write``: the single-node
server at ``http://host:8428/write`` and, in the cluster version, ``vminsert``
at ``http://host:8480/insert/<tenant>/influx/write``. ``vm_url`` is the part
before ``/write`` (``http://host:8428`` or ``http://vminsert:8480/insert/0/influx``).
:class:`VictoriaSink` is a :class:`gateway.sink.Sink` like
:class:`gateway.influx.InfluxSink`; alone or beside it in a
:class:`gateway.sink_fanout.FanOutSink` (``docs/influxdb-writes.md``,
"VictoriaMetrics").

What differs from InfluxDB, and what this module does about it
(measured on Debian's victoria-metrics 1.79.5; ``docs/influxdb-writes.md``):

* **Data model.** A line ``m,tags f1=1,f2=2`` becomes the series
  ``m_f1{tags}`` and ``m_f2{tags}``; values are float64; time is in
  milliseconds (``-influxTrimTimestamp``, default 1 ms). A *string* field is
  stored as the number 0 without a word of warning, which a dashboard would
  show as a real zero. So :func:`vm_points` keeps numeric fields as they are
  (bool as 0/1), writes each state word the contract enumerates
  (:data:`STATE_SETS`: bay and compartment ``status``, ``door``, device and
  camera ``state``) as an OpenMetrics *StateSet* (``parking_bay_status{...,
  parking_bay_status="occupied"} 1`` and 0 for every other state), and leaves
  other strings (``reading_id``, ``firmware``, ``reason``) out: they stay in
  InfluxDB.
* **Duplicates.** Without ``-dedup.minScrapeInterval`` VictoriaMetrics stores
  the same sample twice (a QoS 1 redelivery, a replay, a fan-out retry would
  all count twice). Started with ``-dedup.minScrapeInterval=1ms`` it keeps one
  sample per series and millisecond: the same point twice is stored once.
  The price: two *distinct* readings of one series within one millisecond
  keep only one (InfluxDB's nanosecond tie-breaker of ``contracts.storage``
  is below VictoriaMetrics' resolution). :meth:`VictoriaSink.dedup_interval`
  reads the server's ``/flags`` so the gateway can warn when it is off.
* **Answers.** 204 for a stored request, also when some lines could not be
  parsed or lay outside ``-retentionPeriod``: those are skipped and only
  logged by VictoriaMetrics (``vm_rows_invalid_total``), never reported to the
  writer. Our own serializer writes only valid lines (the same one InfluxDB
  gets), so what can be skipped is the out-of-retention replay.
  :func:`classify_vm_write` sorts the other answers.
* **Acknowledged is not yet durable.** VictoriaMetrics answers 204 when the
  samples are in its memory buffers; it writes them to disk a few seconds
  later. A SIGKILL 5 s after a 204 lost all 5,000 samples of the request,
  12 s after it lost none. The gateway acknowledges after the 204 (the store
  took it, as far as it will say); for the durable copy run it beside
  InfluxDB (``sinks=influxdb,victoriametrics``), whose 204 comes after
  its WAL, or a cluster with ``vminsert -replicationFactor=2``.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Protocol, get_args

import httpx

from common.influxdb import InfluxFatal, InfluxUnavailable, describe
from contracts.messages import CameraState, DeviceState, DoorState, LockerStatus, ParkingSpotStatus
from contracts.storage import (
    F_DOOR,
    F_STATUS,
    M_CAMERA_HEALTH,
    M_DEVICE_STATUS,
    M_LOCKER,
    M_PARKING_BAY,
    FieldValue,
    StoredPoint,
    to_points,
)
from gateway.influx import Action, Decision, InfluxWriter, WriteResult, line_protocol, retry_after
from gateway.sink import STORAGE_ERROR, Entry, Refused, SinkFatal, SinkResult, SinkUnavailable

log = logging.getLogger(__name__)

#: (measurement, string field) -> every state the contract allows: written as an OpenMetrics StateSet.
STATE_SETS: Mapping[tuple[str, str], tuple[str, ...]] = {
    (M_PARKING_BAY, F_STATUS): get_args(ParkingSpotStatus),
    (M_LOCKER, F_STATUS): get_args(LockerStatus),
    (M_LOCKER, F_DOOR): get_args(DoorState),
    (M_DEVICE_STATUS, "state"): get_args(DeviceState),
    (M_CAMERA_HEALTH, "state"): get_args(CameraState),
}

#: Words of a 400 answer that name the request's lines, not the request (VictoriaMetrics' influx parser).
_LINE_ERRORS = ("cannot parse", "cannot unmarshal", "too long", "line")


def classify_vm_write(status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Decision:
    """Sort one answer of VictoriaMetrics' ``/write`` into a :class:`gateway.influx.Decision`. Pure.

    ====================  ==========================================  =============================
    status                body                                        decision
    ====================  ==========================================  =============================
    200, 204              --                                          STORED
    0 (no answer)         --                                          RETRY
    400                   ``unsupported path requested``              FATAL (``vm_url`` is wrong)
    400                   names lines (cannot parse, too long)        DROP_BAD_POINTS, by splitting
    400                   anything else                               FATAL
    401, 403              --                                          FATAL (credentials)
    404                   --                                          FATAL (``vm_url``; a proxy)
    413                   --                                          DROP_BAD_POINTS, by splitting
    429, 5xx              ``Retry-After`` honoured                    RETRY
    other                 --                                          FATAL
    ====================  ==========================================  =============================

    Sources: https://docs.victoriametrics.com/#how-to-send-data-from-influxdb-compatible-agents-such-as-telegraf
    (``/write``, 204), https://docs.victoriametrics.com/cluster-victoriametrics/#url-format (vminsert's
    ``/insert/<accountID>/influx/write``), ``-httpAuth.*`` (401), ``-maxConcurrentInserts`` with
    ``-insert.maxQueueDuration`` (503 when inserts wait too long; vminsert also answers 503 when no
    vmstorage node takes data), and answers of victoria-metrics 1.79.5 on this box: 204 for a request
    with unparseable, too long or out-of-retention lines (skipped and logged), 400 ``unsupported path
    requested`` for a wrong path.
    """
    if status in (200, 204):
        return Decision(Action.STORED)
    if status == 0:
        return Decision(Action.RETRY, "no answer")
    text = body.decode("utf-8", errors="replace").strip()[:300]
    lowered = text.lower()
    url_fix = (
        "vm_url must be the part before /write: http://host:8428 (single node) or "
        "http://vminsert:8480/insert/<tenant>/influx (cluster)"
    )
    if status == 400:
        if "unsupported path" in lowered:
            return Decision(Action.FATAL, text, fix=url_fix)
        if any(word in lowered for word in _LINE_ERRORS):
            return Decision(Action.DROP_BAD_POINTS, text)
        return Decision(Action.FATAL, text, fix="VictoriaMetrics refuses the request itself: " + url_fix)
    if status in (401, 403):
        return Decision(
            Action.FATAL, text, fix="VictoriaMetrics refuses the credentials: check vm_username/vm_password"
        )
    if status == 404:
        return Decision(Action.FATAL, text, fix=url_fix)
    if status == 413:
        return Decision(Action.DROP_BAD_POINTS, text)
    if status == 429 or status >= 500:
        return Decision(Action.RETRY, text, retry_after_s=retry_after(headers, now))
    return Decision(Action.FATAL, text, fix=f"VictoriaMetrics answered HTTP {status} to a write: " + url_fix)


def vm_points(point: StoredPoint) -> list[StoredPoint]:
    """``point`` as VictoriaMetrics can hold it: numeric fields, state words as StateSets, no other strings.

    The numeric fields stay in one point (one line: ``measurement_field`` per
    field, tags as labels). Each string field in :data:`STATE_SETS` becomes
    one point per state, measurement unchanged, an extra tag named after the
    family (``parking_bay_status``, OpenMetrics' StateSet rule) holding the
    state, and the field's value 1 for the current state, 0 for the others
    (a state the contract does not know yet is added with 1).
    Other string fields are left out. The time is unchanged (VictoriaMetrics
    trims it to the millisecond).
    """
    numeric: dict[str, FieldValue] = {}
    out: list[StoredPoint] = []
    for name, value in point.fields.items():
        if not isinstance(value, str):
            numeric[name] = value
            continue
        states = STATE_SETS.get((point.measurement, name))
        if states is None:
            continue
        label = f"{point.measurement}_{name}"  # the family's name (VictoriaMetrics' default separator "_")
        for state in states if value in states else (*states, value):
            out.append(
                StoredPoint(point.measurement, {**point.tags, label: state}, {name: int(state == value)}, point.time_ns)
            )
    if numeric:
        out.insert(0, StoredPoint(point.measurement, point.tags, numeric, point.time_ns))
    return out


def vm_lines(entry: Entry) -> list[str]:
    """The line protocol VictoriaMetrics gets for one entry (via :func:`contracts.storage.to_points`)."""
    if isinstance(entry, StoredPoint):
        points = [entry]
    else:
        points = to_points(entry.message, site_id=entry.site_id, received_at=entry.received_at, retained=entry.retained)
    return [line for point in points for line in map(line_protocol, vm_points(point)) if line]


class VictoriaWriter(InfluxWriter):
    """:class:`gateway.influx.InfluxWriter` for VictoriaMetrics: ``{url}/write?precision=ns``, its answers.

    ``username``/``password``: HTTP basic auth (``-httpAuth.*``); ``token``:
    ``Authorization: Bearer`` (vmauth). Raises what ``InfluxWriter.write``
    raises (``InfluxUnavailable``, ``InfluxFatal``).
    """

    classify = staticmethod(classify_vm_write)

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        client = httpx.Client(
            headers={"Authorization": f"Bearer {token}"} if token else {},
            auth=httpx.BasicAuth(username, password or "") if username and not token else None,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=False,
            trust_env=False,
        )
        super().__init__(url, "victoriametrics", client=client)

    def _write_path(self) -> str:
        return "/write?" + urllib.parse.urlencode({"precision": "ns"})

    def create_database(self) -> None:
        """Nothing to create: VictoriaMetrics has no databases."""

    def flags(self) -> dict[str, str]:
        """The server's command-line flags (``GET /flags``: ``-name="value"`` lines); {} if it does not say."""
        try:
            status, body, _ = self._request("GET", "/flags", None, {})
        except InfluxUnavailable:
            return {}
        if status != 200:
            return {}
        return dict(re.findall(r'^-([\w.]+)="(.*)"$', body.decode(errors="replace"), flags=re.MULTILINE))


class _VictoriaSettings(Protocol):
    @property
    def vm_url(self) -> str: ...
    @property
    def vm_timeout_s(self) -> float: ...
    @property
    def vm_username(self) -> str | None: ...
    @property
    def vm_password(self) -> _Secret | None: ...
    @property
    def vm_token(self) -> _Secret | None: ...


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class VictoriaSink:
    """The :class:`gateway.sink.Sink` for VictoriaMetrics; see the module docstring.

    A message the storage contract cannot map is refused (``storage_error``);
    a line VictoriaMetrics refuses for good (a 400 naming lines, 413 for one
    line) is refused as ``vm_rejected``. Retriable failures raise
    :class:`gateway.sink.SinkUnavailable` (with ``Retry-After``),
    configuration errors :class:`gateway.sink.SinkFatal` naming what to fix.
    """

    #: :attr:`gateway.sink.Refused.reason` of a line VictoriaMetrics refused for good.
    REJECTED = "vm_rejected"

    def __init__(self, writer: VictoriaWriter) -> None:
        self.writer = writer

    @classmethod
    def from_settings(cls, settings: _VictoriaSettings) -> VictoriaSink:
        """A sink writing to ``settings.vm_url`` with its credentials and timeout."""
        return cls(
            VictoriaWriter(
                settings.vm_url,
                username=settings.vm_username,
                password=settings.vm_password.get_secret_value() if settings.vm_password else None,
                token=settings.vm_token.get_secret_value() if settings.vm_token else None,
                timeout_s=settings.vm_timeout_s,
            )
        )

    def dedup_interval(self) -> str | None:
        """The server's ``-dedup.minScrapeInterval`` ("0s": off), or None when it cannot say.

        ``/flags`` lists only the flags set on the command line, so a single
        node that answers without it runs with the default, 0s (off). vminsert
        (it has ``-storageNode``) has no such flag: dedup is vmstorage's and
        vmselect's business there, so None; None too when ``/flags`` does not answer.
        """
        flags = self.writer.flags()
        if not flags or "storageNode" in flags:
            return None
        return flags.get("dedup.minScrapeInterval", "0s")

    def warn_unless_deduplicating(self) -> bool:
        """Log a warning when the server says it stores duplicates; True when it says it does not."""
        interval = self.dedup_interval()
        if interval is None:
            log.info(
                "VictoriaMetrics at %s does not show its flags (cluster or proxy): make sure vmstorage and "
                "vmselect run with -dedup.minScrapeInterval=1ms, or replays are stored twice",
                self.writer.url,
            )
            return False
        if interval in ("0", "0s", ""):
            log.warning(
                "VictoriaMetrics at %s stores duplicates (-dedup.minScrapeInterval is off): start it with "
                "-dedup.minScrapeInterval=1ms, or every redelivered or replayed reading counts twice",
                self.writer.url,
            )
            return False
        return True

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        """Write ``entries``; ``written`` counts lines VictoriaMetrics took (StateSets: one line per state)."""
        lines: list[str] = []
        owners: list[int] = []
        refused: list[Refused] = []
        for index, entry in enumerate(entries):
            try:
                entry_lines = vm_lines(entry)
            except Exception as exc:  # the contract's mapping failed: only this entry's problem
                log.exception("cannot build VictoriaMetrics lines for entry %d", index)
                payload = (
                    repr(entry).encode() if isinstance(entry, StoredPoint) else entry.message.model_dump_json().encode()
                )
                refused.append(Refused(index, STORAGE_ERROR, repr(exc)[:300], payload))
                continue
            lines.extend(entry_lines)
            owners.extend([index] * len(entry_lines))
        if not lines:
            return SinkResult(refused=refused)
        try:
            result: WriteResult = self.writer.write(lines)
        except InfluxFatal as exc:
            raise SinkFatal(f"VictoriaMetrics: {exc}", exc.fix) from exc
        except InfluxUnavailable as exc:
            raise SinkUnavailable(f"VictoriaMetrics: {exc}", exc.retry_after_s) from exc
        except httpx.HTTPError as exc:  # pragma: no cover - _request converts these already
            raise SinkUnavailable(f"VictoriaMetrics: {describe(exc)}") from exc
        for dropped in result.dropped:
            refused.append(Refused(owners[dropped.index], self.REJECTED, dropped.error, dropped.line.encode()))
        return SinkResult(written=result.written, refused=refused, requests=result.requests)

    def close(self) -> None:
        self.writer.close()
