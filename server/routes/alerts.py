"""Alerts for operators: what needs attention now (docs in :mod:`server.alerts`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server import models
from server.alerts import AlertEngine
from server.auth import OperatorDep, operator_responses
from server.deps import no_store

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], dependencies=[Depends(no_store)])


@router.get(
    "",
    summary="Current alerts",
    description="Every condition that needs attention now, most severe first, then oldest. An alert keeps its"
    " `since` while its cause holds and disappears when it goes; each is also published retained on MQTT"
    " (`{prefix}/v1/{site}/alerts/{kind}/{subject type}/{subject id}`, an empty payload when it clears)."
    " Kinds and thresholds: device offline or silent, camera frozen/black/disconnected, battery below 20 %"
    " (critical below 10 %), clock off by over 60 s (critical over 1 h), outbox growing, a lot with fewer than"
    " 75 % of its bays reporting, bays unchanged for 20x their lot's mean change interval (at least 6 h),"
    " a bay changing 6 times in 10 min, 5 % or more of the messages of the last 5 min rejected."
    " Operator key required.",
    response_model=list[models.Alert],
    responses=operator_responses(),
)
async def list_alerts(request: Request, who: OperatorDep) -> list[models.Alert]:
    engine: AlertEngine = request.app.state.alerts
    return engine.alerts()
