"""Several intake processes: a supervisor and N gateway workers, on one shared subscription or on shards.

One gateway process is bound by one Python interpreter lock: paho's network
loop, validation and line protocol take turns on one core (bench/gateway).
With ``workers = N > 1`` the ``district gateway`` process becomes a
supervisor of N worker processes, each a whole gateway (intake, writer,
acknowledgements, confirmations, dead letters) with:

* its own client id ``{mqtt_client_id}-w{i}`` and persistent session, stable
  across restarts: the broker keeps what it queued for worker *i* until worker
  *i* comes back;
* ``ingest = "share"`` (Mosquitto, MQTT 5): the subscription
  ``$share/{group}/{prefix}/#`` (group: ``share_group``, else the client id),
  so the broker gives each message to one worker;
* ``ingest = "shards"`` (any broker, MQTT 3.1.1 too): worker *i* subscribes
  to its own disjoint topic filters (:mod:`gateway.shards`), so each message
  is queued in exactly one worker's session;
* its own dead-letter file (``name.w{i}.ext``) and status topic.

Every delivery guarantee holds per worker exactly as in a single gateway: a
message is acknowledged on the connection it came on, in receive order, only
after InfluxDB took it (or it was dead-lettered). Readings of one device may
be stored by different workers; storage is idempotent per reading and each
worker confirms what it stored.

What Mosquitto 2.0.11 does with a shared subscription whose member is down
was measured by ``bench/broker/share_offline.py`` (docs/brokers.md): it hands
the dead member's session its round-robin share while the member is away,
queued until it comes back. With shards the dead worker's filters are
queued in its session by design. Either way the supervisor restarts a worker
that exited at once (then backing off if it keeps dying), and worker ids are
stable: after lowering ``workers``, run the old count once more until its
queues are drained, or those readings wait in the retired sessions until they expire.

The supervisor exits 3 when a worker does (another client took over its
session), after stopping the others.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from pydantic import SecretStr

from common.runtime import supervised
from contracts.configfile import load_model
from contracts.site import SiteConfig
from gateway.settings import GatewaySettings
from gateway.shards import shard_filters

log = logging.getLogger(__name__)

#: A worker that ran at least this long before exiting is restarted at once; sooner, with a backoff.
STABLE_S = 30.0
RESTART_MAX_S = 30.0
#: Exit status of a worker whose session was taken over (gateway.main.EXIT_FATAL).
EXIT_FATAL = 3
#: Exit status of a worker that refused its settings: restarting cannot help.
EXIT_SETTINGS = 2


def worker_settings(settings: GatewaySettings, index: int, shards: list[list[str]] | None = None) -> GatewaySettings:
    """Worker ``index``'s settings (1-based): own client id, own dead-letter file, and either the shared
    group or (``shards``, from :func:`plan_shards`) its own topic filters."""
    dead = settings.dead_letter_path
    if dead is not None:
        dead = dead.with_name(f"{dead.stem}.w{index}{dead.suffix}")
    update: dict[str, object] = {
        "workers": 1,
        "mqtt_client_id": f"{settings.mqtt_client_id}-w{index}",
        "dead_letter_path": dead,
        "metrics_port": None if settings.metrics_port is None else settings.metrics_port + index,
    }
    if shards is not None:
        update["shard_filters"] = shards[index - 1]
    else:
        update["share_group"] = settings.share_group or _group(settings.mqtt_client_id)
    return settings.model_copy(update=update)


def plan_shards(settings: GatewaySettings) -> list[list[str]] | None:
    """Each worker's topic filters with ``ingest = "shards"`` (None for ``share``); by the site's devices
    when its configuration lists them and ``shard_by = "device"``, else by reading kind.
    Raises :class:`gateway.shards.ShardError` or the site file's ``ConfigError``."""
    if settings.ingest != "shards":
        return None
    devices: list[str] = []
    site_id = settings.site_id
    if settings.site_config is not None:
        site = load_model(settings.site_config, SiteConfig)
        devices = [d.id for d in site.devices] if settings.shard_by == "device" else []
        site_id = site.site.id
    return shard_filters(settings.topic_prefix, site_id, settings.workers, devices)


def _group(client_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.:-" else "_" for c in client_id)[:64]
    return cleaned if cleaned[:1].isalnum() else f"g{cleaned}"[:64]


def settings_env(settings: GatewaySettings) -> dict[str, str]:
    """``DISTRICT_GATEWAY_*`` variables that rebuild ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"DISTRICT_GATEWAY_{name.upper()}"] = text
    return env


class Supervisor:
    """Runs and restarts the workers until ``stop`` is set or one exits 2 or 3 (which ``run`` returns)."""

    def __init__(self, settings: GatewaySettings, log_level: str, stop: threading.Event) -> None:
        self.settings = settings
        self.log_level = log_level
        self.stop = stop
        self.exit_code = 0
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._due: dict[int, float] = {}
        self._shards = plan_shards(settings)

    def _spawn(self, index: int) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("DISTRICT_GATEWAY_")}
        env = {**base, **settings_env(worker_settings(self.settings, index, self._shards))}
        argv = [sys.executable, "-m", "district.cli", "gateway", "--log-level", self.log_level]
        self._procs[index] = subprocess.Popen(argv, **supervised(env))
        self._started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, self._procs[index].pid)

    def run(self) -> int:
        for index in range(1, self.settings.workers + 1):
            self._spawn(index)
        try:
            while not self.stop.wait(0.2):
                if self._check():
                    break
        finally:
            self._stop_all()
        return self.exit_code

    def _check(self) -> bool:
        """Restart exited workers; True when the supervisor must stop (a fatal exit)."""
        now = time.monotonic()
        for index, proc in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            if code == EXIT_FATAL:
                log.error("worker %d: its MQTT session was taken over; stopping every worker", index)
                self.exit_code = EXIT_FATAL
                return True
            if code == EXIT_SETTINGS:
                log.error("worker %d refused its settings; stopping every worker", index)
                self.exit_code = EXIT_SETTINGS
                return True
            if index not in self._due:
                ran = now - self._started[index]
                delay = 0.0 if ran >= STABLE_S else min(RESTART_MAX_S, max(1.0, 2 * self._delay.get(index, 0.5)))
                self._delay[index] = delay
                self._due[index] = now + delay
                log.error("worker %d exited with status %d after %.0f s; restarting in %.0f s", index, code, ran, delay)
            if now >= self._due[index]:
                del self._due[index]
                self._spawn(index)
        return False

    def _stop_all(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        wait = self.settings.stop_timeout_s + self.settings.influx_timeout_s + 10
        deadline = time.monotonic() + wait
        for index, proc in self._procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in %.0f s: killing it", index, wait)
                proc.kill()
                proc.wait(10)


def dead_letter_paths(settings: GatewaySettings) -> list[Path]:
    """Every dead-letter file the workers of ``settings`` write."""
    return [
        p
        for p in (worker_settings(settings, i).dead_letter_path for i in range(1, settings.workers + 1))
        if p is not None
    ]
