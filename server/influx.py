"""The server's side of InfluxDB: queries over the 1.x HTTP API (``/ping``, ``/query``).

One shared ``httpx.AsyncClient``, opened in the app's lifespan. Measurement,
tag and field names and the time encoding come from :mod:`contracts.storage`,
the schema the gateway writes with. Auth and the error types are shared with
the gateway's writer in :mod:`common.influxdb`: every failure surfaces as
:class:`common.influxdb.InfluxError` (:class:`~common.influxdb.InfluxUnavailable`
when InfluxDB did not answer), never as an httpx exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from common.influxdb import Credentials, InfluxError, InfluxUnavailable, base_url, describe, quote_ident, quote_str
from contracts import storage
from server.settings import ServerSettings
from server.stores.base import Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StateRow:
    """One entity's last point in history (a bay, a locker compartment): see :class:`contracts.storage.LastStates`."""

    group: str
    entity: str
    status: str
    observed_at: datetime
    reading_id: str
    #: When the gateway received it (POSIX s, its clock): our "heard" time for freshness.
    received_ts: float | None = None
    epoch: str | None = None
    seq: int | None = None
    detail: str | None = None

    def reading(self) -> Reading:
        return Reading.of(
            self.status,
            self.observed_at,
            self.reading_id,
            heard=self.received_ts,
            epoch=self.epoch,
            seq=self.seq,
            detail=self.detail,
        )


#: The first name of a bay's row (``lot_id``, ``bay_id`` are ``group``, ``entity``).
BayRow = StateRow


@dataclass(frozen=True, slots=True)
class FootfallRow:
    """One stored footfall interval of one counting line."""

    zone: str
    camera: str | None
    line: str
    #: End of the interval (device time, UTC).
    observed_at: datetime
    towards: int
    away: int
    interval_s: float
    reading_id: str
    received_ts: float | None


@dataclass(frozen=True, slots=True)
class OccupancyRow:
    """A camera's last occupancy estimate for a zone."""

    zone: str
    camera: str | None
    observed_at: datetime
    occupancy: int
    received_ts: float | None


def open_http_client(settings: ServerSettings) -> httpx.AsyncClient:
    """The shared client, with the credentials of ``settings``; the caller closes it (``await client.aclose()``)."""
    credentials = Credentials.from_settings(settings)
    return httpx.AsyncClient(
        base_url=base_url(settings.influx_url),
        headers={"Accept": "application/json", **credentials.headers()},
        auth=credentials.basic_auth(),
        timeout=httpx.Timeout(settings.influx_timeout_s),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
    )


def last_states_query(spec: storage.LastStates, site_id: str, window_s: float) -> str:
    """Each entity's last point of ``spec.measurement`` within ``window_s`` seconds: ``spec.fields``.

    ``last()`` is a selector: the other fields come from the same point.
    """
    status, *others = spec.fields
    fields = ", ".join(quote_ident(f) for f in others)
    return (
        f"SELECT last({quote_ident(status)}) AS {quote_ident(status)}, {fields}"
        f" FROM {quote_ident(spec.measurement)}"
        f" WHERE {quote_ident(storage.TAG_SITE)} = {quote_str(site_id)} AND time > now() - {int(window_s)}s"
        f" GROUP BY {quote_ident(spec.group_tag)}, {quote_ident(spec.entity_tag)}"
    )


def last_bay_states_query(site_id: str, window_s: float) -> str:
    """:func:`last_states_query` for bays."""
    return last_states_query(storage.BAY_HISTORY, site_id, window_s)


def footfall_query(site_id: str, window_s: float) -> str:
    """Every footfall interval of the last ``window_s`` seconds, by zone, camera and line."""
    fields = ", ".join(quote_ident(f) for f in storage.FOOTFALL_FIELDS)
    return (
        f"SELECT {fields} FROM {quote_ident(storage.M_FOOTFALL)}"
        f" WHERE {quote_ident(storage.TAG_SITE)} = {quote_str(site_id)} AND time > now() - {int(window_s)}s"
        f" GROUP BY {quote_ident(storage.TAG_ZONE)}, {quote_ident(storage.TAG_CAMERA)}, {quote_ident(storage.TAG_LINE)}"
    )


