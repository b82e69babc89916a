"""The live-state feed as Server-Sent Events: lots, lockers, zones and signs over one connection (public)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from server.displays.sse import EventStream
from server.errors import ApiError
from server.livefeed import LiveFeed

router = APIRouter(prefix="/v1/live", tags=["live"])


class NotReady(ApiError):
    status_code = 503
    error = "not_ready"


def _event(name: str, schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Rises with every event of the feed."},
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}},
            },
        },
    }


#: One event of the live feed (OpenAPI 3.1: the JSON in ``data`` by contentSchema).
LIVE_EVENT: dict[str, Any] = {
    "oneOf": [
        _event("lots", "ParkingLot"),
        _event("lockers", "LockerBank"),
        _event("zones", "ZoneCrowd"),
        _event("displays", "SignState"),
    ]
}


@router.get(
    "/events",
    summary="Live lots, lockers, zones and signs as Server-Sent Events",
    description="`text/event-stream`, one event per changed resource, each carrying the resource's whole"
    " summary as JSON: `event: lots` (as `GET /v1/parking/lots`), `lockers` (`GET /v1/lockers`), `zones`"
    " (`GET /v1/zones`), `displays` (`GET /v1/displays`). On connect every current summary is sent at once"
    " (also on a reconnect: `Last-Event-ID` is not needed). A resource gets an event when a reading changed"
    " it or time did (a bay turning stale), not when only its ages moved; at most one round of events per"
    " 0.5 s, so each resource at most twice a second. A slow client gets the newest summary of each resource,"
    " skipping ones it had no time to read. A `: ping` comment after 15 s without an event. Without `max_s`"
    " the stream does not end by itself.",
    response_model=None,
    responses={
        200: {
            "description": "An event stream: each event's `data` is a list of the resource's summaries as JSON.",
            "content": {"text/event-stream": {"schema": LIVE_EVENT}},
        },
    },
)
async def live_events(
    request: Request,
    max_s: Annotated[
        float | None,
        Query(
            gt=0,
            le=86_400,
            description="End the stream after this many seconds (for a proxy that cuts long responses, or a"
            " bounded test); the client reconnects. Default: never.",
        ),
    ] = None,
) -> Response:
    feed: LiveFeed = request.app.state.live_feed
    if not feed.started:
        raise NotReady("the live feed is not running")
    heartbeat: float = request.app.state.sse_heartbeat_s
    return EventStream(feed, feed.subscribe(), heartbeat, max_s)
