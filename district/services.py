"""Run Mosquitto, InfluxDB 1.x and Prometheus from the system packages as child processes.

Used by ``district demo`` and by the test fixtures, so both run the same real
services the same way: free ports on loopback, a private config and data
directory, wait until the service answers (never a fixed sleep), stop by pid
(terminate, then kill). Each runs in its own session and, on Linux, gets
SIGTERM from the kernel when the process that started it dies
(:func:`common.runtime.die_with_parent`), so a killed supervisor or test run
leaves no broker or database behind holding ports.

:func:`port_holder` tells which process listens on a TCP port, for a
"port in use" message that names the culprit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from common.mqtt_security import MqttSecurity
from common.runtime import die_with_parent

if TYPE_CHECKING:
    from district.provision import Provisioned

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A service binary is missing or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str, extra_dirs: tuple[str, ...] = ("/usr/sbin", "/usr/bin")) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        candidate = Path(d) / name
        if candidate.exists():
            return str(candidate)
    return None


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    log_path: Path
    extra: dict[str, int] = field(default_factory=dict)
    #: A broker started with provisioned files (TLS, passwords, ACL): whose; None: plain and anonymous.
    pki: Provisioned | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (and drops clients no longer in them)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing", self.name, self.pid)
            self.proc.kill()
            self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _wait(check: Callable[[], bool], service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise ServiceError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    service.stop()
    raise ServiceError(f"{service.name} did not answer within {timeout:.0f} s:\n{service.log_tail()}")


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


#: Save the broker's database after this many changes. Each save rewrites and
#: fsyncs the whole queue (bench/broker: 5.1 GB written to queue 50,000
#: readings at 100, 521 MB at 1000); a crash loses up to this many
#: acknowledged messages, which our edges re-send (end-to-end confirmation).
AUTOSAVE_CHANGES = 100


def mosquitto_conf(
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    autosave_changes: int | None = AUTOSAVE_CHANGES,
    pki: Provisioned | None = None,
) -> str:
    """The demo/test broker config; ``deploy/mosquitto.conf`` is the production twin.

    With ``pki`` (a :func:`district.provision.provision` result): one TLS
    listener with its broker certificate, its password and ACL files, no
    anonymous clients, and client certificates required when it issued them.
    Without: a plain anonymous listener, for benchmarks of the broker itself;
    ``host`` is loopback either way.
    """
    # Started as root, Mosquitto drops to user 'mosquitto', which cannot reach
    # a private temp dir: it then logs 'Permission denied' and acknowledges
    # messages it never saves. This child binds loopback only, so keep root.
    run_as = ["user root"] if os.geteuid() == 0 else []
    # Save the in-memory database after every N changes instead of every 30 min.
    autosave = [] if autosave_changes is None else ["autosave_on_changes true", f"autosave_interval {autosave_changes}"]
    if pki is None:
        listener = [f"listener {port} {host}", "allow_anonymous true"]
    else:
        b = pki.broker
        listener = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {b.passwd_file}",
            f"acl_file {b.acl_file}",
            f"listener {port} {host}",
            f"cafile {b.ca_file}",
            f"certfile {b.cert_file}",
            f"keyfile {b.key_file}",
            f"require_certificate {'true' if pki.client_certs else 'false'}",
            "tls_version tlsv1.2",
        ]
    return "\n".join(
        [
            *run_as,
            *listener,
            "persistence true",
            f"persistence_location {data_dir}/",
            *autosave,
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # Big enough to let 1 MB of garbage through to the gateway's own
            # check (deploy/mosquitto.conf is stricter).
            "max_packet_size 2097152",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


def start_mosquitto(
    workdir: Path,
    port: int | None = None,
    timeout: float = 15.0,
    autosave_changes: int | None = AUTOSAVE_CHANGES,
    pki: Provisioned | None = None,
) -> Service:
    """Mosquitto on loopback (``port`` or a free one), config and data in ``workdir``, ready when it accepts
    TCP. ``pki``: TLS and authentication with the provisioned files (:func:`mosquitto_conf`)."""
    binary = find_binary("mosquitto")
    if binary is None:
        raise ServiceError("mosquitto not found: apt-get install mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, data, autosave_changes=autosave_changes, pki=pki))
    log_path = workdir / "mosquitto.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # prctl only: see die_with_parent
        )
    svc = Service("mosquitto", proc, "127.0.0.1", port, workdir, log_path, pki=pki)
    _wait(lambda: _port_open(svc.host, port), svc, timeout)
    log.info("mosquitto pid %d on %s:%d%s", svc.pid, svc.host, port, " (TLS, passwords, ACL)" if pki else "")
    return svc


@dataclass(frozen=True)
class BrokerAccess:
    """How one identity reaches a broker: where, and with what (one place for demo, tests and benches).

    Built by :func:`broker_access`. The same credentials in each shape a
    component takes them: :meth:`settings` (gateway or server settings
    keywords), :meth:`env` (``DISTRICT_GATEWAY_*``/``DISTRICT_SERVER_*``),
    :meth:`edge_mqtt` (an edge configuration's ``mqtt:`` section), and
    :meth:`client` (a paho client for tools and tests). Passwords travel as a
    file path, never as a value on a command line.
    """

    host: str
    port: int
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: MQTT protocol version the component speaks (``5`` or ``3.1.1``, common/mqtt_session.py).
    protocol: str = "5"

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def to_json(self) -> str:
        """For a child process (:meth:`from_json`): host, port, username and file paths; no secret in it."""
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()})

    @classmethod
    def from_json(cls, text: str) -> BrokerAccess:
        data: dict[str, Any] = json.loads(text)

        def path(key: str) -> Path | None:
            value = data.get(key)
            return None if value is None else Path(value)

        return cls(str(data["host"]), int(data["port"]), data.get("username"), path("password_file"),
                   path("ca_file"), path("cert_file"), path("key_file"), str(data.get("protocol", "5")))  # fmt: skip

    def security(self) -> MqttSecurity:
        """The credentials and TLS context (reads the password file)."""
        return MqttSecurity.build(
            username=self.username,
            password_file=self.password_file,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )

    def settings(self) -> dict[str, Any]:
        """``mqtt_*`` keywords for the gateway's or the server's settings class."""
        values = {
            "mqtt_host": self.host,
            "mqtt_port": self.port,
            "mqtt_username": self.username,
            "mqtt_password_file": self.password_file,
            "mqtt_ca_file": self.ca_file,
            "mqtt_cert_file": self.cert_file,
            "mqtt_key_file": self.key_file,
            "mqtt_protocol": None if self.protocol == "5" else self.protocol,
        }
        return {k: v for k, v in values.items() if v is not None}

    def env(self, component: Literal["gateway", "server"] | None = None) -> dict[str, str]:
        """The same as environment variables of ``district gateway`` or ``district server``
        (``DISTRICT_GATEWAY_MQTT_HOST``, ...); no component: without the prefix (``MQTT_HOST``, ...)."""
        head = f"DISTRICT_{component.upper()}_" if component else ""
        return {f"{head}{k.upper()}": str(v) for k, v in self.settings().items()}

    def edge_mqtt(self, **extra: Any) -> dict[str, Any]:
        """An edge configuration's ``mqtt:`` section (``extra``: more keys, e.g. ``topic_prefix``)."""
        section: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.protocol != "5":
            section["protocol"] = self.protocol
        if self.username is not None:
            section["username"] = self.username
        if self.password_file is not None:
            section["password_file"] = str(self.password_file)
        if self.ca_file is not None:
            tls = {"ca_file": str(self.ca_file)}
            if self.cert_file is not None and self.key_file is not None:
                tls |= {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
            section["tls"] = tls
        return section | extra

    def client(self, client_id: str = "", protocol: MQTTProtocolVersion = mqtt.MQTTv311, **kwargs: Any) -> mqtt.Client:
        """A paho 2.x client (callback API 2) with this identity's TLS and credentials, not yet connected."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
        self.security().apply(client)
        return client


def broker_access(broker: Service, identity: str | None = None, host: str | None = None) -> BrokerAccess:
    """How ``identity`` (default: the admin, who may read and write everything the ACL lets it) reaches
    ``broker``. A broker started without provisioned files: anonymous, plain. ``host``: the name to
    connect by (default the service's address; the broker certificate must name it)."""
    host = host or broker.host
    if broker.pki is None:
        return BrokerAccess(host, broker.port)
    from district.provision import ADMIN

    ident = broker.pki.identity(identity or ADMIN)
    return BrokerAccess(host, broker.port, ident.name, ident.password_file, ident.ca_file, ident.cert_file,
                        ident.key_file)  # fmt: skip


def influxd_conf(http_port: int, rpc_port: int, root: Path, host: str = "127.0.0.1") -> str:
    return f"""reporting-disabled = true
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{root}/meta"

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  log-enabled = false
  max-body-size = 25000000

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""


def start_influxd(workdir: Path, port: int | None = None, timeout: float = 30.0) -> Service:
    binary = find_binary("influxd")
    if binary is None:
        raise ServiceError("influxd not found: apt-get install influxdb")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc = free_port()
    conf = workdir / "influxdb.conf"
    conf.write_text(influxd_conf(port, rpc, workdir))
    log_path = workdir / "influxd.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-config", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # prctl only: see die_with_parent
        )
    svc = Service("influxd", proc, "127.0.0.1", port, workdir, log_path, extra={"rpc_port": rpc})

    def ping() -> bool:
        with urllib.request.urlopen(f"http://{svc.host}:{port}/ping", timeout=1) as r:
            return bool(r.status == 204)

    _wait(ping, svc, timeout)
    log.info("influxd pid %d on %s:%d", svc.pid, svc.host, port)
    return svc


def prometheus_conf(jobs: dict[str, list[str]], interval_s: float = 15.0) -> str:
    """A scrape configuration: one job per name, its ``host:port`` targets at ``/metrics``
    (``deploy/prometheus.yml`` is the production twin)."""
    lines = [
        "global:",
        f"  scrape_interval: {interval_s:g}s",
        f"  scrape_timeout: {min(interval_s, 10.0):g}s",
        f"  evaluation_interval: {interval_s:g}s",
        "scrape_configs:",
    ]
    for job, targets in jobs.items():
        lines += [f"  - job_name: {job}", "    metrics_path: /metrics", "    static_configs:", "      - targets:"]
        lines += [f"          - {target!r}" for target in targets]
    return "\n".join(lines) + "\n"


def start_prometheus(
    workdir: Path,
    jobs: dict[str, list[str]],
    *,
    port: int | None = None,
    interval_s: float = 1.0,
    timeout: float = 30.0,
) -> Service:
    """Debian's ``prometheus`` scraping ``jobs`` (name -> ``host:port`` targets), its data in ``workdir``."""
    binary = find_binary("prometheus")
    if binary is None:
        raise ServiceError("prometheus not found: apt-get install prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "prometheus.yml"
    conf.write_text(prometheus_conf(jobs, interval_s))
    log_path = workdir / "prometheus.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # prctl only: see die_with_parent
        )
    svc = Service("prometheus", proc, "127.0.0.1", port, workdir, log_path)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{svc.host}:{port}/-/ready", timeout=1) as r:
            return bool(r.status == 200)

    _wait(ready, svc, timeout)
    log.info("prometheus pid %d on %s:%d", svc.pid, svc.host, port)
    return svc


@dataclass(frozen=True)
class PortHolder:
    """A process listening on a TCP port: its pid and command line (empty if unreadable)."""

    pid: int
    cmdline: str

    def describe(self, width: int = 100) -> str:
        """``pid 1234 (district server --site ...)``, the command line cut to ``width`` characters."""
        cmd = self.cmdline if len(self.cmdline) <= width else self.cmdline[: width - 1] + "…"
        return f"pid {self.pid} ({cmd})" if cmd else f"pid {self.pid}"


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a TCP listener could bind ``host:port`` now (SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_holder(port: int) -> PortHolder | None:
    """The process listening on TCP ``port`` (any address, IPv4 or IPv6), from the kernel's socket
    table via psutil (``/proc/net/tcp*`` and ``/proc/*/fd`` on Linux). None if nobody listens there
    or the listener belongs to a process this user may not inspect."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                cmdline = _short_cmdline(psutil.Process(conn.pid).cmdline())
            except psutil.Error:
                cmdline = ""
            return PortHolder(conn.pid, cmdline)
    return None


def _short_cmdline(argv: list[str]) -> str:
    """``python -m district.cli server ...`` and ``.venv/bin/district server ...`` read as ``district server ...``."""
    for i, arg in enumerate(argv[:3]):
        if (arg == "district.cli" and i > 0 and argv[i - 1] == "-m") or Path(arg).name == "district":
            return " ".join(["district", *argv[i + 1 :]])
    return " ".join(argv)


class VictoriaMetrics:
    """Debian's single-node ``victoria-metrics`` as a child process (the gateway's second store).

    ``start(workdir)`` gives a :class:`Service` on a free loopback port, data in
    ``workdir``, ready once ``/health`` answers ``OK``. ``dedup`` is
    ``-dedup.minScrapeInterval``: ``1ms`` (the default here) keeps one sample per
    series and millisecond, so a replayed reading is stored once; ``None``
    starts it without (it then stores duplicates). Stop it with ``Service.stop``.
    """

    BINARY = "victoria-metrics"

    @classmethod
    def start(
        cls, workdir: Path, *, port: int | None = None, dedup: str | None = "1ms", timeout: float = 30.0
    ) -> Service:
        binary = find_binary(cls.BINARY)
        if binary is None:
            raise ServiceError("victoria-metrics not found: apt-get install victoria-metrics")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        argv = [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={workdir / 'data'}",
            "-retentionPeriod=1y",
            "-loggerLevel=WARN",
        ]
        if dedup is not None:
            argv.append(f"-dedup.minScrapeInterval={dedup}")
        log_path = workdir / "victoria-metrics.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # prctl only: see die_with_parent
            )
        svc = Service("victoria-metrics", proc, "127.0.0.1", port, workdir, log_path)

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://{svc.host}:{port}/health", timeout=1) as r:
                return bool(r.status == 200 and r.read().strip() == b"OK")

        _wait(healthy, svc, timeout)
        log.info("victoria-metrics pid %d on %s:%d", svc.pid, svc.host, port)
        return svc
