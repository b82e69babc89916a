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

import psutil

from common.runtime import die_with_parent

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

    @property
    def pid(self) -> int:
        return self.proc.pid

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
    port: int, data_dir: Path, host: str = "127.0.0.1", autosave_changes: int | None = AUTOSAVE_CHANGES
) -> str:
    """The demo/test broker config; ``deploy/mosquitto.conf`` is the production twin."""
    # Started as root, Mosquitto drops to user 'mosquitto', which cannot reach
    # a private temp dir: it then logs 'Permission denied' and acknowledges
    # messages it never saves. This child binds loopback only, so keep root.
    run_as = ["user root"] if os.geteuid() == 0 else []
    # Save the in-memory database after every N changes instead of every 30 min.
    autosave = [] if autosave_changes is None else ["autosave_on_changes true", f"autosave_interval {autosave_changes}"]
    return "\n".join(
        [
            *run_as,
            f"listener {port} {host}",
            "allow_anonymous true",
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
    workdir: Path, port: int | None = None, timeout: float = 15.0, autosave_changes: int | None = AUTOSAVE_CHANGES
) -> Service:
    binary = find_binary("mosquitto")
    if binary is None:
        raise ServiceError("mosquitto not found: apt-get install mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, data, autosave_changes=autosave_changes))
    log_path = workdir / "mosquitto.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # prctl only: see die_with_parent
        )
    svc = Service("mosquitto", proc, "127.0.0.1", port, workdir, log_path)
    _wait(lambda: _port_open(svc.host, port), svc, timeout)
    log.info("mosquitto pid %d on %s:%d", svc.pid, svc.host, port)
    return svc


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
