"""``district edge --config DEVICE.yaml``: run one edge agent until SIGINT/SIGTERM/SIGHUP.

Under ``district demo`` it also stops when the demo has gone, and its camera
processes stop when it has gone (:mod:`common.runtime`).

Exit status: 0 after a clean stop, 2 for a configuration that does not load
(each error printed with file, line and column) or whose secrets other users
may read (a password in the file, a password or key file: ``chmod 600``), 1 if the agent cannot start
(e.g. the outbox file cannot be opened).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.mqtt_security import check_private
from common.runtime import stop_on_signals
from contracts.configfile import ConfigError, load_model
from edge.agent import EdgeAgent
from edge.config import DeviceConfig, EdgeSettings
from edge.outbox import OutboxError

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district edge", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="device configuration file (env DISTRICT_EDGE_CONFIG)")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(env DISTRICT_EDGE_LOG_LEVEL)"
    )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("config", args.config), ("log_level", args.log_level)) if v is not None}
    settings = EdgeSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
    )
    if settings.log_level != "DEBUG":
        # pymodbus logs every unanswered request itself; the drivers report them with context.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    if settings.config is None:
        parser.error("--config is required (or set DISTRICT_EDGE_CONFIG)")
    try:
        config = load_model(settings.config, DeviceConfig)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2

    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    try:
        if config.mqtt.password is not None:
            check_private(settings.config, "device configuration (it holds mqtt.password)")
        config.mqtt.security(password)  # reads the password file, checks the key's mode and the CA file
    except ValueError as exc:
        print(f"district edge: {exc}", file=sys.stderr)
        return 2
    stop = stop_on_signals()
    agent = EdgeAgent(config, mqtt_password=password, stop=stop)
    try:
        agent.start()
    except OutboxError as exc:
        log.error("%s", exc)
        agent.stop()
        return 1
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
