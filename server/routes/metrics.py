"""``GET /metrics``: the server's Prometheus metrics (docs/metrics.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from server.metrics import ServerMetrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="The Prometheus text format: request latency and counts by route template, live-state sizes,"
    " SSE subscribers, sign events, broker and database health, stream messages and rejections (docs/metrics.md)."
    " Counts only, no secrets: public by default; the access map (`/metrics`) can require a role, and"
    " Prometheus can send the key as `Authorization: Bearer`.",
    response_class=Response,
    responses={
        200: {
            "description": "The metrics.",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        }
    },
)
async def metrics(request: Request) -> Response:
    registry: ServerMetrics = request.app.state.metrics
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
