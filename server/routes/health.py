"""Service health for load balancers, systemd watchdogs and operators."""

from __future__ import annotations

import time
from collections import Counter

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from server import models
from server.deps import RuntimeDep, no_store

router = APIRouter(tags=["health"], dependencies=[Depends(no_store)])


@router.get(
    "/healthz",
    summary="Service health",
    description=(
        "`ok` (HTTP 200) when the MQTT subscription is connected and InfluxDB answered its last ping;"
        " `degraded` (HTTP 503) otherwise. Live answers keep being served while degraded, from memory."
        " The database is pinged by a background task, not per request."
    ),
    response_model=models.Health,
    responses={503: {"model": models.Health, "description": "Degraded: broker or database unavailable."}},
)
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    if runtime.broker is not None:
        broker = runtime.broker.health()
    else:
        broker = models.BrokerHealth(connected=False, last_message_age_s=None, error="not started")
    if runtime.database is not None:
        database = runtime.database.health()
    else:
        database = models.DatabaseHealth(
            reachable=False, last_check_age_s=None, error="not started", bootstrapped=False
        )
    # Judged states (silent past a multiple of heartbeat_s; a retained status by its own time), for
    # devices heard at all; configured devices never heard are not "seen".
    by_state = Counter(d.state for d in runtime.live.device_health() if d.state != "unknown")
    ok = broker.connected and database.reachable
    body = models.Health(
        status="ok" if ok else "degraded",
        site=runtime.live.site.site.id,
        uptime_s=round(time.monotonic() - runtime.started, 3),
        broker=broker,
        database=database,
        devices=models.DeviceHealth(
            seen=sum(by_state.values()),
            by_state=dict(by_state),
            clock_offset_s={d: round(o, 3) for d, o in sorted(runtime.live.clock_offsets().items())},
        ),
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=200 if ok else 503, headers={"Cache-Control": "no-store"}
    )
