"""A simulated day with faults, then the API's answers against the truth ledger (issue 13, "What it must show").

Real processes: Mosquitto (TLS, passwords, ACL, one provisioned identity per
simulated device), InfluxDB, ``district gateway`` and ``district server`` on
a small city (6 lots, 6 locker banks, 2 cameras) from
:mod:`firmware_sim.city.sitegen`; the fleet (:class:`CityFleet`) runs in this
process at 1,200 x real time, so 72 s are a simulated day. While it runs, the
test asks ``/v1/parking/lots`` twice a second; afterwards every answer is
checked against what the ledger says truly happened:

* a lot shown fresh has a free count inside the truth's range over the window
  the answer may reflect (see :func:`_window`), widened only by bays whose
  sensor was flapping and by bays the API itself calls unknown;
* a lot whose device has been off longer than ``stale_after_s`` is shown
  stale, with no bay counted free;
* no reading is lost: once the fleet stops producing and every outbox is
  confirmed empty, InfluxDB holds exactly the readings the devices produced,
  and the footfall it holds sums to the ledger's crossings.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from contracts.configfile import load_model
from contracts.site import SiteConfig
from district.provision import GATEWAY, provision
from district.services import Service, ServiceError, find_binary, start_mosquitto
from firmware_sim.city.faults import FaultSpec
from firmware_sim.city.fleet import BrokerTarget, CityFleet
from firmware_sim.city.ledger import LedgerReader, free_range
from firmware_sim.city.sitegen import CityShape, write_site
from tests.conftest import Influx, mqtt_access, need, wait_for
from tests.integration.test_gateway import _gateway_process
from tests.integration.test_server_main import start_server_process

pytestmark = pytest.mark.integration

STALE_S = 20.0
REFRESH_S = 4.0
#: Longest a reading may take from the device to the API while all is well: a publish, the gateway's
#: confirmation-independent forward to the server over MQTT, and one poll of ours (0.5 s).
LAG_S = 3.0
RUN_S = 72.0
SPEED = 1200.0  # 72 s real = 24 h simulated
SHAPE = CityShape(
    site_id="city",
    bays=120,
    lots=6,
    banks=6,
    compartments_per_bank=8,
    cameras=2,
    lot_stale_after_s=STALE_S,
    bank_stale_after_s=STALE_S,
    zone_stale_after_s=60.0,
)
FAULTS = [
    "kind=battery,devices=lockers,rate=5",
    "kind=skew,devices=dev-lot-004,s=60,at=5",
    "kind=flap,devices=dev-lot-003,n=2,at=10,for=30",
    "kind=garbage,devices=lots|cameras,n=5,at=12",
    "kind=dropout,devices=dev-lot-001,at=15,for=40",
    "kind=partition,devices=dev-lot-002|dev-bank-00*,at=20,for=15",
    "kind=step,devices=dev-lot-004,s=-30,at=30",
    "kind=power_cut,devices=all,at=60,for=4",
]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SiteConfig, Path, Service]]:
    """The small city's site file, and a broker provisioned for its devices."""
    need(find_binary("mosquitto") is not None, "mosquitto is not installed (apt-get install mosquitto)")
    root = tmp_path_factory.mktemp("city")
    site_path = root / "city.yaml"
    write_site(site_path, SHAPE)
    site = load_model(site_path, SiteConfig)
    pki = provision(site, root / "pki", broker_hosts=["127.0.0.1", "localhost"], install_dir=None, broker_dir=None)
    try:
        broker = start_mosquitto(root / "mosquitto", pki=pki)
    except ServiceError as exc:
        pytest.fail(str(exc))
    yield site, site_path, broker
    broker.stop()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _window(t_before: float, t_after: float, outages: list[tuple[float, float]]) -> tuple[float, float]:
    """The real-time span whose truth an answer asked at [t_before, t_after] may show.

    Normally the last LAG_S seconds. If the lot's device was off or cut off
    (dropout, partition, power cut) at any moment since, the API may still show
    what the device last said before that began (fresh for up to
    ``stale_after_s``, which the staleness check below bounds).
    """
    start = t_before - LAG_S
    for a, b in outages:
        if a <= t_after and b + LAG_S >= start:
            start = min(start, a - LAG_S)
    return start, t_after


