"""``district gateway``: MQTT -> validation -> InfluxDB, until SIGINT/SIGTERM/SIGHUP
(or, under ``district demo``, until the demo has gone).

Settings come from ``DISTRICT_GATEWAY_*`` environment variables; the flags
below override them. Exit status: 0 after a clean stop, 2 for bad settings or
a bad site configuration, 3 when another client took over the gateway's
MQTT session (two gateways with one client id).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from common.mqtt_security import MqttSecurity
from common.runtime import stop_on_signals
from contracts.configfile import ConfigError, load_model
from contracts.site import SiteConfig
from gateway.service import Gateway
from gateway.settings import GatewaySettings
from gateway.shards import ShardError
from gateway.workers import Supervisor, plan_shards

log = logging.getLogger(__name__)

#: Exit status when running on cannot help (our MQTT session was taken over).
EXIT_FATAL = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="district gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--site", type=Path, metavar="FILE", help="site configuration: reject readings about unknown things")
    p.add_argument("--mqtt-host", help="broker host (DISTRICT_GATEWAY_MQTT_HOST)")
    p.add_argument("--mqtt-port", type=int, help="broker port (DISTRICT_GATEWAY_MQTT_PORT)")
    p.add_argument("--client-id", help="stable MQTT client id (DISTRICT_GATEWAY_MQTT_CLIENT_ID)")
    p.add_argument("--prefix", help="topic prefix (DISTRICT_GATEWAY_TOPIC_PREFIX)")
    p.add_argument("--influx-url", help="InfluxDB base URL (DISTRICT_GATEWAY_INFLUX_URL)")
    p.add_argument("--influx-db", help="database (DISTRICT_GATEWAY_INFLUX_DB)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here (DISTRICT_GATEWAY_METRICS_PORT)")
    p.add_argument("--dead-letter", type=Path, metavar="FILE", help="JSONL file of rejected messages")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    overrides = {
        "site_config": args.site,
        "mqtt_host": args.mqtt_host,
        "mqtt_port": args.mqtt_port,
        "mqtt_client_id": args.client_id,
        "topic_prefix": args.prefix,
        "influx_url": args.influx_url,
        "influx_db": args.influx_db,
        "dead_letter_path": args.dead_letter,
        "metrics_port": args.metrics_port,
    }
    return GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            print(f"district gateway: setting {where}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        MqttSecurity.from_settings(settings)  # a password or key file others may read stops us here, once
    except ValueError as exc:
        print(f"district gateway: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        # N worker processes on one shared subscription (gateway.workers); a bad site file fails here, once.
        try:
            if settings.site_config is not None:
                load_model(settings.site_config, SiteConfig)
            plan_shards(settings)
        except ConfigError as exc:
            for line in exc.errors:
                print(line, file=sys.stderr)
            return 2
        except ShardError as exc:
            print(f"district gateway: {exc}", file=sys.stderr)
            return 2
        log.info("gateway: %d worker processes (%s)", settings.workers, settings.ingest)
        return Supervisor(settings, args.log_level, stop_on_signals()).run()
    try:
        gateway = Gateway(settings)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2

    stop = stop_on_signals()
    try:
        gateway.start()
    except OSError as exc:  # the metrics port is taken
        print(f"district gateway: metrics port {settings.metrics_port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        while not stop.wait(1.0):
            if gateway.intake.fatal.is_set():
                break
    finally:
        gateway.stop()
    if gateway.intake.fatal.is_set():
        print(f"district gateway: {gateway.intake.fatal_reason}", file=sys.stderr)
        return EXIT_FATAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
