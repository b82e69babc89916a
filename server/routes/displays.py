"""Display feeds: sign states (JSON with ETags), their Server-Sent Events, operator overrides and the audit log.

The GET endpoints serve bytes the display engine serialized when the sign
changed (:mod:`server.displays.engine`), so a count display polling once a
second costs a dictionary lookup and a header compare; docs/displays.md has
the semantics.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from server import models
from server.auth import AdminDep
from server.displays import DisplayEngine, OverrideRejected, Sign
from server.displays.sse import EventStream
from server.errors import ApiError, NotFound

router = APIRouter(prefix="/v1/displays", tags=["displays"])

DisplayId = Annotated[str, Path(description="Display id from the site configuration.")]


class NotReady(ApiError):
    status_code = 503
    error = "not_ready"


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": models.ErrorOut, "description": "No display with this id in the site configuration."}
}
_ADMIN: dict[int | str, dict[str, Any]] = {
    401: {"model": models.ErrorOut, "description": "No X-API-Key header."},
    403: {"model": models.ErrorOut, "description": "The key is not an admin key."},
}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "If-None-Match matched the current ETag: the sign shows the same as before. No body."}
}
_CACHE = "no-cache"
#: One Server-Sent Event of a sign's stream (OpenAPI 3.1: the JSON in ``data`` by contentSchema).
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The state's event_id."},
        "event": {"const": "state"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/SignState"},
        },
    },
}


def engine_of(request: Request) -> DisplayEngine:
    engine: DisplayEngine = request.app.state.displays
    if not engine.started:
        raise NotReady("the display engine is not running")
    return engine


def sign_of(engine: DisplayEngine, display_id: str) -> Sign:
    sign = engine.sign(display_id)
    if sign is None:
        raise NotFound(f"no display {display_id!r} in site {engine.site.site.id!r}")
    return sign


def etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match (weak comparison): ``*``, or any listed tag equal to ``etag``."""
    if header == etag:
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class Prebuilt(Response):
    """A 200 answer whose body and headers were built when the sign changed (nothing to encode per request)."""

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.body = body
        self.raw_headers = list(headers)
        self.background = None


def cached(request: Request, body: bytes, etag: str, headers: list[tuple[bytes, bytes]]) -> Response:
    inm = request.headers.get("if-none-match")
    if inm is not None and etag_matches(inm, etag):
        return Response(status_code=304, headers={"etag": etag, "cache-control": _CACHE})
    return Prebuilt(body, headers)


_STATE_RULES = (
    "`value`/`text` are what the sign shows now. Past `stale_after_s` without a sensor reading, or with fewer"
    " than `trust_share` of its bays reporting, a sign shows its fallback (`state: fallback`, `value: null`),"
    " never an old number. The ETag is the `event_id`: it changes whenever anything the sign shows changes"
    " (value, text, mode, state, stale, trusted, override); `If-None-Match` answers 304 with no body."
    " `data_age_s`, `trust` and `sources` are refreshed in between without a new event id."
)


@router.get(
    "",
    summary="Every display's sign state",
    description=f"All displays of the site, in configuration order. The ETag is the highest event id. {_STATE_RULES}",
    response_model=None,
    responses={200: {"model": list[models.SignState], "description": "The sign states."}, **_NOT_MODIFIED},
)
async def list_displays(request: Request) -> Response:
    return cached(request, *engine_of(request).list_body())


