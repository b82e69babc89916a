"""Every endpoint against its own OpenAPI document: schemathesis on the running server.

The real app under uvicorn, with real Mosquitto and InfluxDB behind it, on the
Dresden demo site with some live readings; schemathesis generates requests
from ``/openapi.json`` (valid and invalid) and checks each answer: no server
error, a documented status code and content type, and a body that conforms to
the documented schema.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest

from contracts import (
    FootfallCount,
    LineCount,
    LockerCompartmentState,
    ParkingBayState,
    encode,
    new_reading_id,
    topics,
    utcnow,
)
from district.demo import DEMO_SITE
from district.services import Service
from tests.conftest import Influx, wait_for
from tests.integration.test_server import health, publisher, serve, settings_for

pytestmark = pytest.mark.integration

SITE_ID = "dresden"
REPO = Path(__file__).resolve().parents[2]


def feed(broker: Service, prefix: str) -> None:
    """A few readings of every kind, so answers carry numbers, not only nulls."""
    now = utcnow()
    with publisher(broker) as pub:
        for n, status in enumerate(["free", "occupied", "free", "free"], start=1):
            msg = ParkingBayState(
                device_id="edge-dresdenaltmarkt", observed_at=now, reading_id=new_reading_id(),
                lot_id="dresdenaltmarkt", bay_id=f"AM-{n:03d}", status=status,  # type: ignore[arg-type]
            )  # fmt: skip
            pub.publish(topics.build(prefix, SITE_ID, msg.device_id, "parking_bay"), encode(msg))
        locker = LockerCompartmentState(
            device_id="edge-lockers-altmarkt", observed_at=now, reading_id=new_reading_id(),
            bank_id="lockers-altmarkt", compartment_id="S01", status="occupied", door="open",
        )  # fmt: skip
        pub.publish(topics.build(prefix, SITE_ID, locker.device_id, "locker"), encode(locker))
        footfall = FootfallCount(
            device_id="edge-cam-altmarkt", observed_at=now, reading_id=new_reading_id(), zone_id="altmarkt",
            camera_id="cam-altmarkt-north", interval_start=now - timedelta(seconds=60), occupancy=12,
            lines=[LineCount(line_id="L1_road_west_x250", towards=14, away=2)],
        )  # fmt: skip
        pub.publish(topics.build(prefix, SITE_ID, footfall.device_id, "footfall"), encode(footfall))


ADMIN_KEY = "schemathesis-admin-key-0123456789"

#: Requests per API operation; deterministic, so a failure reproduces.
MAX_EXAMPLES = 40


def test_every_answer_conforms_to_the_api_schema(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    settings = settings_for(
        DEMO_SITE, prefix, mosquitto, influx_db.url, influx_db.db,
        api_keys=f"schemathesis:{ADMIN_KEY}", state_dir=tmp_path / "state",
    )  # fmt: skip
    with serve(settings) as client:
        wait_for(lambda: health(client)[0] == 200, timeout=15, what="healthz ok")
        feed(mosquitto, prefix)
        wait_for(lambda: client.get("/v1/zones/altmarkt").json()["state"] == "ok", what="readings applied")
        # The schemathesis CLI: its pytest plugin does not run under pytest 9 (schemathesis 4.32).
        junit = tmp_path / "schemathesis.xml"
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{client.base_url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-deterministic",
                "--report",
                "junit",
                "--report-junit-path",
                str(junit),
                "--no-color",
                # The admin operations (display overrides, audit) are exercised past their key check too.
                "--header",
                f"X-API-Key: {ADMIN_KEY}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            cwd=REPO,  # where schemathesis.toml is
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        tree = ET.parse(junit)
        cases = tree.getroot().iter("testcase")
        operations = {c.get("name") for c in cases}
        # Every documented operation was exercised, not a subset.
        spec = client.get("/openapi.json").json()
        documented = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
        assert documented <= operations, documented - operations
