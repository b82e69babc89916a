"""``district demo``: the whole pipeline on one machine.

Broker and database are started as child processes from the system packages;
then the simulated fleet, one edge agent per simulated field bus, the gateway
and the API, each as its own process, exactly as they would run on site (the
edge agents reading serial devices, everything else talking MQTT and HTTP).
The broker is secured as on site, provisioned automatically
(:mod:`district.provision` into ``WORKDIR/pki``): TLS on its one loopback
listener, a password and client certificate per device, gateway and server,
and the least-privilege ACL (``docs/security.md``).
Children run in their own sessions so Ctrl-C reaches only this supervisor,
which stops them in reverse order; SIGTERM and SIGHUP (a closed terminal) stop
it the same way. No child outlives the supervisor: if it is killed, the kernel
sends every child SIGTERM (Linux), and the Python children also notice their
parent has gone (:mod:`common.runtime`). A child that dies is restarted with
backoff, like systemd's Restart=always.

Before the gateway and the server start, the InfluxDB the demo started (never
an external ``--influx``) receives ``--history-weeks`` (5) of synthetic
history for the site's own camera lines and lots (:mod:`firmware_sim.history`),
so forecasts and analytics have stored weeks to work on.

A demo started beside a stale one fails at once, naming the process that
holds the API port.

``--fleet-only`` runs just the simulator and edge agents against an external
broker (docker-compose's simulated edge site; ``--pki`` names the provisioned
identities it connects with).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.influxdb import InfluxError
from common.retry import Backoff
from common.runtime import stop_on_signals, supervised
from contracts.configfile import load_model
from contracts.site import Camera, SiteConfig
from district.provision import GATEWAY, SERVER, Identity, Provisioned, ProvisionError, provision
from district.services import (
    BrokerAccess,
    Service,
    ServiceError,
    free_port,
    port_free,
    port_holder,
    start_influxd,
    start_mosquitto,
)
from firmware_sim.demand import load_targets
from firmware_sim.history import Backfilled, backfill
from server.alerts import FLAP_WINDOW_S
from server.keys import KeyCommandError, add_key, rotate_key

log = logging.getLogger("district.demo")
#: The name of the operator key each demo makes and prints.
DEMO_KEY_NAME = "demo-operator"

DEMO_SITE = Path(__file__).parent / "sites" / "dresden.yaml"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_DATA = SHARED / "data" / "parking" / "parkapi-dresden"
DEFAULT_FOOTAGE = SHARED / "data" / "footfall-video" / "PETS09-S2L1"
#: A child that ran this long (s) before exiting restarts after the shortest delay again.
CHILD_STABLE_S = 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: Restart delays (s): 1, 2, 4, ... 30, no jitter; reset after a run of CHILD_STABLE_S.
    backoff: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            # Own session, SIGTERM when this supervisor dies, and a parent watch in the child.
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, **supervised(self.env))
        self.started_at = time.monotonic()
        log.info("started %-28s pid %d  (log: %s)", self.name, self.proc.pid, self.log_path)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM; killing", self.name)
            self.proc.kill()
            self.proc.wait(timeout)


def flap_window_s(speed: float) -> float:
    """The server's ``alert_flap_window_s`` for a fleet at ``speed`` simulated s per real s.

    The flapping rule counts a bay's changes in real seconds. At 60x, a bay's
    ordinary turnover (three cars in ten simulated hours) falls within the
    default 600 s and reads as flapping, so the window shrinks with the speed,
    to the same simulated span (600 s at 60x: 10 s). A sensor fault still
    flaps at every poll, far faster. Never below 5 s, the alert engine's
    interval; at speed 1 or slower (0 freezes time) it is the default.
    """
    return max(5.0, FLAP_WINDOW_S / speed) if speed > 1 else FLAP_WINDOW_S


def _district(*args: str) -> list[str]:
    return [sys.executable, "-m", "district.cli", *args]


def _wait_file(path: Path, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if child.proc is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not write {path} within {timeout:.0f} s; see {child.log_path}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def _device(device_id: str, site_id: str, access: BrokerAccess, outbox: Path) -> dict[str, Any]:
    """What every demo edge device's configuration has in common (``access``: its broker identity)."""
    return {
        "device": {"id": device_id, "site_id": site_id, "firmware": "demo"},
        "mqtt": access.edge_mqtt(),
        "outbox": {"path": str(outbox)},
        "status_interval_s": 15,
    }