@router.get(
    "/audit",
    summary="The override audit log (admin)",
    description="Every override set, cleared or expired, newest first: who (the API key's name), when, what,"
    " until. Needs an admin key in `X-API-Key`.",
    response_model=list[models.AuditEntry],
    responses=_ADMIN,
)
async def audit(
    request: Request,
    who: AdminDep,
    display_id: Annotated[str | None, Query(description="Only this display's entries.", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many entries.")] = 100,
) -> list[models.AuditEntry]:
    return engine_of(request).audit(display_id, limit)


@router.get(
    "/{display_id}",
    summary="One display's sign state",
    description=_STATE_RULES,
    response_model=None,
    responses={200: {"model": models.SignState, "description": "The sign state."}, **_NOT_MODIFIED, **_NOT_FOUND},
)
async def get_display(display_id: DisplayId, request: Request) -> Response:
    engine = engine_of(request)
    sign = engine.signs.get(display_id)
    if sign is None:
        sign = sign_of(engine, display_id)
    return cached(request, sign.body, sign.etag, sign.headers)


@router.get(
    "/{display_id}/events",
    summary="One display's sign state as Server-Sent Events",
    description="`text/event-stream`: `id: <event_id>`, `event: state`, `data: <the sign state JSON>` on every"
    " change; the current state at once on connect unless `Last-Event-ID` equals the current event id (so a"
    " client that resumes never misses the latest state); a `: ping` comment after 15 s without an event."
    " A slow client gets the newest state, skipping ones it had no time to read. Without `max_s` the stream"
    " does not end by itself.",
    response_model=None,
    responses={
        200: {
            "description": "An event stream: each event's `data` is the sign state (SignState) as JSON.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **_NOT_FOUND,
    },
)
async def events(
    display_id: DisplayId,
    request: Request,
    max_s: Annotated[
        float | None,
        Query(
            gt=0,
            le=86_400,
            description="End the stream after this many seconds (for a proxy that cuts long responses, or a"
            " bounded test); the client reconnects with `Last-Event-ID`. Default: never.",
        ),
    ] = None,
) -> Response:
    engine = engine_of(request)
    sign = sign_of(engine, display_id)
    sub = engine.subscribe(sign, request.headers.get("last-event-id"))
    heartbeat: float = request.app.state.sse_heartbeat_s
    return EventStream(engine, sub, heartbeat, max_s)


@router.put(
    "/{display_id}/override",
    summary="Set an operator mode on a sign (admin)",
    description="`blank`, `full`, `closed`, `text` (with `text`, at most 16 printable ASCII characters) or `test`"
    " (8888), until `until` (RFC 3339, in the future, at most the server's `override_max_s` ahead, 7 days by"
    " default); it then ends by itself. Replaces any override in force. Survives a restart; audited.",
    response_model=models.SignState,
    responses={
        **_ADMIN,
        **_NOT_FOUND,
        400: {
            "description": "The body is not JSON (FastAPI's answer).",
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
                }
            },
        },
    },
)
async def put_override(display_id: DisplayId, body: models.OverrideIn, request: Request, who: AdminDep) -> Response:
    engine = engine_of(request)
    sign = sign_of(engine, display_id)
    try:
        engine.set_override(sign, body.mode, body.text, body.until, who, body.reason)
    except OverrideRejected as exc:
        # FastAPI's validation shape, as for every other 422 of the API (detail[].type is the stable code).
        field = "text" if "text" in str(exc) else "until"
        raise RequestValidationError(
            [{"type": "invalid_override", "loc": ("body", field), "msg": str(exc), "input": None}]
        ) from None
    return Prebuilt(sign.body, sign.headers)


@router.delete(
    "/{display_id}/override",
    summary="End a sign's operator mode (admin)",
    description="The sign goes back to `auto` at once; audited. Without an override in force, nothing changes.",
    response_model=models.SignState,
    responses={**_ADMIN, **_NOT_FOUND},
)
async def delete_override(display_id: DisplayId, request: Request, who: AdminDep) -> Response:
    engine = engine_of(request)
    sign = sign_of(engine, display_id)
    engine.clear_override(sign, who)
    return Prebuilt(sign.body, sign.headers)


async def _override_methods(display_id: DisplayId) -> Response:
    """405 naming both methods of the override resource (Starlette names only the first route's)."""
    return Response(status_code=405, headers={"allow": "PUT, DELETE"})


router.add_api_route(
    "/{display_id}/override",
    _override_methods,
    methods=["GET", "HEAD", "POST", "PATCH", "OPTIONS"],
    include_in_schema=False,
)
