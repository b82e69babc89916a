"""The gateway's InfluxDB sink: points, line protocol, and InfluxDB's write and admin HTTP API.

The one module that writes to InfluxDB (``/write``, ``/query`` for
``CREATE DATABASE``, ``/ping``); the server's queries are in
``server/influx.py``, the errors and auth both share in
:mod:`common.influxdb`. :class:`InfluxSink` is the :class:`gateway.sink.Sink`
the batch writer hands messages to: it maps them with
:func:`contracts.storage.to_points`, builds line protocol with its own
serializer (:func:`line_protocol`, byte for byte what influxdb-client's
``Point`` builds, about 5x faster) and writes it with :class:`InfluxWriter`.

Works against InfluxDB 1.x, and against 2.x/3.x through their 1.x-compatible
``/write`` endpoint (token auth). Synchronous, on one kept-alive connection
of an ``httpx.Client`` (no proxies from the environment, no redirects).

Every answer to a write is sorted by :func:`classify_write`, a pure function
of (status, headers, body), into one of four decisions; the table with its
sources is in :func:`classify_write` and in ``docs/influxdb-writes.md``:

* ``STORED``: the request's lines are stored.
* ``DROP_BAD_POINTS``: some lines will never be stored (partial write, beyond
  retention, field type conflict, unparseable line, request too large). Where
  the answer names the bad lines (3.x), they are dropped and the rest is sent
  again; otherwise the request is split in halves, recursively, until the bad
  lines stand alone. Only those are dropped and reported in
  :class:`WriteResult`. Sending a good line twice is harmless: a point's key
  is measurement + tags + timestamp, so writing it twice stores it once.
* ``RETRY``: InfluxDB is down, overloaded or slow (429, 5xx that is no
  partial write, timeouts, connection errors): :class:`InfluxUnavailable`,
  with the ``Retry-After`` the server asked for. Nothing is dropped.
* ``FATAL``: the configuration is wrong (401/403, 404 database or bucket not
  found, a request InfluxDB refuses whatever its lines): :class:`InfluxFatal`,
  naming what to fix. Nothing is dropped; retrying alone will not help.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, cast

import httpx

from common.influxdb import (
    Credentials,
    InfluxError,
    InfluxFatal,
    InfluxSettings,
    InfluxUnavailable,
    base_url,
    describe,
    quote_ident,
)
from contracts.storage import FieldValue, StoredPoint, to_points
from gateway.sink import STORAGE_ERROR, Entry, Refused, SinkFatal, SinkResult, SinkUnavailable

log = logging.getLogger(__name__)

#: Longest ``Retry-After`` honoured, in seconds: a broken header must not park the gateway for a day.
RETRY_AFTER_MAX_S = 300.0

#: Words in a 400/500 answer that mean "these points are bad", not "your request is bad" or "I am down".
#: Sources: InfluxDB 1.x ``tsdb.PartialWriteError`` / ``models.ParsePoints`` messages; 2.x wraps the
#: same texts in ``{"code": ..., "message": "failure writing points to database: partial write: ..."}``.
_POINT_ERRORS = (
    "partial write",
    "unable to parse",
    "field type conflict",
    "invalid field",
    "invalid tag",
    "invalid number",
    "invalid boolean",
    "bad timestamp",
    "points beyond retention policy",
    "max-values-per-tag",
    "max-series-per-database",
    "too large",
)

#: 3.x JSON ``error`` values whose ``data`` names the refused lines (``accept_partial=true`` / ``false``).
_V3_LINE_ERRORS = ("partial write of line protocol occurred", "parsing failed for write_lp endpoint")


class Action(enum.Enum):
    """What the gateway does with an answer to a write request."""

    STORED = "stored"
    RETRY = "retry"
    DROP_BAD_POINTS = "drop_bad_points"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one answer to a write request.

    ``reason`` is InfluxDB's own message (or ours when it sent none).
    ``retry_after_s`` (seconds, capped at :data:`RETRY_AFTER_MAX_S`) is the
    server's ``Retry-After`` for ``RETRY``. ``line_errors`` are the
    (1-based line number, message) pairs a 3.x answer names; empty means
    "not named: isolate them by splitting". ``fix`` says what an operator must
    change for ``FATAL``. ``database_missing`` marks a 404 (1.x creates it).
    """

    action: Action
    reason: str = ""
    retry_after_s: float | None = None
    line_errors: tuple[tuple[int, str], ...] = ()
    fix: str = ""
    database_missing: bool = False


