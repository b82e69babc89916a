"""The admin API-key check: ``X-API-Key`` against the keys of the settings.

Every configured key is compared (``hmac.compare_digest``, all of them, so the
time taken does not tell which one nearly matched); the caller is known by
the key's *name*, which is what the audit log records. Keys never reach a log
or an error message. 401 without a key, 403 with a wrong one (or when the
server has no admin keys configured). The operators' issue will generalise
this to roles; routes only depend on :data:`AdminDep`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from server.errors import ApiError

API_KEY_HEADER = "X-API-Key"


class Unauthorized(ApiError):
    status_code = 401
    error = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    error = "forbidden"


class AdminKeys:
    """Key name by key, for one server; built once from the settings."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = [(name, key.encode()) for name, key in keys.items()]

    def __repr__(self) -> str:  # never the keys
        return f"AdminKeys({len(self._keys)} key(s))"

    def __len__(self) -> int:
        return len(self._keys)

    def who(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None."""
        given = presented.encode()
        found: str | None = None
        for name, key in self._keys:
            if hmac.compare_digest(given, key) and found is None:
                found = name
        return found


_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An admin API key (settings api_keys).")


async def require_admin(request: Request, key: Annotated[str | None, Security(_header)]) -> str:
    """The calling admin key's name; 401 without a key, 403 with a wrong one."""
    if not key:
        raise Unauthorized(f"this needs an admin key in the {API_KEY_HEADER} header")
    keys: AdminKeys = request.app.state.admin_keys
    name = keys.who(key)
    if name is None:
        raise Forbidden("the API key is not an admin key" if len(keys) else "this server has no admin keys configured")
    return name


AdminDep = Annotated[str, Depends(require_admin)]


async def require_operator(request: Request, key: Annotated[str | None, Security(_header)]) -> str:
    """The calling key's name, for operator routes (history, devices, alerts); 401/403 as for admins.

    Until roles exist every admin key is also an operator key.
    """
    if not key:
        raise Unauthorized(f"this needs an operator key in the {API_KEY_HEADER} header")
    keys: AdminKeys = request.app.state.admin_keys
    name = keys.who(key)
    if name is None:
        raise Forbidden("the API key is not an operator key" if len(keys) else "this server has no keys configured")
    return name


OperatorDep = Annotated[str, Depends(require_operator)]


def operator_responses() -> dict[int | str, dict[str, object]]:
    """The 401/403 answers an operator route documents in OpenAPI."""
    from server import models

    return {
        401: {"model": models.ErrorOut, "description": "No X-API-Key header."},
        403: {"model": models.ErrorOut, "description": "The key is not an operator key."},
    }
