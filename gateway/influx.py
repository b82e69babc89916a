"""The one module that knows InfluxDB's 1.x HTTP API (``/write``, ``/query``, ``/ping``).

Works against InfluxDB 1.x, and against 2.x/3.x through their 1.x-compatible
endpoints (token auth). Synchronous, on urllib3 (already a dependency of
influxdb-client), one pooled connection.

Write semantics, after Telegraf's InfluxDB outputs:

* 204: the batch is stored.
* 400 that names bad points (parse error, field type conflict, partial
  write, ...) or 413: split the batch in halves, recursively, until the bad
  points stand alone; drop only those, report them in the result. Re-sending
  the good half is harmless: a point's key is measurement + tags + timestamp,
  so writing it twice stores it once.
* 429, 5xx, 404 (database missing), 401/403, any other 400, and connection
  errors: :class:`InfluxUnavailable`. Nothing is dropped; the caller retries.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.util import make_headers

log = logging.getLogger(__name__)

#: Words in a 400 response that mean "these points are bad", not "your request is bad".
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


class InfluxError(Exception):
    """InfluxDB refused a request. ``status`` is the HTTP status (0 = no response)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class InfluxUnavailable(InfluxError):
    """A retriable failure: down, overloaded, misconfigured. Nothing was dropped."""

    @property
    def database_missing(self) -> bool:
        return self.status == 404


@dataclass(frozen=True, slots=True)
class DroppedLine:
    """A line InfluxDB rejected on its own: ``index`` into the written list."""

    index: int
    line: str
    error: str


@dataclass(slots=True)
class WriteResult:
    written: int = 0
    dropped: list[DroppedLine] = field(default_factory=list)
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not self.dropped


class InfluxWriter:
    """Writes line protocol to one database; see the module docstring for the rules."""

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
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.db = db
        self.rp = rp
        self._timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        self._pool = pool or urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username is not None:
            self._headers.update(make_headers(basic_auth=f"{username}:{password or ''}"))

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API --------------------------------------------------------------

    def ping(self) -> str:
        """The server's version; raise :class:`InfluxUnavailable` if it does not answer 204."""
        status, body, headers = self._request("GET", "/ping", None, {})
        if status != 204:
            raise InfluxUnavailable(f"ping: HTTP {status}: {_error_text(body)}", status)
        return str(headers.get("X-Influxdb-Version", ""))

    def create_database(self) -> None:
        """``CREATE DATABASE`` (idempotent in 1.x). Raise :class:`InfluxError` on refusal."""
        name = self.db.replace("\\", "\\\\").replace('"', '\\"')
        body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{name}"'}).encode()
        status, data, _ = self._request("POST", "/query", body, {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise InfluxError(f"CREATE DATABASE {self.db!r}: HTTP {status}: {_error_text(data)}", status)
        try:
            results = json.loads(data).get("results", [])
        except ValueError:
            results = []
        for result in results:
            if isinstance(result, dict) and "error" in result:
                raise InfluxError(f"CREATE DATABASE {self.db!r}: {result['error']}", status)

    def write(self, lines: list[str]) -> WriteResult:
        """Write line-protocol lines (ns precision); see the module docstring.

        Raises :class:`InfluxUnavailable` for anything worth retrying; the
        caller then re-sends the whole list (idempotent).
        """
        result = WriteResult()
        if lines:
            self._write_range(lines, 0, len(lines), result)
        return result

    # -- internals ------------------------------------------------------------

    def _write_range(self, lines: list[str], lo: int, hi: int, result: WriteResult) -> None:
        body = "\n".join(lines[lo:hi]).encode()
        params: dict[str, str] = {"db": self.db, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        path = "/write?" + urllib.parse.urlencode(params)
        status, data, _ = self._request("POST", path, body, {"Content-Type": "text/plain; charset=utf-8"})
        result.requests += 1
        if status in (200, 204):
            result.written += hi - lo
            return
        error = _error_text(data)
        if status == 413 or (status == 400 and _names_bad_points(error)):
            if hi - lo == 1:
                result.dropped.append(DroppedLine(lo, lines[lo], f"HTTP {status}: {error}"))
                return
            mid = (lo + hi) // 2
            self._write_range(lines, lo, mid, result)
            self._write_range(lines, mid, hi, result)
            return
        raise InfluxUnavailable(f"write {hi - lo} lines: HTTP {status}: {error}", status)

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, Any]:
        try:
            response = self._pool.request(
                method,
                self.url + path,
                body=body,
                headers={**self._headers, **headers},
                timeout=self._timeout,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxUnavailable(f"{method} {self.url}{path.split('?')[0]}: {exc}") from None
        return response.status, response.data, response.headers


def _names_bad_points(error: str) -> bool:
    lowered = error.lower()
    return any(word in lowered for word in _POINT_ERRORS)


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if key in data:
                return str(data[key])[:300]
    return text[:300]
