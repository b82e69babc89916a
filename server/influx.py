"""The one module that speaks InfluxDB's 1.x HTTP API (``/ping``, ``/query``).

One shared ``httpx.AsyncClient``, opened in the app's lifespan. Measurement,
tag and field names come from :mod:`contracts.storage`, the schema the gateway
writes with. Every failure surfaces as :class:`InfluxError`, never as an
httpx exception.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from contracts import storage
from server.live import ns_to_datetime
from server.settings import ServerSettings

log = logging.getLogger(__name__)

_STATUSES = frozenset({"free", "occupied", "closed", "unknown"})


class InfluxError(Exception):
    """InfluxDB is unreachable, or answered a query with an error."""


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
    """The shared client; the caller closes it (``await client.aclose()``)."""
    headers = {"Accept": "application/json"}
    auth: httpx.BasicAuth | None = None
    if settings.influx_token is not None:
        headers["Authorization"] = f"Token {settings.influx_token.get_secret_value()}"
    elif settings.influx_username:
        password = settings.influx_password.get_secret_value() if settings.influx_password else ""
        auth = httpx.BasicAuth(settings.influx_username, password)
    return httpx.AsyncClient(
        base_url=settings.influx_url.rstrip("/"),
        headers=headers,
        auth=auth,
        timeout=httpx.Timeout(settings.influx_timeout_s),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
    )


def _quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def last_bay_states_query(site_id: str, window_s: float) -> str:
    """Each bay's last status within the window, with its reading id, receive time and sequence.

    ``last()`` is a selector: the other fields come from the same point.
    """
    fields = ", ".join(
        _quote_ident(f) for f in (storage.F_READING_ID, storage.F_RECEIVED_NS, storage.F_EPOCH, storage.F_SEQ)
    )
    return (
        f'SELECT last("status") AS "status", {fields} FROM {_quote_ident(storage.M_PARKING_BAY)}'
        f" WHERE {_quote_ident(storage.TAG_SITE)} = {_quote_str(site_id)} AND time > now() - {int(window_s)}s"
        f" GROUP BY {_quote_ident(storage.TAG_LOT)}, {_quote_ident(storage.TAG_BAY)}"
    )


class InfluxClient:
    def __init__(self, http: httpx.AsyncClient, db: str) -> None:
        self._http = http
        self.db = db

    async def ping(self) -> None:
        try:
            r = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            raise InfluxError(_describe(exc)) from None
        if r.status_code != 204:
            raise InfluxError(f"/ping answered HTTP {r.status_code}")

    async def query(self, q: str) -> list[dict[str, Any]]:
        """The series of the (single) statement's result; raise InfluxError."""
        try:
            r = await self._http.get("/query", params={"db": self.db, "q": q, "epoch": "ns"})
        except httpx.HTTPError as exc:
            raise InfluxError(_describe(exc)) from None
        try:
            body = r.json()
        except ValueError:
            raise InfluxError(f"/query answered HTTP {r.status_code} with no JSON") from None
        if r.status_code != 200 or "error" in body:
            raise InfluxError(f"/query answered HTTP {r.status_code}: {body.get('error', '')}"[:300])
        results = body.get("results") or [{}]
        first = results[0]
        if "error" in first:
            raise InfluxError(f"query failed: {first['error']}"[:300])
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
                    status = row.get("status")
                    if status not in _STATUSES or not isinstance(row.get("time"), int):
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
                            observed_at=ns_to_datetime(row["time"]),
                            reading_id=str(row.get(storage.F_READING_ID) or ""),
                            received_ts=received / 1e9 if isinstance(received, int) else None,
                            epoch=epoch if isinstance(epoch, str) else None,
                            seq=seq if isinstance(seq, int) else None,
                        )
                    )
            except (KeyError, TypeError, ValueError):
                skipped += 1
        if skipped:
            log.warning("bootstrap: skipped %d malformed bay row(s)", skipped)
        return rows


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
