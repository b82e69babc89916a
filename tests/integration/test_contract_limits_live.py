"""Contract limits against real Mosquitto and InfluxDB 1.x (bugcases 12 and 15).

* A status carrying ``Infinity`` / ``1e999`` is rejected and dead-lettered, never
  acked and stored with those fields silently dropped by influxdb-client.
* RFC 3339 timestamps with offsets, lower-case letters and long fractions are
  stored at the instant they mean; a space-separated one is ``bad_timestamp``.
* The server's lot state agrees with the free count for lots whose
  ``full_below`` is 0 or larger than the lot (the services start on such a
  site; ``district check-config`` rejects the latter).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contracts import encode, new_reading_id, topics, utcnow
from contracts.storage import M_CAMERA_HEALTH, M_DEVICE_STATUS, M_PARKING_BAY
from district.services import Service
from gateway.service import Gateway
from tests.conftest import Influx, wait_for
from tests.integration.test_gateway import Publisher, bay, gateway_settings, topic_of
from tests.integration.test_server import serve, settings_for

pytestmark = pytest.mark.integration


def test_non_finite_numbers_and_rfc3339_forms_at_the_gateway(
    mosquitto: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    now = utcnow().replace(microsecond=0) - timedelta(seconds=5)
    status_topic = topic_of(prefix, "cam-1", "status")
    bay_topic = topic_of(prefix, "edge-dresdenaltmarkt", "parking_bay")

    def status(**numbers: str) -> bytes:
        base = {"kind": "status", "device_id": "cam-1", "observed_at": now.isoformat(), "reading_id": new_reading_id()}
        body = json.dumps({**base, "state": "online", "uptime_s": "@U", "cameras": ["@C"]})
        camera = (
            f'{{"camera_id": "c1", "state": "ok", "fps": 10, "dropped_frames": {numbers.get("dropped", "0")},'
            f' "last_frame_age_s": {numbers.get("age", "0.5")}}}'
        )
        return body.replace('"@U"', numbers.get("uptime", "1.5")).replace('"@C"', camera).encode()

    def bay_at(text: str, bay_id: str) -> tuple[bytes, str]:
        data = json.loads(encode(bay(bay_id=bay_id)))
        data["observed_at"] = text
        return json.dumps(data).encode(), data["reading_id"]

    rejected = [
        ("not_json", status_topic, status(uptime="Infinity", age="1e999")),  # bugcase 15's payload
        ("not_json", status_topic, status(age="NaN")),
        ("invalid_value", status_topic, status(age="1e999")),
        ("invalid_value", status_topic, status(dropped="9223372036854775808")),  # beyond int64
        ("bad_timestamp", bay_topic, bay_at(now.strftime("%Y-%m-%d %H:%M:%SZ"), "AM-001")[0]),
        ("bad_timestamp", bay_topic, bay_at(now.strftime("%Y-%m-%dT%H:%M"), "AM-001")[0]),
    ]
    plus_0530: datetime = now.astimezone(timezone(timedelta(hours=5, minutes=30)))
    accepted_bays = [
        bay_at(plus_0530.strftime("%Y-%m-%dT%H:%M:%S.123456789+05:30"), "AM-002"),  # 9 digits: truncated
        bay_at(now.strftime("%Y-%m-%dt%H:%M:%Sz"), "AM-003"),
        bay_at(now.strftime("%Y-%m-%dT%H:%M:%S-00:00"), "AM-004"),
    ]
    good_status = status()

    settings = gateway_settings(mosquitto, influx_db, prefix, tmp_path)
    gw = Gateway(settings)
    gw.start()
    pub = Publisher(mosquitto)
    try:
        assert gw.wait_ready(15), "gateway did not connect and subscribe"
        stream = [(t, p) for _, t, p in rejected] + [(bay_topic, p) for p, _ in accepted_bays]
        pub.send_many([*stream, (status_topic, good_status)])
        # +1: the gateway's own retained status comes through the same pipe.
        wait_for(lambda: gw.stats().acked >= len(stream) + 2, 20, what="every message acknowledged")
        expected: dict[str, int] = {}
        for reason, _, _ in rejected:
            expected[reason] = expected.get(reason, 0) + 1
        assert gw.stats().rejected == expected
    finally:
        pub.close()
        gw.stop()

    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in letters] == [reason for reason, _, _ in rejected]

    # Only the good status reached history, with every numeric field present.
    statuses = influx_db.query(f"SELECT * FROM \"{M_DEVICE_STATUS}\" WHERE device='cam-1'")
    assert [(s["uptime_s"], s["reading_id"]) for s in statuses] == [(1.5, json.loads(good_status)["reading_id"])]
    cams = influx_db.query(f"SELECT * FROM \"{M_CAMERA_HEALTH}\" WHERE device='cam-1'")
    assert [(c["last_frame_age_s"], c["dropped_frames"]) for c in cams] == [(0.5, 0)]

    # Each accepted form is stored at the instant it names (ns time of the point).
    now_ns = int(now.timestamp()) * 1_000_000_000
    rows = influx_db.query(f'SELECT bay, reading_id FROM "{M_PARKING_BAY}"')
    # (to the microsecond: the three digits below it are the storage contract's tie-breaker)
    stored = {r["reading_id"]: (r["bay"], r["time"] // 1000 * 1000) for r in rows}
    assert stored == {
        accepted_bays[0][1]: ("AM-002", now_ns + 123_456_000),
        accepted_bays[1][1]: ("AM-003", now_ns),
        accepted_bays[2][1]: ("AM-004", now_ns),
    }


SITE_12 = """
site: {id: itest, name: Bugcase 12}
parking:
  - {id: noreserve, name: No reserve, coords: {lat: 51.05, lng: 13.73}, bays: [c1, c2], full_below: 0}
  - {id: tiny, name: One bay, coords: {lat: 51.05, lng: 13.73}, bays: [d1], full_below: 5}
"""


def test_lot_state_agrees_with_the_free_count(
    mosquitto: Service, influxd: Service, influx_db: Influx, prefix: str, tmp_path: Path
) -> None:
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_12)
    settings = settings_for(site_file, prefix, mosquitto, influx_db.url, influx_db.db)
    topic = topics.build(prefix, "itest", "dev1", "parking_bay")
    with serve(settings) as client:
        pub = Publisher(mosquitto)
        try:
            msgs = []
            for lot_id, bay_id, status in (("noreserve", "c1", "occupied"), ("noreserve", "c2", "occupied")):
                data = json.loads(encode(bay(device="dev1", lot=lot_id, bay_id=bay_id)))
                data["status"] = status
                msgs.append((topic, json.dumps(data).encode()))
            data = json.loads(encode(bay(device="dev1", lot="tiny", bay_id="d1")))
            data["status"] = "free"
            msgs.append((topic, json.dumps(data).encode()))
            pub.send_many(msgs)

            def states() -> dict[str, tuple[int, str]] | None:
                got = {x["id"]: (x["free"], x["state"]) for x in client.get("/v1/parking/lots").json()}
                return got if all(state != "nodata" for _, state in got.values()) else None

            got = wait_for(states, 15, what="both lots to have data")
        finally:
            pub.close()
    assert got == {"noreserve": (0, "full"), "tiny": (1, "open")}
