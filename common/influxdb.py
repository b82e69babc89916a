"""What both directions of InfluxDB share: one error hierarchy, one auth helper, URL and InfluxQL quoting.

The gateway writes (``gateway/influx.py``), the server queries
(``server/influx.py``); both speak InfluxDB's 1.x HTTP API with ``httpx`` and
take their credentials from settings through :class:`Credentials`. Every
failure either of them reports is an :class:`InfluxError`:

* :class:`InfluxError`: InfluxDB refused a request (``status`` is its HTTP
  status, 0 when there was no answer).
* :class:`InfluxUnavailable`: worth retrying (down, overloaded, slow, no
  answer), with the server's ``Retry-After`` when it sent one.
* :class:`InfluxFatal`: a configuration error (credentials, missing database
  or bucket, a refused request) naming what to ``fix``; a subclass of
  :class:`InfluxUnavailable`, so code that only knows "retry" retries and drops nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx


class InfluxError(Exception):
    """InfluxDB refused a request or did not answer. ``status`` is the HTTP status (0 = no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status

    @property
    def database_missing(self) -> bool:
        """InfluxDB answered 404: the database (or bucket) does not exist."""
        return self.status == 404


class InfluxUnavailable(InfluxError):
    """A retriable failure: down, overloaded, slow, no answer. Nothing was dropped; the caller retries.

    ``retry_after_s``: the server's ``Retry-After`` in seconds, or None.
    """

    def __init__(self, message: str, status: int = 0, retry_after_s: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after_s = retry_after_s


class InfluxFatal(InfluxUnavailable):
    """A configuration error: credentials, a missing database or bucket, a refused request.

    Nothing was dropped, and retrying alone will not help until someone fixes
    what ``fix`` names. A subclass of :class:`InfluxUnavailable` so that code
    which only knows "retry" still retries (and drops nothing).
    """

    def __init__(self, message: str, status: int, fix: str) -> None:
        super().__init__(message, status)
        self.fix = fix


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class InfluxSettings(Protocol):
    """The InfluxDB part of ``GatewaySettings`` and ``ServerSettings`` (read-only)."""

    @property
    def influx_url(self) -> str: ...
    @property
    def influx_db(self) -> str: ...
    @property
    def influx_username(self) -> str | None: ...
    @property
    def influx_password(self) -> _Secret | None: ...
    @property
    def influx_token(self) -> _Secret | None: ...
    @property
    def influx_timeout_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Credentials:
    """How to authenticate to InfluxDB: a token (2.x/3.x 1.x-compatible endpoints) or user and password (1.x).

    A non-empty ``token`` wins and is sent as ``Authorization: Token ...``;
    else a non-empty ``username`` is sent as HTTP basic auth (an absent
    password as ""); else no credentials.
    """

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: InfluxSettings) -> Credentials:
        """``influx_token``, ``influx_username`` and ``influx_password`` of gateway or server settings."""

        def reveal(secret: _Secret | None) -> str | None:
            return None if secret is None else secret.get_secret_value()

        return cls(reveal(settings.influx_token), settings.influx_username, reveal(settings.influx_password))

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for a token, else {}."""
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def basic_auth(self) -> httpx.BasicAuth | None:
        """HTTP basic auth when there is a username and no token, else None."""
        if self.token or not self.username:
            return None
        return httpx.BasicAuth(self.username, self.password or "")


def base_url(url: str) -> str:
    """InfluxDB's base URL without a trailing slash (``http://host:8086``)."""
    return url.rstrip("/")


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (database, measurement, tag or field name)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    """An InfluxQL string literal in single quotes (a tag value in a WHERE clause)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def describe(exc: httpx.HTTPError) -> str:
    """``ExceptionType: message`` of a request that got no answer, at most 300 characters."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
