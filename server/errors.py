"""The API's errors: a small hierarchy, one JSON shape (:class:`server.models.ErrorOut`)."""

from __future__ import annotations

from typing import ClassVar

from fastapi import Request
from fastapi.responses import JSONResponse

from server.models import ErrorOut


class ApiError(Exception):
    status_code = 400
    error = "bad_request"
    #: Extra response headers (a 401's ``WWW-Authenticate``).
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status_code = 404
    error = "not_found"


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    body = ErrorOut(error=exc.error, detail=exc.detail)
    headers = {"Cache-Control": "no-store", **(exc.headers or {})}
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=headers)
