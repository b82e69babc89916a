"""``district server``: run the guidance API under uvicorn.

    district server --site FILE [--host HOST] [--port PORT]

Every other setting comes from ``DISTRICT_SERVER_*`` environment variables
(see :class:`server.settings.ServerSettings`). SIGINT, SIGTERM and SIGHUP (a
closed terminal) stop it cleanly: uvicorn finishes in-flight requests, then the
lifespan closes the MQTT subscriber and the InfluxDB client. Under
``district demo`` it also stops when the demo has gone
(:func:`common.runtime.watch_parent`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from pydantic import ValidationError

from common.mqtt_security import MqttSecurity
from common.runtime import watch_parent
from contracts.configfile import ConfigError
from server.app import create_app
from server.settings import ServerSettings

log = logging.getLogger(__name__)

#: Handled by uvicorn itself (graceful stop), which then re-raises them to our handlers.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """uvicorn, ending the event streams (signs, live feed) as it begins to stop.

    uvicorn waits (up to ``timeout_graceful_shutdown``) for every response to
    finish before the lifespan shuts down; an SSE stream never finishes by
    itself, so without this a stop with a sign client connected took 10 s.
    """

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stop()
        await super().shutdown(sockets)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="district server", description="Run the guidance API.")
    p.add_argument("--site", metavar="FILE", help="site configuration (or DISTRICT_SERVER_SITE_CONFIG)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, or DISTRICT_SERVER_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (default 8000, or DISTRICT_SERVER_PORT)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if args.site:
        overrides["site_config"] = args.site
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = ServerSettings(**overrides)
    except ValidationError as exc:
        print(f"district server: bad settings:\n{exc}", file=sys.stderr)
        return 2
    try:
        MqttSecurity.from_settings(settings)  # a password or key file others may read stops us here
    except ValueError as exc:
        print(f"district server: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, freeze_heap=True)
    except ConfigError as exc:
        print(f"district server: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=args.access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )

    def close_streams() -> None:
        app.state.displays.close_streams()
        app.state.live_feed.close_streams()

    server = _Server(config, close_streams)
    # uvicorn handles SIGINT/SIGTERM (graceful stop, then lifespan shutdown) and
    # afterwards re-raises the signal to whatever handler was installed before;
    # with these, a signalled stop ends in a return code of 0, not a traceback.
    stops: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stops.append(signum)) for sig in STOP_SIGNALS}

    def stop(signum: int, _frame: object) -> None:  # what uvicorn does not handle: the same graceful stop
        stops.append(signum)
        server.should_exit = True

    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, stop)
    watch_parent(lambda: setattr(server, "should_exit", True))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits with 3 when the lifespan startup failed
        log.error("server did not start (exit %s)", exc.code)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        log.error("server did not start")
        return 1
    log.info("stopped%s", f" on signal {stops[0]}" if stops else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
