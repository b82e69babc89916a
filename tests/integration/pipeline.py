"""Helpers for whole-path tests (edge agents -> broker -> gateway -> InfluxDB -> confirmation -> server):
the Dresden site's bay controllers as in-process edge agents, readings for their bays, what InfluxDB holds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from contracts import ParkingBayState, new_reading_id, utcnow
from contracts.storage import M_PARKING_BAY
from district.services import BrokerAccess
from edge.agent import EdgeAgent
from edge.config import DeviceConfig
from tests.conftest import REPO, Influx

DRESDEN = REPO / "district" / "sites" / "dresden.yaml"
SITE = "dresden"
#: Dresden's bay controllers, their lot and the prefix of its bay ids.
BAY_DEVICES = {
    "edge-dresdenaltmarkt": ("dresdenaltmarkt", "AM"),
    "edge-dresdencitycenter": ("dresdencitycenter", "CC"),
    "edge-dresdenwoehrlflorentinum": ("dresdenwoehrlflorentinum", "WF"),
}


def edge_agent(device: str, tmp_path: Path, prefix: str, access: BrokerAccess, protocol: str, **mqtt: Any) -> EdgeAgent:
    """An edge agent without sensors (readings enter through ``emit``), talking ``protocol``."""
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": device, "site_id": SITE},
            "mqtt": {
                **access.edge_mqtt(),
                "protocol": protocol,
                "topic_prefix": prefix,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "keepalive_s": 5,
                "max_inflight": 50,
                "confirm_timeout_s": 5.0,
                **mqtt,
            },
            "outbox": {"path": str(tmp_path / f"{device}.outbox.sqlite"), "max_messages": 100_000},
            "status_interval_s": 5,
        }
    )
    return EdgeAgent(cfg)


def bay_readings(device: str, n: int, start: int = 0, lot: tuple[str, str] | None = None) -> list[ParkingBayState]:
    """``n`` readings of ``device``'s lot (``lot``: its id and bay-id prefix when ``device`` is not one of
    :data:`BAY_DEVICES`), bays cycling through the first 40, 1 ms apart in device time."""
    lot, head = lot or BAY_DEVICES[device]
    t0 = utcnow() - timedelta(minutes=2)
    return [
        ParkingBayState(
            device_id=device,
            observed_at=t0 + timedelta(milliseconds=start + i),
            reading_id=new_reading_id(),
            lot_id=lot,
            bay_id=f"{head}-{(start + i) % 40 + 1:03d}",
            status="occupied" if (start + i) % 3 else "free",
        )
        for i in range(n)
    ]


def stored_ids(influx: Influx) -> list[str]:
    """Every parking-bay reading id InfluxDB holds, once per stored point."""
    return [str(r["reading_id"]) for r in influx.query(f'SELECT reading_id FROM "{M_PARKING_BAY}"')]
