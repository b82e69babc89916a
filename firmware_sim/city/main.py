"""``district sim --scale``: generate a city site file, or run its whole fleet against a broker.

    district sim --scale --generate city.yaml [--bays 10000 --lots 50 --banks 500 --cameras 50]
    district provision --site city.yaml --out pki ...      # one broker identity per device
    district sim --scale --site city.yaml --identities pki/identities --mqtt-host H --mqtt-port P \\
        --work-dir run/ [--speed 60] [--fault kind=partition,devices=lockers,at=60,for=120] ...

Each device of the site connects as itself (its provisioned username, password
and client certificate) and publishes readings from its own outbox until the
gateway confirms them; the truth ledger goes to ``--ledger`` (default
``WORK_DIR/ledger.sqlite``). ``--duration`` stops after so many real seconds;
otherwise SIGINT/SIGTERM stop it. See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common.runtime import stop_on_signals
from contracts.configfile import ConfigError, load_model
from contracts.site import SiteConfig
from firmware_sim.city.faults import FaultSpec, FaultSpecError
from firmware_sim.city.fleet import BrokerTarget, CityFleet
from firmware_sim.city.ledger import Ledger
from firmware_sim.city.sitegen import CityShape, write_site

log = logging.getLogger(__name__)

#: Devices per simulator process: 150 spreads the publisher threads over the cores (one GIL per process).
#: The edge's publisher waits on a selectors selector (epoll), not paho's select() loop, so FD_SETSIZE
#: (1,024 descriptors: a device holds a socket, a wake-up pair and its outbox's three SQLite files) does not
#: bound it; it did before (edge/mqtt.py).
DEVICES_PER_PROCESS = 150

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "parking" / "parkapi-dresden"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="district sim --scale", description=__doc__.split("\n\n")[0] if __doc__ else None)
    g = p.add_argument_group("generate a city site file")
    g.add_argument("--generate", type=Path, metavar="SITE.yaml", help="write a scaled site file and exit")
    g.add_argument("--site-id", default="city")
    g.add_argument("--bays", type=int, default=10_000)
    g.add_argument("--lots", type=int, default=50)
    g.add_argument("--banks", type=int, default=500)
    g.add_argument("--compartments", type=int, default=20, help="per bank")
    g.add_argument("--cameras", type=int, default=50)
    g.add_argument("--lot-stale-after", type=float, default=600.0, metavar="S")
    r = p.add_argument_group("run the fleet")
    r.add_argument("--site", type=Path, help="site configuration (YAML) whose devices to simulate")
    r.add_argument("--identities", type=Path, help="district provision's identities/ folder (omit: anonymous)")
    r.add_argument("--mqtt-host", default="127.0.0.1")
    r.add_argument("--mqtt-port", type=int, default=8883)
    r.add_argument("--topic-prefix", default="district")
    r.add_argument("--work-dir", type=Path, help="outboxes, ledger and stats go here")
    r.add_argument("--ledger", type=Path, help="truth ledger (SQLite; default WORK_DIR/ledger.sqlite)")
    r.add_argument("--stats", type=Path, help="write fleet counters (JSON) here every second")
    r.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    r.add_argument("--seed", type=int)
    r.add_argument("--start", type=datetime.fromisoformat, help="simulated start (ISO 8601; default now)")
    r.add_argument("--data-dir", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                   help="ParkAPI data (forecast_data/<lot>.csv)")  # fmt: skip
    r.add_argument("--refresh", type=float, default=60.0, metavar="S", help="full state every S real seconds")
    r.add_argument("--footfall-interval", type=float, default=60.0, metavar="S")
    r.add_argument("--status-interval", type=float, default=30.0, metavar="S")
    r.add_argument("--tick", type=float, default=0.5, metavar="S")
    r.add_argument("--fault", action="append", default=[], metavar="SPEC",
                   help="kind=K,devices=PATTERN,at=S,for=S,... (repeatable; docs/simulator.md)")  # fmt: skip
    r.add_argument("--duration", type=float, metavar="S", help="stop after S real seconds")
    r.add_argument("--control", type=Path, metavar="FILE",
                   help="apply fault specs appended to FILE while running ('pause' stops the demand)")  # fmt: skip
    r.add_argument("--processes", type=int, metavar="N",
                   help=f"run the devices in N processes (default: one per {DEVICES_PER_PROCESS} devices)")  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("edge.mqtt").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.generate is not None:
        try:
            shape = CityShape(args.site_id, args.bays, args.lots, args.banks, args.compartments, args.cameras,
                              lot_stale_after_s=args.lot_stale_after)  # fmt: skip
            site = write_site(args.generate, shape)
        except ValueError as exc:
            print(f"district sim --scale: {exc}", file=sys.stderr)
            return 2
        bays = sum(lot.total for lot in site.parking)
        print(f"{args.generate}: {len(site.parking)} lots, {bays} bays, {len(site.lockers)} locker banks, "
              f"{len(site.cameras)} cameras, {len(site.devices)} devices")  # fmt: skip
        return 0
    if args.site is None or args.work_dir is None:
        print("district sim --scale: give --generate SITE.yaml, or --site and --work-dir to run", file=sys.stderr)
        return 2
    try:
        site = load_model(args.site, SiteConfig)
        faults = [FaultSpec.parse(s) for s in args.fault]
    except (ConfigError, FaultSpecError) as exc:
        print(f"district sim --scale: {exc}", file=sys.stderr)
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    devices = [d.id for d in site.devices if d.kind != "gateway"]
    n = args.processes or max(1, math.ceil(len(devices) / DEVICES_PER_PROCESS))
    if n < 1:
        print("district sim --scale: --processes must be >= 1", file=sys.stderr)
        return 2
    t0 = time.time()
    start_at = args.start or datetime.now(ZoneInfo(site.site.timezone))
    if n == 1:
        return _run_shard(args, site, faults, None, t0, start_at, args.stats, install_signals=True)
    # The shards share one ledger file: create it (WAL mode, schema) here, once, before they start. Switching
    # a database to WAL takes an exclusive lock that SQLite's busy timeout does not wait for, so four shards
    # opening a new file together could fail with "database is locked" (seen in bench/scale).
    Ledger(args.ledger or args.work_dir / "ledger.sqlite").close()
    ctx = mp.get_context("fork")
    stop = stop_on_signals()
    shard_stats = [args.work_dir / f"stats-{i}.json" for i in range(n)]
    procs = [
        ctx.Process(
            target=_shard_main,
            args=(args, site, faults, devices[i::n], t0, start_at, shard_stats[i]),
            name=f"sim-shard-{i}",
        )
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    log.info("city fleet: %d devices in %d processes (%s)", len(devices), n, ", ".join(str(p.pid) for p in procs))
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop.wait(1.0):
            if args.stats is not None:
                _merge_stats(shard_stats, args.stats)
            if deadline is not None and time.monotonic() >= deadline:
                break
            if any(not p.is_alive() for p in procs):
                log.error("a simulator process ended early; stopping the others")
                break
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(60)
        if args.stats is not None:
            _merge_stats(shard_stats, args.stats)
    return max((p.exitcode or 0) for p in procs)


def _shard_main(*a: Any) -> None:
    sys.exit(_run_shard(*a, install_signals=True))


def _run_shard(
    args: argparse.Namespace,
    site: SiteConfig,
    faults: list[FaultSpec],
    only: list[str] | None,
    t0: float,
    start_at: datetime,
    stats: Path | None,
    *,
    install_signals: bool,
) -> int:
    stop = stop_on_signals() if install_signals else threading.Event()
    broker = BrokerTarget(args.mqtt_host, args.mqtt_port, args.topic_prefix, args.identities)
    try:
        fleet = CityFleet(
            site,
            broker=broker,
            work_dir=args.work_dir,
            ledger_path=args.ledger,
            speed=args.speed,
            seed=args.seed,
            data_dir=args.data_dir,
            start_at=start_at,
            tick_s=args.tick,
            refresh_s=args.refresh,
            footfall_interval_s=args.footfall_interval,
            status_interval_s=args.status_interval,
            faults=faults,
            stats_path=stats,
            only=only,
            t0=t0,
        )
        fleet.start()
    except (OSError, ValueError) as exc:
        print(f"district sim --scale: {exc}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.duration if args.duration else None
    control = Control(args.control) if args.control is not None else None
    try:
        while not stop.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if control is not None:
                control.apply(fleet)
    finally:
        fleet.stop()
    return 0


class Control:
    """``--control FILE``: lines appended to FILE while the fleet runs, applied at once (their ``at`` ignored).

    A line is a fault spec (docs/simulator.md) or ``pause`` (stop the demand: no new readings, the
    outboxes keep draining). A bad line is logged and skipped; every shard reads the whole file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def apply(self, fleet: CityFleet) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self.offset)
                text = f.read()
        except FileNotFoundError:
            return
        complete, _, _rest = text.rpartition("\n")
        if not complete and not text.endswith("\n"):
            return  # no whole line yet
        self.offset += len(complete.encode()) + 1
        for line in complete.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line == "pause":
                fleet.pause()
                log.warning("control: demand paused")
                continue
            try:
                fleet.inject(FaultSpec.parse(line))
            except FaultSpecError as exc:
                log.error("control: %s", exc)


def _merge_stats(parts: list[Path], out: Path) -> None:
    """Sum the shards' counters into one JSON file (``t``: the newest; ``sim_time``: the first shard's)."""
    merged: dict[str, Any] = {"shards": 0}
    for path in parts:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        merged["shards"] += 1
        for k, v in doc.items():
            if isinstance(v, bool) or not isinstance(v, int | float):
                merged.setdefault(k, v)
            elif k == "t":
                merged[k] = max(merged.get(k, 0.0), v)
            else:
                merged[k] = merged.get(k, 0) + v
    if not merged["shards"]:
        return
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged))
    os.replace(tmp, out)


if __name__ == "__main__":
    sys.exit(main())