class InfluxClient:
    def __init__(self, http: httpx.AsyncClient, db: str) -> None:
        self._http = http
        self.db = db

    async def ping(self) -> None:
        try:
            r = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(describe(exc)) from None
        if r.status_code != 204:
            raise InfluxError(f"/ping answered HTTP {r.status_code}", r.status_code)

    async def query(self, q: str) -> list[dict[str, Any]]:
        """The series of the (single) statement's result; raise InfluxError."""
        try:
            r = await self._http.get("/query", params={"db": self.db, "q": q, "epoch": "ns"})
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(describe(exc)) from None
        try:
            body = r.json()
        except ValueError:
            raise InfluxError(f"/query answered HTTP {r.status_code} with no JSON", r.status_code) from None
        if r.status_code != 200 or "error" in body:
            raise InfluxError(f"/query answered HTTP {r.status_code}: {body.get('error', '')}"[:300], r.status_code)
        results = body.get("results") or [{}]
        first = results[0]
        if "error" in first:
            raise InfluxError(f"query failed: {first['error']}"[:300], r.status_code)
        series: list[dict[str, Any]] = first.get("series") or []
        return series

    async def last_states(self, spec: storage.LastStates, site_id: str, window_s: float) -> list[StateRow]:
        """Every entity's last state within ``window_s``; malformed rows are skipped and logged."""
        rows: list[StateRow] = []
        skipped = 0
        for series in await self.query(last_states_query(spec, site_id, window_s)):
            try:
                tags = series.get("tags") or {}
                columns = series["columns"]
                for values in series["values"]:
                    row = dict(zip(columns, values, strict=True))
                    status = row.get(storage.F_STATUS)
                    if status not in spec.statuses or not isinstance(row.get(storage.TIME), int):
                        skipped += 1
                        continue
                    received = row.get(storage.F_RECEIVED_NS)
                    seq = row.get(storage.F_SEQ)
                    epoch = row.get(storage.F_EPOCH)
                    detail = row.get(spec.detail) if spec.detail else None
                    rows.append(
                        StateRow(
                            group=str(tags[spec.group_tag]),
                            entity=str(tags[spec.entity_tag]),
                            status=str(status),
                            observed_at=storage.from_ns(row[storage.TIME]),
                            reading_id=str(row.get(storage.F_READING_ID) or ""),
                            received_ts=storage.ns_to_s(received) if isinstance(received, int) else None,
                            epoch=epoch if isinstance(epoch, str) else None,
                            seq=seq if isinstance(seq, int) else None,
                            detail=detail if isinstance(detail, str) else None,
                        )
                    )
            except (KeyError, TypeError, ValueError):
                skipped += 1
        if skipped:
            log.warning("bootstrap: skipped %d malformed %s row(s)", skipped, spec.measurement)
        return rows

    async def last_bay_states(self, site_id: str, window_s: float) -> list[StateRow]:
        return await self.last_states(storage.BAY_HISTORY, site_id, window_s)

    async def footfall(self, site_id: str, window_s: float) -> list[FootfallRow]:
        """Footfall intervals of the last ``window_s`` seconds; malformed rows are skipped and logged."""
        rows: list[FootfallRow] = []
        skipped = 0
        for series in await self.query(footfall_query(site_id, window_s)):
            try:
                tags = series.get("tags") or {}
                columns = series["columns"]
                for values in series["values"]:
                    row = dict(zip(columns, values, strict=True))
                    towards, away = row.get(storage.F_TOWARDS), row.get(storage.F_AWAY)
                    received = row.get(storage.F_RECEIVED_NS)
                    if not (isinstance(towards, int) and isinstance(away, int) and isinstance(row[storage.TIME], int)):
                        skipped += 1
                        continue
                    rows.append(
                        FootfallRow(
                            zone=str(tags[storage.TAG_ZONE]),
                            camera=tags.get(storage.TAG_CAMERA) or None,
                            line=str(tags[storage.TAG_LINE]),
                            observed_at=storage.from_ns(row[storage.TIME]),
                            towards=towards,
                            away=away,
                            interval_s=float(row.get(storage.F_INTERVAL_S) or 0.0),
                            reading_id=str(row.get(storage.F_READING_ID) or ""),
                            received_ts=storage.ns_to_s(received) if isinstance(received, int) else None,
                        )
                    )
            except (KeyError, TypeError, ValueError):
                skipped += 1
        if skipped:
            log.warning("footfall history: skipped %d malformed row(s)", skipped)
        return rows

    async def last_occupancy(self, site_id: str, window_s: float) -> list[OccupancyRow]:
        """Each (zone, camera)'s last occupancy estimate within ``window_s``; malformed rows skipped."""
        q = (
            f"SELECT last({quote_ident(storage.F_OCCUPANCY)}) AS {quote_ident(storage.F_OCCUPANCY)},"
            f" {quote_ident(storage.F_RECEIVED_NS)} FROM {quote_ident(storage.M_ZONE_OCCUPANCY)}"
            f" WHERE {quote_ident(storage.TAG_SITE)} = {quote_str(site_id)} AND time > now() - {int(window_s)}s"
            f" GROUP BY {quote_ident(storage.TAG_ZONE)}, {quote_ident(storage.TAG_CAMERA)}"
        )
        rows: list[OccupancyRow] = []
        for series in await self.query(q):
            tags = series.get("tags") or {}
            for values in series.get("values") or []:
                row = dict(zip(series.get("columns") or [], values, strict=False))
                occupancy, at, received = (
                    row.get(storage.F_OCCUPANCY),
                    row.get(storage.TIME),
                    row.get(storage.F_RECEIVED_NS),
                )
                if isinstance(occupancy, int) and isinstance(at, int) and storage.TAG_ZONE in tags:
                    rows.append(
                        OccupancyRow(
                            zone=str(tags[storage.TAG_ZONE]),
                            camera=tags.get(storage.TAG_CAMERA) or None,
                            observed_at=storage.from_ns(at),
                            occupancy=occupancy,
                            received_ts=storage.ns_to_s(received) if isinstance(received, int) else None,
                        )
                    )
        return rows