def test_api_matches_the_truth_ledger_through_a_simulated_day_with_faults(
    city: tuple[SiteConfig, Path, Service], influx_db: Influx, tmp_path: Path
) -> None:
    site, site_path, broker = city
    prefix = "district"  # the provisioned ACL binds readings to this prefix
    gw_env = mqtt_access(broker, GATEWAY).settings()
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(
        **gw_env,
        topic_prefix=prefix,
        mqtt_client_id=f"gw-{influx_db.db}",
        influx_url=influx_db.url,
        influx_db=influx_db.db,
        site_config=site_path,
        dead_letter_path=tmp_path / "dead.jsonl",
    )
    gateway = _gateway_process(settings, tmp_path / "gateway.log")
    server, port, server_log = start_server_process(broker, influx_db, prefix, tmp_path, site_path)
    base = f"http://127.0.0.1:{port}"
    ledger_path = tmp_path / "ledger.sqlite"
    fleet = CityFleet(
        site,
        broker=BrokerTarget(broker.host, broker.port, prefix, broker.pki.out / "identities" if broker.pki else None),
        work_dir=tmp_path / "fleet",
        ledger_path=ledger_path,
        speed=SPEED,
        seed=13,
        start_at=datetime.fromisoformat("2026-11-23T00:00:00+01:00"),  # a Monday: deliveries, commuters
        tick_s=0.25,
        refresh_s=REFRESH_S,
        footfall_interval_s=5.0,
        status_interval_s=5.0,
        faults=[FaultSpec.parse(f) for f in FAULTS],
    )
    answers: list[tuple[float, float, list[dict[str, Any]]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            t0 = time.time()
            try:
                lots = _get(f"{base}/v1/parking/lots")
            except OSError:
                continue
            answers.append((t0, time.time(), lots))

    try:
        wait_for(lambda: _healthy(base), 60, what="server healthz")
        fleet.start()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(RUN_S)  # the simulated day runs; the poller records the API meanwhile
        stop.set()
        poller.join(10)
        fleet.pause()
        wait_for(lambda: fleet.stats()["pending"] == 0, 90, interval=0.5, what="every outbox confirmed empty")
        stats = fleet.stats()
    finally:
        stop.set()
        fleet.stop()
        for proc in (gateway, server):
            proc.terminate()
        for proc in (gateway, server):
            try:
                proc.wait(30)
            except Exception:
                proc.kill()

    ledger = LedgerReader(ledger_path)
    try:
        started = float(ledger.meta()["started_at"])
        outages: dict[str, list[tuple[float, float]]] = {}
        for f in ledger.faults(("dropout", "partition", "power_cut")):
            outages.setdefault(f.device, []).append((f.start, f.end))
        flaps = [(dev, f.start, f.end) for f in ledger.faults(("flap",)) for dev in [f.device]]
        owner = {lot_id: d.id for d in site.devices for lot_id in d.lots}
        changes = {lot.id: ledger.bay_changes(lot.id) for lot in site.parking}
        produced = ledger.produced()
        crossings = ledger.footfall_totals()
    finally:
        ledger.close()

    assert len(answers) > 60, "the API was hardly asked"
    checked = stale_seen = 0
    problems: list[str] = []
    for t_before, t_after, lots in answers:
        if t_before < started + 8:  # the fleet's first connections and full refresh
            continue
        for lot in lots:
            dev = owner[lot["id"]]
            off = outages.get(dev, [])
            dropped = [(a, b) for a, b in off if b - a > STALE_S]  # long enough to go stale
            if any(a + STALE_S + LAG_S <= t_before and t_after <= b for a, b in dropped):
                stale_seen += 1
                if lot["fresh"] or lot["free"] != 0:
                    problems.append(f"{t_before - started:.1f}s {lot['id']}: device off > stale_after_s, API {lot}")
                continue
            if not lot["fresh"]:
                assert lot["free"] == 0, f"a stale lot counts free bays: {lot}"
                continue
            start, end = _window(t_before, t_after, off)
            lo, hi = free_range(changes[lot["id"]], start, end)
            slack = sum(
                2 for d, a, b in flaps if d == dev and a <= end and b + REFRESH_S + LAG_S >= start
            )  # two flapping bays per flap fault
            if not lo - slack - lot["unknown"] <= lot["free"] <= hi + slack:
                problems.append(
                    f"{t_before - started:.1f}s {lot['id']}: API free {lot['free']} (unknown {lot['unknown']}), "
                    f"truth {lo}..{hi} over [{start - started:.1f}, {end - started:.1f}] s"
                )
            checked += 1
    assert stale_seen >= 5, f"the dropout of dev-lot-001 was never seen stale ({stale_seen} answers)"
    assert checked > 200
    assert problems == [], f"{len(problems)} of {checked} fresh answers disagree with the truth:\n" + "\n".join(
        problems[:20]
    )

    # Nothing lost: every reading the devices produced is stored, exactly once.
    assert stats["pending"] == 0 and stats["emit_errors"] == 0
    assert influx_db.count("parking_bay") == produced["parking_bay"]
    assert influx_db.count("locker_compartment") == produced["locker"]
    assert influx_db.count("footfall", "towards") == produced["footfall"] * 2  # one point per line
    rows = influx_db.query('SELECT sum("towards") AS t, sum("away") AS a FROM "footfall"')
    assert (rows[0]["t"], rows[0]["a"]) == (
        sum(t for t, _ in crossings.values()),
        sum(a for _, a in crossings.values()),
    )
    assert stats["garbage_sent"] > 0
    dead = (tmp_path / "dead.jsonl").read_text().splitlines() if (tmp_path / "dead.jsonl").exists() else []
    assert len(dead) >= stats["garbage_sent"] * 0.9, "garbage payloads were not dead-lettered"
    assert "Traceback" not in server_log.read_text()


def _healthy(base: str) -> bool:
    try:
        return bool(_get(f"{base}/healthz"))
    except OSError:
        return False
