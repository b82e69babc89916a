"""``district display-bridge``: follow sign states from the guidance API and write them to LED count displays.

Configured by a file (``--config bridge.yaml``, top-level ``display_bridge:``,
see deploy/display-bridge.example.yaml) or, for the simple case, by flags::

    district display-bridge --api http://127.0.0.1:8000 --display vms-wilsdruffer=/dev/ttyUSB0@1

Runs until SIGINT/SIGTERM/SIGHUP (or until ``district demo`` that started it
has gone); on a clean stop every sign shows its fallback at once. The API key,
if the API wants one, comes from ``DISTRICT_BRIDGE_API_KEY``.

Exit status: 0 after a clean stop, 2 for a configuration that does not load.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from common.runtime import stop_on_signals
from contracts.configfile import ConfigError, load_model
from edge.displays.bridge import DisplayBridge
from edge.displays.config import BridgeConfig, BridgeFile, BridgeSettings

log = logging.getLogger(__name__)


def parse_display(spec: str) -> dict[str, Any]:
    """``ID=PORT[@UNIT]`` -> a ``displays:`` entry. Raises ValueError when it has no ``=``."""
    display_id, sep, where = spec.partition("=")
    if not sep or not display_id or not where:
        raise ValueError(f"--display {spec!r}: expected ID=PORT[@UNIT]")
    port, at, unit = where.rpartition("@")
    if not at:
        return {"display_id": display_id, "port": where}
    return {"display_id": display_id, "port": port, "unit": unit}


def config_from_flags(args: argparse.Namespace) -> BridgeConfig:
    """The configuration the flags describe. Raises ValueError (pydantic's ValidationError included)."""
    api: dict[str, Any] = {"url": args.api, "sse": not args.no_sse}
    if args.poll_interval is not None:
        api["poll_interval_s"] = args.poll_interval
    if args.api_key_header:
        api["api_key_header"] = args.api_key_header
    doc: dict[str, Any] = {"api": api, "displays": [parse_display(s) for s in args.display]}
    if args.baudrate is not None:
        doc["serial"] = {"baudrate": args.baudrate}
    for key, value in (("write_interval_s", args.write_interval), ("stale_after_s", args.stale_after)):
        if value is not None:
            doc[key] = value
    return BridgeConfig.model_validate(doc, strict=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district display-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="bridge configuration file (env DISTRICT_BRIDGE_CONFIG)")
    parser.add_argument("--api", metavar="URL", help="guidance API base URL (instead of a file)")
    parser.add_argument(
        "--display", action="append", default=[], metavar="ID=PORT[@UNIT]", help="a sign (repeatable; with --api)"
    )
    parser.add_argument("--no-sse", action="store_true", help="poll only (with --api)")
    parser.add_argument("--poll-interval", type=float, metavar="S", help="poll period without SSE (default 1)")
    parser.add_argument("--write-interval", type=float, metavar="S", help="re-write period (default 2)")
    parser.add_argument("--stale-after", type=float, metavar="S", help="fallback after S s without the API (60)")
    parser.add_argument("--baudrate", type=int, help="serial line rate (default 19200)")
    parser.add_argument("--api-key-header", help="header carrying DISTRICT_BRIDGE_API_KEY (default X-API-Key)")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(env DISTRICT_BRIDGE_LOG_LEVEL)"
    )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("config", args.config), ("log_level", args.log_level)) if v is not None}
    settings = BridgeSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
    )
    for noisy in ("pymodbus", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if settings.config is not None and (args.api or args.display):
        parser.error("give either --config or --api with --display, not both")
    if settings.config is not None:
        try:
            config = load_model(settings.config, BridgeFile).display_bridge
        except ConfigError as exc:
            for line in exc.errors:
                print(line, file=sys.stderr)
            return 2
    elif args.api and args.display:
        try:
            config = config_from_flags(args)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                print(f"district display-bridge: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"district display-bridge: {exc}", file=sys.stderr)
            return 2
    else:
        parser.error("--config FILE, or --api URL with at least one --display ID=PORT[@UNIT], is required")

    stop = stop_on_signals()
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    bridge = DisplayBridge(config, api_key=api_key, stop=stop)
    bridge.start()
    next_summary = time.monotonic() + config.summary_interval_s
    try:
        while not stop.wait(1.0):
            if config.summary_interval_s and time.monotonic() >= next_summary:
                next_summary += config.summary_interval_s
                bridge.log_summary()
    finally:
        bridge.stop()
        bridge.log_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