def edge_config(
    bus: dict[str, Any], *, device_id: str, site_id: str, access: BrokerAccess, outbox: Path
) -> dict[str, Any]:
    """An edge device configuration for one simulated bus (same shape as deploy/edge.example.yaml)."""
    sensor: dict[str, Any] = {"port": bus["path"], "unit": 1, "poll_interval_s": 0.5, "refresh_interval_s": 60}
    if bus["kind"] == "bay_controller":
        sensor.update(type="modbus_bay_controller", lot_id=bus["name"], bays=bus["points"])
    else:
        sensor.update(type="modbus_locker_controller", bank_id=bus["name"], compartments=bus["points"])
    return {**_device(device_id, site_id, access, outbox), "sensors": [sensor]}


def camera_edge_config(
    footage: Path, camera: Camera, *, site_id: str, access: BrokerAccess, outbox: Path
) -> dict[str, Any]:
    """A camera node replaying recorded footage in real time, looping, as if live."""
    video = next(iter(sorted(footage.glob("*.mp4"))))
    zone = camera.lines[0].zone
    lines = json.loads((footage / "lines.json").read_text())["lines"]
    return {
        **_device(camera.device, site_id, access, outbox),
        "cameras": [
            {
                "id": camera.id,
                "source": {"path": str(video), "loop": True, "realtime": True},
                "lines_file": str(footage / "lines.json"),
                # The recorded lines all lead into the camera's zone.
                "line_zones": {line["name"]: zone for line in lines},
                "interval_s": 10,
            }
        ],
    }


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.site: SiteConfig = load_model(args.site, SiteConfig)
        self.services: list[Service] = []
        self.children: list[Child] = []
        self.stop_event = threading.Event()
        if args.workdir:
            self.workdir = Path(args.workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._own_workdir = False
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="district-demo-"))
            self._own_workdir = True
        (self.workdir / "logs").mkdir(exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        #: The sign shown on the simulated LED count display (the first display of free spaces).
        self.sign: str | None = None
        #: The broker identities (``district provision`` into ``workdir/pki``, or ``--pki``); None: plain MQTT.
        self.pki: Provisioned | None = None
        #: ``--pki``: where the identities provisioned for an external broker are (``DIR/identities``).
        self.pki_dir: Path | None = None
        #: Our own broker (None with ``--mqtt``).
        self.broker: Service | None = None
        self.mqtt_host, self.mqtt_port = "127.0.0.1", 8883

    # -- start ---------------------------------------------------------------
    def run(self) -> int:
        """Start everything, supervise until stopped, stop everything. Returns the exit status:
        0 after a signalled stop, 1 if something did not start (logged with the reason)."""
        try:
            self._check_api_port()
            self._start_all()
            self._supervise()
        except (ServiceError, RuntimeError, ProvisionError) as exc:
            log.error("%s", exc)
            return 1
        finally:
            self._stop_all()
        return 0

    def _check_api_port(self) -> None:
        """Fail before starting anything if the API port is taken, naming the holder."""
        if self.args.fleet_only or not self.args.port or port_free(self.args.port, self.args.host):
            return
        holder = port_holder(self.args.port)
        who = f"held by {holder.describe()}" if holder else "in use (by a process this user cannot see)"
        raise RuntimeError(f"port {self.args.port} is {who}; stop it or use --port")

    def _child(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, {**self.env, **(env or {})}, self.workdir / "logs" / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    @staticmethod
    def _operator_key(keys_file: Path) -> str:
        """A key named ``demo-operator`` in the server's key file (a new one each start, the old one revoked)."""
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            return add_key(keys_file, DEMO_KEY_NAME, "operator")
        except KeyCommandError:  # a kept workdir (--workdir, --keep): the last run's key
            return rotate_key(keys_file, DEMO_KEY_NAME)

    def _backfill(self, influx_url: str) -> Backfilled:
        """``--history-weeks`` of generated history for the site's own cameras and lots (docs/forecast.md)."""
        weeks = self.args.history_weeks
        data_dir = self.args.data_dir if self.args.data_dir and Path(self.args.data_dir).is_dir() else None
        targets = {lot: fn for lot, (fn, _) in load_targets(data_dir, [lot.id for lot in self.site.parking]).items()}
        try:
            return backfill(influx_url, "district", self.site, weeks, targets=targets, seed=self.args.seed)
        except (OSError, InfluxError, RuntimeError) as exc:  # unreachable, refused, lines dropped
            raise RuntimeError(f"history backfill into {influx_url} failed: {exc}") from exc

    def _start_edge(self, device_id: str, config: dict[str, Any]) -> None:
        path = self.workdir / "edge" / f"{device_id}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._child(device_id, _district("edge", "--config", str(path)))

    def _access(self, identity: str) -> BrokerAccess:
        """How ``identity`` (a device id, or the gateway's, server's) reaches the broker, over
        ``--mqtt-protocol``."""
        protocol = self.args.mqtt_protocol
        if self.pki_dir is not None:  # --pki: identities provisioned elsewhere (docker-compose)
            ident = Identity.at(self.pki_dir / identity)
        elif self.pki is None:
            return BrokerAccess(self.mqtt_host, self.mqtt_port, protocol=protocol)
        else:
            ident = self.pki.identity(identity)
        return BrokerAccess(self.mqtt_host, self.mqtt_port, ident.name, ident.password_file, ident.ca_file,
                            ident.cert_file, ident.key_file, protocol)  # fmt: skip

    def _provision(self, devices: list[str]) -> None:
        """Issue identities (our broker, automatically): the site's devices and ``devices``; a re-run only adds."""
        before = set(self.pki.identities) if self.pki is not None else set()
        self.pki = provision(
            self.site,
            self.workdir / "pki",
            broker_hosts=["127.0.0.1", "localhost"],
            install_dir=None,
            broker_dir=None,
            extra_devices=devices,
        )
        added = sorted(set(self.pki.identities) - before)
        if before and added and self.broker is not None:
            self.broker.reload()  # new identities: a reload, not a restart
            log.info("provisioned %s; broker reloaded", ", ".join(added))

    def _start_all(self) -> None:
        args = self.args
        site_id = self.site.site.id
        if args.mqtt:
            host, _, port = args.mqtt.partition(":")
            self.mqtt_host, self.mqtt_port = host, int(port or 8883)
            if args.pki:
                self.pki_dir = Path(args.pki) / "identities"
            else:
                log.warning("--mqtt without --pki: connecting to %s without TLS or credentials", args.mqtt)
        else:
            # Provisioned automatically: TLS, a password and certificate per identity, the ACL (docs/security.md).
            self._provision([])
            broker = start_mosquitto(self.workdir / "mosquitto", pki=self.pki)
            self.broker = broker
            self.services.append(broker)
            self.mqtt_host, self.mqtt_port = broker.host, broker.port
            log.info("mosquitto   pid %d  mqtts://%s:%d (TLS, passwords, ACL)", broker.pid, broker.host, broker.port)
        influx_url = args.influx
        backfilled: Backfilled | None = None
        if not args.fleet_only and not influx_url:
            db = start_influxd(self.workdir / "influxdb")
            self.services.append(db)
            influx_url = f"http://{db.host}:{db.port}"
            log.info("influxd     pid %d  %s", db.pid, influx_url)
            # Our own, new database: weeks of synthetic history before the gateway and the server start.
            backfilled = self._backfill(influx_url)

        bus_dir = self.workdir / "buses"
        sim_args = ["sim", "--site", str(args.site), "--bus-dir", str(bus_dir), "--speed", str(args.speed)]
        if args.seed is not None:
            sim_args += ["--seed", str(args.seed)]
        if args.data_dir and Path(args.data_dir).is_dir():
            sim_args += ["--data-dir", str(args.data_dir)]
        # One simulated LED count display on its own RS-485 line, fed by the display bridge.
        self.sign = next((d.id for d in self.site.displays if d.shows == "spaces"), None)
        if self.sign and not args.fleet_only:
            sim_args += ["--count-display", self.sign, "--display-timeout", "10"]
        sim = self._child("sim", _district(*sim_args))
        _wait_file(bus_dir / "buses.json", sim, 30)
        listing = json.loads((bus_dir / "buses.json").read_text())
        buses = listing["buses"]
        sign_ports = {d["name"]: d["path"] for d in listing.get("displays", [])}

        bus_devices = [f"edge-{bus['name']}"[:64] for bus in buses]
        if self.broker is not None and any(d not in self.pki.identities for d in bus_devices):  # type: ignore[union-attr]
            self._provision(bus_devices)  # a site that does not list its buses' devices
        for bus, device_id in zip(buses, bus_devices, strict=True):
            cfg = edge_config(
                bus,
                device_id=device_id,
                site_id=site_id,
                access=self._access(device_id),
                outbox=self.workdir / "edge" / f"{device_id}.outbox.sqlite",
            )
            self._start_edge(device_id, cfg)

        if self.site.cameras and args.footage and (Path(args.footage) / "lines.json").exists():
            camera = self.site.cameras[0]
            if self.broker is not None and camera.device not in self.pki.identities:  # type: ignore[union-attr]
                self._provision([*bus_devices, camera.device])
            cfg = camera_edge_config(
                Path(args.footage),
                camera,
                site_id=site_id,
                access=self._access(camera.device),
                outbox=self.workdir / "edge" / f"{camera.device}.outbox.sqlite",
            )
            self._start_edge(camera.device, cfg)
        else:
            log.info("no footage at %s: running without a camera (--footage DIR)", args.footage)

        if args.fleet_only:
            log.info("fleet running: %d edge agents publishing to %s:%d", len(buses), self.mqtt_host, self.mqtt_port)
            return

        # An operator key for this demo, so its console and analytics can be tried at once (docs/access-control.md).
        self.operator_key = self._operator_key(self.workdir / "server-state" / "api-keys")
        common = {"INFLUX_URL": str(influx_url), "INFLUX_DB": "district"}
        metrics_port = free_port()
        self.gateway_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        self._child(
            "gateway",
            _district("gateway", "--site", str(args.site)),
            {f"DISTRICT_GATEWAY_{k}": v for k, v in common.items()}
            | self._access(GATEWAY).env("gateway")
            | {
                "DISTRICT_GATEWAY_DEAD_LETTER_PATH": str(self.workdir / "dead-letters.jsonl"),
                "DISTRICT_GATEWAY_METRICS_PORT": str(metrics_port),
            },
        )
        port = args.port or free_port()
        self._child(
            "server",
            _district("server", "--site", str(args.site), "--host", args.host, "--port", str(port)),
            {f"DISTRICT_SERVER_{k}": v for k, v in common.items()}
            | self._access(SERVER).env("server")
            | {
                "DISTRICT_SERVER_STATE_DIR": str(self.workdir / "server-state"),
                "DISTRICT_SERVER_ALERT_FLAP_WINDOW_S": str(flap_window_s(args.speed)),
            },
        )
        self.api = f"http://{args.host}:{port}"
        deadline = time.monotonic() + 30
        while not _http_ok(f"{self.api}/v1/parking/lots"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer within 30 s; see {self.workdir / 'logs' / 'server.log'}")
            time.sleep(0.1)
        if self.sign and self.sign in sign_ports:
            self._child(
                "display-bridge",
                _district("display-bridge", "--api", self.api, "--display", f"{self.sign}={sign_ports[self.sign]}"),
            )
        print(
            f"\nDistrict demo is up. API: {self.api}/v1/parking/lots   docs: {self.api}/docs   "
            f"health: {self.api}/healthz",
            flush=True,
        )
        print(f"  lockers: {self.api}/v1/lockers   crowd: {self.api}/v1/zones", flush=True)
        print(f"  console: {self.api}/console/   (site plan and live state; a key adds devices, overrides)", flush=True)
        keys_file = self.workdir / "server-state" / "api-keys"
        print(
            f"  operator key (this demo's, {DEMO_KEY_NAME}): {self.operator_key}   (console key field, or header"
            f" X-API-Key)\n  more keys: district keys --file {keys_file} add NAME --role operator|admin",
            flush=True,
        )
        if self.site.zones:
            print(f"  guidance: {self.api}/v1/guidance/parking?zone={self.site.zones[0].id}", flush=True)
        for display in self.site.displays:
            print(
                f"  display {display.id}: {self.api}/v1/displays/{display.id}"
                f"   live (SSE): {self.api}/v1/displays/{display.id}/events",
                flush=True,
            )
        print(f"  metrics (Prometheus): {self.api}/metrics   gateway: {self.gateway_metrics}", flush=True)
        if self.sign in sign_ports:
            print(
                f"  simulated LED count display {self.sign!r} on {sign_ports[self.sign]}, fed by the display bridge;"
                " what it shows is logged in logs/sim.log",
                flush=True,
            )
        if backfilled is not None and backfilled.weeks:
            print(f"  {backfilled}: generated, not recorded", flush=True)
        print(f"Logs and data: {self.workdir}    Ctrl-C stops everything.\n", flush=True)

    # -- run -----------------------------------------------------------------
    def _supervise(self) -> None:
        last_summary = 0.0
        while not self.stop_event.wait(0.5):
            now = time.monotonic()
            for child in self.children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None:
                    continue
                if child.next_start == 0.0:
                    if now - child.started_at >= CHILD_STABLE_S:
                        child.backoff.reset()  # it ran a minute: forget earlier failures
                    delay = child.backoff.next_delay()
                    child.next_start = now + delay
                    log.warning(
                        "%s exited with %s; restarting in %.0f s (log: %s)", child.name, code, delay, child.log_path
                    )
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start()
            if not self.args.fleet_only and now - last_summary >= self.args.summary_s:
                last_summary = now
                self._print_summary()

    def _print_summary(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.api}/v1/parking/lots", timeout=2) as r:
                lots = json.loads(r.read())
        except (OSError, ValueError) as exc:
            print(f"{time.strftime('%H:%M:%S')}  API not answering: {exc}", flush=True)
            return
        items = lots.get("lots", lots) if isinstance(lots, dict) else lots
        parts = [f"{lot['name']}: {lot['free']}/{lot['total']} free ({lot['state']})" for lot in items]
        if self.sign:
            try:
                with urllib.request.urlopen(f"{self.api}/v1/displays/{self.sign}", timeout=2) as r:
                    sign = json.loads(r.read())
                parts.append(f"sign {self.sign}: {sign['text']!r} ({sign['state']})")
            except (OSError, ValueError, KeyError):
                parts.append(f"sign {self.sign}: no answer")
        print(f"{time.strftime('%H:%M:%S')}  " + "  |  ".join(parts), flush=True)

    # -- stop ----------------------------------------------------------------
    def _stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        for svc in reversed(self.services):
            svc.stop()
        if self._own_workdir and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("demo stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="district demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--site", type=Path, default=DEMO_SITE, help="site configuration (default: Dresden demo)")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per real second (default 60: a day in 24 min)"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="ParkAPI forecast curves for realistic demand (default: ../shared/...)",
    )
    parser.add_argument(
        "--footage",
        type=Path,
        default=DEFAULT_FOOTAGE,
        help="recorded footage (an .mp4 and lines.json) replayed as the site's first camera",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="API port (0: any free port)")
    parser.add_argument("--workdir", help="keep logs and data here (default: a temp dir removed on exit)")
    parser.add_argument("--keep", action="store_true", help="keep the temp workdir on exit")
    parser.add_argument("--fleet-only", action="store_true", help="only the simulator and edge agents")
    parser.add_argument("--mqtt", help="use this broker (HOST:PORT, default port 8883) instead of starting one")
    parser.add_argument(
        "--pki",
        help="with --mqtt: the `district provision --out` directory whose identities the edge agents use",
    )
    parser.add_argument(
        "--mqtt-protocol",
        choices=["5", "3.1.1"],
        default="5",
        help="MQTT version of every edge agent, the gateway and the server (3.1.1: any broker, docs/brokers.md)",
    )
    parser.add_argument("--influx", help="use this InfluxDB (URL) instead of starting one (never backfilled)")
    parser.add_argument(
        "--history-weeks",
        type=int,
        default=5,
        metavar="N",
        help="write N weeks of synthetic history into the demo's own new InfluxDB before the server starts, so"
        " forecasts and analytics have data (default 5; 0: none)",
    )
    parser.add_argument("--summary-s", type=float, default=5.0, help="print free counts this often")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    demo = Demo(args)
    stop_on_signals(demo.stop_event)
    return demo.run()
