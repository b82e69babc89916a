"""``district sim``: run the simulated device fleet of a site.

One simulated RS-485 bus (pseudo-terminal, Modbus RTU, unit 1) per parking lot
and per locker bank of the site file, named by the lot/bank id, linked as
``{bus_dir}/{name}``; ``{bus_dir}/buses.json`` lists them for edge configs.
Demand follows ParkAPI's forecast curves (``--data-dir``) at ``--speed`` x real
time. ``--count-display NAME`` (repeatable) adds a simulated LED count display
on its own bus ``{bus_dir}/{NAME}`` for ``district display-bridge`` to write to;
it blanks itself when its heartbeat register has not changed for
``--display-timeout`` seconds. SIGINT/SIGTERM/SIGHUP stop it cleanly (symlinks and buses.json removed),
and so does the end of the ``district demo`` that started it.

``district sim --scale ...`` runs the city-scale fleet instead (thousands of
devices publishing MQTT directly, a truth ledger, faults on demand):
:mod:`firmware_sim.city.main`, docs/simulator.md.

Settings come from ``DISTRICT_SIM_*`` environment variables; flags override.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import datetime
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.runtime import stop_on_signals
from contracts.configfile import ConfigError, load_model
from contracts.messages import ID_PATTERN
from contracts.site import SiteConfig
from firmware_sim.fleet import Fault, FaultError, Fleet

log = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "parking" / "parkapi-dresden"


class SimSettings(BaseSettings):
    """``DISTRICT_SIM_SPEED``, ``DISTRICT_SIM_SEED``, ``DISTRICT_SIM_DATA_DIR``, ... (flags win)."""

    model_config = SettingsConfigDict(env_prefix="DISTRICT_SIM_", extra="forbid")

    speed: float = Field(60.0, ge=0)
    seed: int | None = None
    data_dir: Path | None = DEFAULT_DATA if DEFAULT_DATA.is_dir() else None
    tick_s: float = Field(0.5, gt=0)
    summary_s: float = Field(30.0, ge=0)
    baudrate: int = Field(19200, gt=0)
    line_timing: bool = True
    unit: int = Field(1, ge=1, le=247)
    display_timeout_s: float = Field(10.0, gt=0)
    log_level: str = "INFO"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="district sim", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--site", required=True, type=Path, help="site configuration (YAML)")
    p.add_argument("--bus-dir", required=True, type=Path, help="where the bus symlinks and buses.json go")
    p.add_argument("--speed", type=float, help="simulated seconds per real second (default 60; 0 freezes time)")
    p.add_argument("--seed", type=int, help="random seed (reproducible demand)")
    p.add_argument("--data-dir", type=Path, help="ParkAPI data (containing forecast_data/<lot_id>.csv)")
    p.add_argument("--start", type=datetime.fromisoformat, help="simulated start time (ISO 8601; default now)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="BUS:KIND[:ARG]",
        help="inject a fault: silent, wiring, noise:P, stuck:I[=CODE], flap:I, garbage:I[=VALUE], closed:I "
        "(repeatable; I is the point index in register order)",
    )
    p.add_argument(
        "--count-display",
        action="append",
        default=[],
        metavar="NAME",
        help="add a simulated LED count display on the bus BUS_DIR/NAME (repeatable)",
    )
    p.add_argument(
        "--display-timeout",
        type=float,
        metavar="S",
        help="a count display blanks itself after S seconds without a heartbeat write (default 10)",
    )
    p.add_argument("--no-line-timing", action="store_true", help="do not pace bytes at the baud rate")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scale" in argv:  # the city fleet: devices publish MQTT directly (firmware_sim.city)
        from firmware_sim.city.main import main as city_main

        return city_main([a for a in argv if a != "--scale"])
    args = parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "speed": args.speed,
            "seed": args.seed,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
            "line_timing": False if args.no_line_timing else None,
            "display_timeout_s": args.display_timeout,
        }.items()
        if v is not None
    }
    settings = SimSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("pymodbus").setLevel(logging.WARNING)
    try:
        site = load_model(args.site, SiteConfig)
        faults = [Fault.parse(spec) for spec in args.fault]
    except (ConfigError, FaultError) as exc:
        print(f"district sim: {exc}", file=sys.stderr)
        return 2
    if not site.parking and not site.lockers and not args.count_display:
        print(f"district sim: {args.site} has no parking lots or locker banks to simulate", file=sys.stderr)
        return 2
    bad = [name for name in args.count_display if not re.fullmatch(ID_PATTERN, name)]
    if bad:
        print(f"district sim: --count-display {bad[0]!r} is not a valid id ({ID_PATTERN})", file=sys.stderr)
        return 2

    fleet = Fleet(
        site,
        args.bus_dir,
        speed=settings.speed,
        seed=settings.seed,
        data_dir=settings.data_dir,
        tick_s=settings.tick_s,
        line_timing=settings.line_timing,
        baudrate=settings.baudrate,
        unit=settings.unit,
        start_at=args.start,
        summary_s=settings.summary_s,
        displays=args.count_display,
        display_timeout_s=settings.display_timeout_s,
    )
    stop = stop_on_signals()
    try:
        fleet.start()
    except Exception as exc:
        log.exception("cannot start the fleet")
        print(f"district sim: {exc}", file=sys.stderr)
        return 1
    try:
        for fault in faults:
            fleet.inject(fault)
        fleet.log_summary()
        while not stop.wait(1.0):
            pass
    except FaultError as exc:
        print(f"district sim: {exc}", file=sys.stderr)
        return 2
    finally:
        fleet.stop()
        log.info("fleet stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