def classify_write(status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> Decision:
    """Sort one answer of a write endpoint into a :class:`Decision`. Pure; never raises.

    ``status`` 0 means no answer at all (connection refused or reset,
    timeout). ``headers`` is looked up case-insensitively for ``Retry-After``
    (delta-seconds or an HTTP date; ``now`` is the Unix time, in seconds, to
    measure a date against, default the wall clock).

    ====================  =====================================================  ===================
    status                body                                                   decision
    ====================  =====================================================  ===================
    200, 204              --                                                     STORED
    0 (no answer)         --                                                     RETRY
    400                   3.x JSON ``error`` "partial write of line protocol     DROP_BAD_POINTS,
                          occurred" / "parsing failed for write_lp endpoint",    the named lines
                          ``data`` naming ``line_number`` + ``error_message``
    400                   names bad points (partial write, unable to parse,      DROP_BAD_POINTS,
                          field type conflict, beyond retention, ...)            by splitting
    400                   anything else (the request itself is refused)          FATAL
    401, 403              --                                                     FATAL (credentials)
    404                   database / bucket not found                            FATAL, database_missing
    408                   --                                                     RETRY
    413                   --                                                     DROP_BAD_POINTS, by splitting
    422                   --                                                     DROP_BAD_POINTS, by splitting
    429                   ``Retry-After`` honoured                               RETRY
    500                   names bad points (2.x "partial write: points beyond    DROP_BAD_POINTS,
                          retention policy dropped=1")                           by splitting
    500, 502, 503, 504,   anything else; ``Retry-After`` honoured                RETRY
    other 5xx
    other (3xx, 4xx)      --                                                     FATAL
    ====================  =====================================================  ===================

    Sources: 1.x
    https://docs.influxdata.com/influxdb/v1/tools/api/#write-http-endpoint (204, 400 "partial write",
    401, 404 "database not found", 413, 500); 2.x
    https://docs.influxdata.com/influxdb/v2/write-data/troubleshoot/ and
    https://docs.influxdata.com/influxdb/v2/api/#operation/PostWrite (204, 400, 401, 404, 413,
    422 "some or all of the data has been rejected", 429/503 with Retry-After, 500; 2.0-2.x answered a
    partial write with 500 "internal error": influxdata/influxdb#20359, influxdata/telegraf#8571);
    3.x https://docs.influxdata.com/influxdb3/core/write-data/http-api/v3-write-lp/ and
    https://docs.influxdata.com/influxdb3/core/write-data/troubleshoot/ (400 with a JSON list of
    rejected lines; the good lines are stored).
    """
    if status in (200, 204):
        return Decision(Action.STORED)
    if status == 0:
        return Decision(Action.RETRY, "no answer")
    text, data = _parse_body(body)
    if status == 400:
        named = _v3_line_errors(data)
        if named:
            return Decision(Action.DROP_BAD_POINTS, text, line_errors=named)
        if _names_bad_points(text):
            return Decision(Action.DROP_BAD_POINTS, text)
        return Decision(
            Action.FATAL,
            text,
            fix="InfluxDB refuses the request itself, not its points: check influx_url, influx_db and "
            "influx_rp (and report a gateway bug if they are right)",
        )
    if status in (401, 403):
        return Decision(
            Action.FATAL,
            text,
            fix="InfluxDB refuses the credentials: check influx_token (2.x/3.x) or influx_username/"
            "influx_password (1.x) and that they may write to influx_db",
        )
    if status == 404:
        return Decision(
            Action.FATAL,
            text,
            fix="the database (1.x/3.x) or bucket (2.x) influx_db does not exist: create it (2.x: a bucket "
            "with a DBRP mapping for influx_db/influx_rp) or fix influx_db/influx_url",
            database_missing=True,
        )
    if status in (413, 422):
        return Decision(Action.DROP_BAD_POINTS, text)
    if status in (408, 429):
        return Decision(Action.RETRY, text, retry_after_s=retry_after(headers, now))
    if status >= 500:
        if status == 500 and _names_bad_points(text):
            return Decision(Action.DROP_BAD_POINTS, text)
        return Decision(Action.RETRY, text, retry_after_s=retry_after(headers, now))
    return Decision(
        Action.FATAL,
        text,
        fix=f"InfluxDB answered HTTP {status} to a write: check that influx_url is InfluxDB's base URL "
        "(scheme, host, port; no redirect)",
    )


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After`` in seconds (0 .. :data:`RETRY_AFTER_MAX_S`), None if absent or unreadable.

    RFC 9110 section 10.2.3: delta-seconds or an HTTP date; ``now`` is the
    Unix time the date is measured against (default: the wall clock).
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


@dataclass(frozen=True, slots=True)
class DroppedLine:
    """A line InfluxDB rejected on its own: ``index`` into the written list, ``error`` its reason."""

    index: int
    line: str
    error: str


@dataclass(slots=True)
class WriteResult:
    """``written`` lines stored, ``dropped`` ones refused for good, in ``requests`` HTTP requests."""

    written: int = 0
    dropped: list[DroppedLine] = field(default_factory=list)
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not self.dropped


class InfluxWriter:
    """Writes line protocol to one database; see the module docstring for the rules.

    ``timeout_s`` (seconds) bounds each request's read; connecting waits at
    most 5 s of it. A store that speaks the same ``/write`` with other
    answers (``gateway.victoria``) overrides :meth:`classify` and :meth:`_write_path`.
    """

    #: Sorts one answer to a write into a :class:`Decision` (InfluxDB's table by default).
    classify = staticmethod(classify_write)

    def __init__(
        self,
        url: str,
        db: str,
        *,
        rp: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = base_url(url)
        self.db = db
        self.rp = rp
        credentials = Credentials(token, username, password)
        self._client = client or httpx.Client(
            headers=credentials.headers(),
            auth=credentials.basic_auth(),
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=False,
            trust_env=False,  # InfluxDB is addressed directly, never through an HTTP(S)_PROXY
        )

    @classmethod
    def from_settings(cls, settings: InfluxSettings, *, rp: str | None = None) -> InfluxWriter:
        """A writer to ``settings.influx_db`` at ``settings.influx_url``, with its credentials and timeout."""
        credentials = Credentials.from_settings(settings)
        return cls(
            settings.influx_url,
            settings.influx_db,
            rp=rp,
            username=credentials.username,
            password=credentials.password,
            token=credentials.token,
            timeout_s=settings.influx_timeout_s,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API --------------------------------------------------------------

    def ping(self) -> str:
        """The server's version; raise :class:`InfluxUnavailable` if it does not answer 204."""
        status, body, headers = self._request("GET", "/ping", None, {})
        if status != 204:
            raise InfluxUnavailable(f"ping: HTTP {status}: {_parse_body(body)[0]}", status)
        return str(headers.get("X-Influxdb-Version", ""))

    def create_database(self) -> None:
        """``CREATE DATABASE`` (idempotent in 1.x). Raise :class:`InfluxError` on refusal."""
        body = urllib.parse.urlencode({"q": f"CREATE DATABASE {quote_ident(self.db)}"}).encode()
        status, data, _ = self._request("POST", "/query", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise InfluxError(f"CREATE DATABASE {self.db!r}: HTTP {status}: {_parse_body(data)[0]}", status)
        try:
            results = json.loads(data).get("results", [])
        except ValueError:
            results = []
        for result in results:
            if isinstance(result, dict) and "error" in result:
                raise InfluxError(f"CREATE DATABASE {self.db!r}: {result['error']}", status)

    def execute(self, statement: str) -> list[dict[str, Any]]:
        """Run one InfluxQL statement on the database (POST ``/query``, times as epoch ns): its result's series.

        For the history set-up (retention policies, continuous queries,
        ``SELECT ... INTO``; :mod:`gateway.retention`). Raises
        :class:`InfluxUnavailable` when InfluxDB does not answer and
        :class:`InfluxError` when it refuses the statement.
        """
        body = urllib.parse.urlencode({"q": statement, "db": self.db, "epoch": "ns"}).encode()
        status, data, _ = self._request("POST", "/query", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if status >= 500:
            raise InfluxUnavailable(f"{statement[:80]}: HTTP {status}: {_parse_body(data)[0]}", status)
        text, parsed = _parse_body(data)
        if status != 200 or not isinstance(parsed, dict):
            raise InfluxError(f"{statement[:80]}: HTTP {status}: {text}", status)
        first = (parsed.get("results") or [{}])[0]
        if "error" in first:
            raise InfluxError(f"{statement[:80]}: {first['error']}"[:300], status)
        series: list[dict[str, Any]] = first.get("series") or []
        return series

    def write(self, lines: list[str]) -> WriteResult:
        """Write line-protocol lines (ns precision); see the module docstring.

        Returns what was stored and which lines InfluxDB refused for good
        (their ``index`` into ``lines``). Raises :class:`InfluxUnavailable`
        for anything worth retrying and :class:`InfluxFatal` for a
        configuration error; either way the caller re-sends the whole list
        later (idempotent) and nothing was dropped.
        """
        result = WriteResult()
        if lines:
            self._write_indices(lines, list(range(len(lines))), result)
        return result

    # -- internals ------------------------------------------------------------

    def _write_path(self) -> str:
        params: dict[str, str] = {"db": self.db, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        return "/write?" + urllib.parse.urlencode(params)

    def _write_indices(self, lines: list[str], indices: list[int], result: WriteResult) -> None:
        """Write ``lines[i] for i in indices``; isolate and drop what InfluxDB refuses for good.

        Named lines (3.x) are dropped and the rest re-sent in a loop (a server
        naming a few lines per answer cannot exhaust the stack); unnamed ones
        are found by halving (depth log2 of the batch).
        """
        while indices:
            body = "\n".join(lines[i] for i in indices).encode()
            status, data, headers = self._request(
                "POST", self._write_path(), body, {"Content-Type": "text/plain; charset=utf-8"}
            )
            result.requests += 1
            decision = self.classify(status, headers, data)
            if decision.action is Action.STORED:
                result.written += len(indices)
                return
            where = f"write {len(indices)} lines to {self.url} database {self.db!r}: HTTP {status}: {decision.reason}"
            if decision.action is Action.RETRY:
                raise InfluxUnavailable(where, status, decision.retry_after_s)
            if decision.action is Action.FATAL:
                raise InfluxFatal(f"{where}; to fix: {decision.fix}", status, decision.fix)
            # DROP_BAD_POINTS
            named = {number: message for number, message in decision.line_errors if 1 <= number <= len(indices)}
            if named and len(named) == len({number for number, _ in decision.line_errors}):
                for number in sorted(named):
                    index = indices[number - 1]
                    result.dropped.append(DroppedLine(index, lines[index], f"HTTP {status}: {named[number]}"))
                # The rest is stored already (3.x); sent again to be sure, and to find lines a capped list left out.
                indices = [index for n, index in enumerate(indices, start=1) if n not in named]
                continue
            if len(indices) == 1:
                result.dropped.append(DroppedLine(indices[0], lines[indices[0]], f"HTTP {status}: {decision.reason}"))
                return
            mid = len(indices) // 2
            self._write_indices(lines, indices[:mid], result)
            self._write_indices(lines, indices[mid:], result)
            return

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes, httpx.Headers]:
        """(status, body, headers); no answer at all (refused, reset, timeout) is :class:`InfluxUnavailable`."""
        try:
            response = self._client.request(method, self.url + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"{method} {self.url}{path.split('?')[0]}: {describe(exc)}") from None
        return response.status_code, response.content, response.headers


def _names_bad_points(error: str) -> bool:
    lowered = error.lower()
    return any(word in lowered for word in _POINT_ERRORS)


def _parse_body(body: bytes) -> tuple[str, Any]:
    """(InfluxDB's message, at most 300 characters; the parsed JSON or None)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300], None
    if isinstance(data, dict):
        for key in ("error", "message"):
            if key in data:
                return str(data[key])[:300], data
    return text[:300], data


def _v3_line_errors(data: Any) -> tuple[tuple[int, str], ...]:
    """(line number, message) of each line a 3.x 400 names; () if it names none or is not 3.x's shape."""
    if not isinstance(data, dict) or str(data.get("error", "")).lower() not in _V3_LINE_ERRORS:
        return ()
    items = data.get("data")
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return ()
    named: list[tuple[int, str]] = []
    for item in items:
        if not isinstance(item, dict):
            return ()
        number = item.get("line_number")
        if not isinstance(number, int) or isinstance(number, bool):
            return ()
        named.append((number, str(item.get("error_message", ""))[:300]))
    return tuple(named)


# -- the sink: entries -> points -> line protocol -> InfluxWriter ----------------------------


#: InfluxDB line protocol escapes (https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/,
#: "Special characters"), extended as influxdb-client extends them (newline, tab, carriage return spelled out).
_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t", "\r": r"\r"})
_ESCAPE_STRING = str.maketrans({'"': r"\"", "\\": r"\\"})
#: Escaped once, then looked up (``str.translate`` costs about 0.35 µs a call): measurement names,
#: ``key=`` of tags and fields (a handful of distinct names), and tag values (devices, lots, bays, ...),
#: at most :data:`_CACHE_MAX` of each (then forgotten and built again).
_CACHE_MAX = 50_000
_measurements: dict[str, str] = {}
_keys: dict[str, str] = {}
_tag_values: dict[str, str] = {}


def _remember(cache: dict[str, str], raw: str, escaped: str) -> str:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[raw] = escaped
    return escaped


def _key_eq(name: str) -> str:
    """``name=`` with the name escaped as a tag or field key."""
    return _keys.get(name) or _remember(_keys, name, name.translate(_ESCAPE_KEY) + "=")


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    if escaped.endswith("\\"):
        escaped += " "  # influxdb-client's rule: the backslash must not escape the separator after it
    return _remember(_tag_values, value, escaped)


def _field(name: str, value: FieldValue) -> str | None:
    """``key=value`` of one field; None for a value line protocol cannot carry (a non-finite float)."""
    kind = type(value)
    if kind is str:
        text = cast(str, value)
        if '"' in text or "\\" in text:
            text = text.translate(_ESCAPE_STRING)
        return f'{_keys.get(name) or _key_eq(name)}"{text}"'
    if kind is int:
        return f"{_keys.get(name) or _key_eq(name)}{value}i"
    if kind is float:
        if not math.isfinite(cast(float, value)):
            return None  # influxdb-client leaves it out too; the contract never makes one (contracts.messages)
        text = repr(value)
        return (_keys.get(name) or _key_eq(name)) + (text[:-2] if text.endswith(".0") else text)
    if kind is bool:
        return f"{_keys.get(name) or _key_eq(name)}{'true' if value else 'false'}"
    # A subclass (an IntEnum, a str enum): influxdb-client's isinstance order, on the plain value.
    if isinstance(value, float):
        return _field(name, float(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return _field(name, int(value))
    if isinstance(value, bool):
        return _field(name, bool(value))
    if isinstance(value, str):
        return _field(name, "".join(str(value)))
    raise ValueError(f'Type: "{type(value)}" of field: "{name}" is not supported.')


def line_protocol(point: StoredPoint) -> str:
    """One point as a line of InfluxDB 1.x line protocol (ns precision); "" for a point without fields.

    Our own serializer, for speed: about 3 µs a point where influxdb-client's ``Point`` took
    about 15 (17-19 % of the gateway's CPU; ``docs/influxdb-writes.md``). Its output is
    influxdb-client's ``Point.to_line_protocol()``, byte for byte; the library stays the oracle in
    the tests (``tests/unit/gateway/test_line_protocol.py``, random points). The rules:

    * the measurement escapes ``,`` and space; tag keys, tag values and field keys escape ``,``,
      ``=`` and space; newline, tab and carriage return become ``\\n``, ``\\t``, ``\\r``;
    * tags sorted by key; a tag with an empty key or value is left out; a tag value ending in a
      backslash gets a space after it (so that backslash escapes no separator);
    * fields sorted by key: str ``"quoted"`` (``"`` and ``\\`` escaped), int ``1i``, bool
      ``true``/``false``, float as Python's ``repr`` without a trailing ``.0``; a non-finite
      float is left out (no field left: no line);
    * the time: integer nanoseconds.
    """
    fields = point.fields
    out = [f for f in (_field(name, fields[name]) for name in sorted(fields)) if f is not None]
    if not out:
        return ""
    head = _measurements.get(point.measurement) or _remember(
        _measurements, point.measurement, point.measurement.translate(_ESCAPE_MEASUREMENT)
    )
    tags = point.tags
    if tags:
        parts = [head]
        for key in sorted(tags):
            value = tags[key]
            if key and value:
                parts.append((_keys.get(key) or _key_eq(key)) + (_tag_values.get(value) or _tag_value(value)))
        head = ",".join(parts)
    return f"{head} {','.join(out)} {point.time_ns}"


def message_lines(entry: Entry) -> list[str]:
    """The line protocol of one entry: a message via the storage contract (never by hand), or a point as is.

    Raises what :func:`contracts.storage.to_points` raises for a message it cannot map.
    """
    if isinstance(entry, StoredPoint):
        points = [entry]
    else:
        points = to_points(entry.message, site_id=entry.site_id, received_at=entry.received_at, retained=entry.retained)
    return [line for line in map(line_protocol, points) if line]


class LineWriter(Protocol):
    """What :class:`InfluxSink` writes lines with: :class:`InfluxWriter`, or a fake in tests."""

    def write(self, lines: list[str]) -> WriteResult: ...

    def create_database(self) -> None: ...

    def close(self) -> None: ...


class InfluxSink:
    """The :class:`gateway.sink.Sink` for InfluxDB: entries to line protocol, written by an :class:`InfluxWriter`.

    A message the storage contract cannot map is refused (``storage_error``,
    the message as JSON); a line InfluxDB refuses for good is refused
    (``influx_rejected``, InfluxDB's reason, the line). A retriable failure
    raises :class:`gateway.sink.SinkUnavailable` (with InfluxDB's
    ``Retry-After``), a configuration error :class:`gateway.sink.SinkFatal`
    naming what to fix. A missing database is created first when
    ``create_database`` is on (1.x), and the write then retried at the
    ordinary backoff.
    """

    #: :attr:`gateway.sink.Refused.reason` of a line InfluxDB refused for good.
    REJECTED = "influx_rejected"

    def __init__(self, writer: LineWriter, *, create_database: bool = True) -> None:
        self.writer = writer
        self._create_database = create_database

    @classmethod
    def from_settings(cls, settings: GatewaySettingsLike) -> InfluxSink:
        """A sink writing to the database of gateway settings (``influx_*``, ``create_database``)."""
        return cls(
            InfluxWriter.from_settings(settings, rp=settings.influx_rp), create_database=settings.create_database
        )

    def create_database(self) -> None:
        """``CREATE DATABASE``; raise :class:`common.influxdb.InfluxError` on refusal."""
        self.writer.create_database()

    def write(self, entries: Sequence[Entry]) -> SinkResult:
        """Write ``entries`` (see the class docstring); ``written`` counts lines InfluxDB stored."""
        lines: list[str] = []
        owners: list[int] = []  # for each line, the index of its entry
        refused: list[Refused] = []
        for index, entry in enumerate(entries):
            try:
                entry_lines = message_lines(entry)
            except Exception as exc:  # the contract's mapping failed: a bug, but only this entry's
                if isinstance(entry, StoredPoint):
                    log.exception("cannot build the line of a %s point", entry.measurement)
                    payload = repr(entry).encode()
                else:
                    log.exception(
                        "cannot build points for %s of %s", type(entry.message).__name__, entry.message.device_id
                    )
                    payload = entry.message.model_dump_json().encode()
                refused.append(Refused(index, STORAGE_ERROR, repr(exc)[:300], payload))
                continue
            lines.extend(entry_lines)
            owners.extend([index] * len(entry_lines))
        if not lines:
            return SinkResult(refused=refused)
        try:
            result = self.writer.write(lines)
        except InfluxUnavailable as exc:
            if exc.database_missing and self._create_database and self._try_create_database():
                raise SinkUnavailable(f"{exc}; created the database, writing again") from exc
            if isinstance(exc, InfluxFatal):
                raise SinkFatal(str(exc), exc.fix) from exc
            raise SinkUnavailable(str(exc), exc.retry_after_s) from exc
        for dropped in result.dropped:
            refused.append(Refused(owners[dropped.index], self.REJECTED, dropped.error, dropped.line.encode()))
        return SinkResult(written=result.written, refused=refused, requests=result.requests)

    def close(self) -> None:
        self.writer.close()

    def _try_create_database(self) -> bool:
        try:
            self.writer.create_database()
        except InfluxError as exc:
            log.warning("cannot create the missing database: %s", exc)
            return False
        log.info("created the missing database")
        return True


class GatewaySettingsLike(InfluxSettings, Protocol):
    """The settings :meth:`InfluxSink.from_settings` reads besides :class:`common.influxdb.InfluxSettings`."""

    @property
    def influx_rp(self) -> str | None: ...
    @property
    def create_database(self) -> bool: ...
