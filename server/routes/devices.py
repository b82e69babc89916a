"""Device health for operators: last heard, judged state, battery, signal, outbox, clock offset, cameras."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from server import models
from server.auth import OperatorDep, operator_responses
from server.deps import LiveDep, no_store
from server.errors import NotFound

router = APIRouter(prefix="/v1/devices", tags=["devices"], dependencies=[Depends(no_store)])

_RULES = (
    "State, first rule that applies: `offline` when its last status says so (a last will, a clean stop);"
    " `silent` when nothing was heard from it for `silent_after_s` (its `heartbeat_s` times the site's"
    " `silent_after_heartbeats`, default 3); `unknown` when configured but never heard; otherwise what it"
    " reports. A status the broker retained is judged by its own `observed_at`, not by when it was delivered."
    " Operator key required."
)


@router.get(
    "",
    summary="Health of every device",
    description=f"Configured devices in site order, then any other device heard. {_RULES}",
    response_model=list[models.DeviceOut],
    responses=operator_responses(),
)
async def list_devices(live: LiveDep, who: OperatorDep) -> list[models.DeviceOut]:
    return live.device_health()


@router.get(
    "/{device_id}",
    summary="Health of one device",
    description=_RULES,
    response_model=models.DeviceOut,
    responses={
        **operator_responses(),
        404: {"model": models.ErrorOut, "description": "No such device configured or heard."},
    },
)
async def get_device(
    live: LiveDep,
    who: OperatorDep,
    device_id: Annotated[str, Path(description="Device id.", max_length=64)],
) -> models.DeviceOut:
    device = live.device(device_id)
    if device is None:
        raise NotFound(f"no device {device_id!r} configured or heard in site {live.site.site.id!r}")
    return device
