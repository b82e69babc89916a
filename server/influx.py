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

log = logging.getLogger(__name__)

_STATUSES = frozenset({"free", "occupied", "closed", "unknown"})


@dataclass(frozen=True, slots=True)
class BayRow:
    lot_id: str
    bay_id: str
    status: str
    observed_at: datetime
    reading_id: str
    #: When the gateway received it (POSIX s, its clock): our "heard" time for freshness.
    received_ts: float | None = None
    epoch: str | None = None
    seq: int | None = None


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


def last_bay_states_query(site_id: str, window_s: float) -> str:
    """Each bay's last status within ``window_s`` seconds: the fields of :data:`contracts.storage.BAY_STATE_FIELDS`.

    ``last()`` is a selector: the other fields come from the same point.
    """
    status, *others = storage.BAY_STATE_FIELDS
    fields = ", ".join(quote_ident(f) for f in others)
    return (
        f"SELECT last({quote_ident(status)}) AS {quote_ident(status)}, {fields}"
        f" FROM {quote_ident(storage.M_PARKING_BAY)}"
        f" WHERE {quote_ident(storage.TAG_SITE)} = {quote_str(site_id)} AND time > now() - {int(window_s)}s"
        f" GROUP BY {quote_ident(storage.TAG_LOT)}, {quote_ident(storage.TAG_BAY)}"
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

    async def last_bay_states(self, site_id: str, window_s: float) -> list[BayRow]:
        """Every bay's last state within ``window_s``; malformed rows are skipped and logged."""
        rows: list[BayRow] = []
        skipped = 0
        for series in await self.query(last_bay_states_query(site_id, window_s)):
            try:
                tags = series.get("tags") or {}
                columns = series["columns"]
                for values in series["values"]:
                    row = dict(zip(columns, values, strict=True))
                    status = row.get(storage.F_STATUS)
                    if status not in _STATUSES or not isinstance(row.get(storage.TIME), int):
                        skipped += 1
                        continue
                    received = row.get(storage.F_RECEIVED_NS)
                    seq = row.get(storage.F_SEQ)
                    epoch = row.get(storage.F_EPOCH)
                    rows.append(
                        BayRow(
                            lot_id=str(tags[storage.TAG_LOT]),
                            bay_id=str(tags[storage.TAG_BAY]),
                            status=str(status),
                            observed_at=storage.from_ns(row[storage.TIME]),
                            reading_id=str(row.get(storage.F_READING_ID) or ""),
                            received_ts=storage.ns_to_s(received) if isinstance(received, int) else None,
                            epoch=epoch if isinstance(epoch, str) else None,
                            seq=seq if isinstance(seq, int) else None,
                        )
                    )
            except (KeyError, TypeError, ValueError):
                skipped += 1
        if skipped:
            log.warning("bootstrap: skipped %d malformed bay row(s)", skipped)
        return rows
