"""3-node clustered MQTT brokers on loopback, from the Debian packages, for tests: RabbitMQ 3.10 with
its MQTT plugin (:class:`RabbitCluster`) and NATS 2.9 JetStream MQTT (:class:`NatsCluster`).

The clustered brokers the system is proved against (docs/brokers.md;
``../shared/research/clustered-brokers.md`` has the measurements behind each
choice). Everything is private to one :class:`RabbitCluster`: free ports for
MQTT, AMQP and Erlang distribution, its own epmd on a free port
(``ERL_EPMD_PORT``, ``ERL_EPMD_ADDRESS=127.0.0.1``), its own ``HOME`` holding
the ``.erlang.cookie`` the nodes and ``rabbitmqctl`` share, data and logs in
one temp dir. So it clashes with no other Erlang node on the machine, and
:meth:`RabbitCluster.stop` stops every process it started by pid, epmd last.

The settings that matter:

* ``mqtt.durable_queue_type = quorum``, set before any client makes a
  session: a persistent session's queue is then a Raft-replicated quorum
  queue that survives the loss of one node. The plugin's default (classic)
  PUBACKed and then dropped 4,993 of 10,000 messages when the queue's node
  died (research §2, run c1).
* ``cluster_formation.classic_config.nodes.*``: the three nodes find each
  other from the config; together they form the cluster in 30-50 s, so tests
  share one session-scoped cluster.
* ``mqtt.prefetch = 1000``: unacknowledged deliveries per subscriber (10 by
  default), which would otherwise cap a batching gateway at 10 messages per
  flush.
* plain TCP, anonymous MQTT (``guest`` from loopback): this cluster has no
  TLS (the Mosquitto tests keep TLS, passwords and ACLs).

Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to user
``rabbitmq`` and ``/var/lib/rabbitmq`` (ignoring ``HOME`` and the cookie), so
``/usr/lib/rabbitmq/bin/rabbitmq-server`` is run directly. Its beam.smp pid is
in ``RABBITMQ_PID_FILE``: that is what :meth:`RabbitCluster.kill` SIGKILLs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from district.services import ServiceError, find_binary, free_port

log = logging.getLogger(__name__)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
#: Seconds to wait for three nodes to form a cluster (measured 30-50 s on the 2-core box).
FORM_TIMEOUT_S = 180.0


@dataclass
class RabbitNode:
    """One node: its Erlang name, ports, files and the wrapper process that runs it."""

    name: str
    mqtt_port: int
    amqp_port: int
    dist_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.dir / "data" / f"{self.name}.pid"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    def beam_pid(self) -> int | None:
        """The Erlang VM's pid, once it has written its pid file."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        lines: list[str] = []
        for path in sorted(self.log_dir.glob("*.log")):
            lines += path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines[-n:])


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes with the MQTT plugin and quorum session queues, on loopback."""

    workdir: Path
    nodes: list[RabbitNode]
    epmd_port: int
    home: Path
    epmd: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    killed: list[str] = field(default_factory=list)

    # -- addresses ---------------------------------------------------------------------------------
    def mqtt_addresses(self) -> list[tuple[str, int]]:
        return [(self.host, n.mqtt_port) for n in self.nodes]

    def brokers(self, first: int = 0) -> str:
        """``host:port,...`` starting at node ``first`` (so clients start on different nodes)."""
        ordered = self.nodes[first:] + self.nodes[:first]
        return ",".join(f"{self.host}:{n.mqtt_port}" for n in ordered)

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def start(cls, workdir: Path, size: int = 3, timeout: float = FORM_TIMEOUT_S) -> RabbitCluster:
        """Start epmd and ``size`` nodes, and return once every node runs and the cluster has them all.

        Raises :class:`ServiceError` if RabbitMQ or epmd is missing, or the cluster does not form in
        ``timeout`` seconds (the nodes' log tails are in the message); everything started is stopped then.
        """
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise ServiceError("rabbitmq-server not found: apt-get install rabbitmq-server")
        epmd_bin = find_binary("epmd", ("/usr/bin", "/usr/lib/erlang/bin"))
        if epmd_bin is None:
            raise ServiceError("epmd not found: apt-get install erlang-base (a rabbitmq-server dependency)")
        workdir.mkdir(parents=True, exist_ok=True)
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        names = [f"r{chr(ord('A') + i)}" for i in range(size)]
        nodes = [
            RabbitNode(f"{name}@localhost", free_port(), free_port(), free_port(), workdir / name) for name in names
        ]
        cluster = cls(workdir, nodes, free_port(), home)
        try:
            cluster.epmd = subprocess.Popen(
                [epmd_bin, "-address", "127.0.0.1", "-port", str(cluster.epmd_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            _wait_port(cluster.host, cluster.epmd_port, 10, "epmd")
            for node in nodes:
                cluster._start_node(node)
            deadline = time.monotonic() + timeout
            for node in nodes:
                _wait_port(cluster.host, node.mqtt_port, max(1.0, deadline - time.monotonic()), node.name, node)
            cluster.ctl(nodes[0], "await_online_nodes", str(size), timeout=max(5.0, deadline - time.monotonic()))
        except BaseException:
            cluster.stop()
            raise
        log.info("rabbitmq cluster of %d on MQTT ports %s", size, [n.mqtt_port for n in nodes])
        return cluster

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env |= {
            "HOME": str(self.home),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "LC_ALL": "C.UTF-8",
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "RABBITMQ_MNESIA_BASE": str(node.dir / "data"),
                "RABBITMQ_LOG_BASE": str(node.log_dir),
                "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.dir / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(node.pid_file),
            }
        return env

    def _start_node(self, node: RabbitNode) -> None:
        (node.dir / "data").mkdir(parents=True, exist_ok=True)
        node.log_dir.mkdir(parents=True, exist_ok=True)
        (node.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        peers = [f"cluster_formation.classic_config.nodes.{i} = {n.name}" for i, n in enumerate(self.nodes, 1)]
        (node.dir / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}",
                    f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}",
                    "mqtt.allow_anonymous = true",
                    "mqtt.durable_queue_type = quorum",
                    "mqtt.prefetch = 1000",
                    "cluster_formation.peer_discovery_backend = classic_config",
                    *peers,
                    "log.console = false",
                    "log.file.level = warning",
                    "",
                ]
            )
        )
        with open(node.dir / "stdout.log", "ab") as out:
            node.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self._env(node),
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ctl(self, node: RabbitNode, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE ARGS`` with the cluster's HOME and epmd; raises :class:`ServiceError`."""
        argv = [str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, *args]
        if args and args[0] == "await_online_nodes":
            argv += ["--timeout", str(int(timeout))]
        try:
            done = subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"rabbitmqctl {' '.join(args)} timed out\n{node.log_tail()}") from None
        if done.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}\n{node.log_tail()}")
        return done.stdout

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``'s Erlang VM (a crash or power cut); the node stays down."""
        node = self.nodes[index]
        pid = node.beam_pid()
        if pid is None:
            raise ServiceError(f"{node.name} has no pid file")
        os.kill(pid, signal.SIGKILL)
        if node.proc is not None:
            node.proc.wait(30)  # the wrapper shell exits with its VM
        self.killed.append(node.name)
        log.info("rabbitmq node %s (pid %d) killed", node.name, pid)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every node (SIGTERM to the wrapper, which stops the VM; SIGKILL to the VM after
        ``timeout``), then epmd; all by pid."""
        for node in self.nodes:
            if node.alive() and node.proc is not None:
                node.proc.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; killing its VM", node.name)
                pid = node.beam_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                node.proc.kill()
                node.proc.wait(10)
            # A VM whose wrapper went first (or a killed wrapper) must not outlive the cluster.
            pid = node.beam_pid()
            if pid is not None and _running(pid):
                os.kill(pid, signal.SIGKILL)
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait(10)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_port(host: str, port: int, timeout: float, what: str, node: RabbitNode | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node is not None and not node.alive():
            raise ServiceError(f"{what} exited:\n{node.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise ServiceError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s" +
                       (f":\n{node.log_tail()}" if node is not None else ""))  # fmt: skip


@dataclass
class NatsNode:
    """One nats-server: its name, ports, directory and process."""

    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.dir / "nats.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class NatsCluster:
    """Three NATS 2.9 servers with JetStream and MQTT, clustered on loopback (the harsher chaos target:
    ``../shared/research/clustered-brokers.md`` measured 4-9 s outages and duplicates 30 s late after a
    node's death). Plain TCP, no authentication, like :class:`RabbitCluster`.

    MQTT streams and consumers get 3 replicas (the cluster's size); ``mqtt.ack_wait`` stays at its 30 s
    default, so deliveries pending on a dead node come back 30 s later, out of order.
    """

    workdir: Path
    nodes: list[NatsNode]
    host: str = "127.0.0.1"
    killed: list[str] = field(default_factory=list)

    def mqtt_addresses(self) -> list[tuple[str, int]]:
        return [(self.host, n.mqtt_port) for n in self.nodes]

    def brokers(self, first: int = 0) -> str:
        """``host:port,...`` starting at node ``first``."""
        ordered = self.nodes[first:] + self.nodes[:first]
        return ",".join(f"{self.host}:{n.mqtt_port}" for n in ordered)

    @classmethod
    def start(cls, workdir: Path, size: int = 3, timeout: float = 60.0) -> NatsCluster:
        """Start ``size`` servers and return once each serves MQTT and JetStream has a meta leader.

        Raises :class:`ServiceError` if nats-server is missing or the cluster does not come up in
        ``timeout`` seconds; everything started is stopped then.
        """
        binary = find_binary("nats-server")
        if binary is None:
            raise ServiceError("nats-server not found: apt-get install nats-server")
        workdir.mkdir(parents=True, exist_ok=True)
        names = [f"n{chr(ord('A') + i)}" for i in range(size)]
        nodes = [NatsNode(n, free_port(), free_port(), free_port(), free_port(), workdir / n) for n in names]
        cluster = cls(workdir, nodes)
        routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in nodes)
        try:
            for node in nodes:
                node.dir.mkdir(parents=True, exist_ok=True)
                conf = node.dir / "nats.conf"
                conf.write_text(
                    "\n".join(
                        [
                            f"server_name: {node.name}",
                            f"listen: 127.0.0.1:{node.client_port}",
                            f"http: 127.0.0.1:{node.http_port}",
                            f'jetstream {{ store_dir: "{node.dir / "js"}", max_memory_store: 256MB, '
                            "max_file_store: 2GB }",
                            f"cluster {{ name: district-test, listen: 127.0.0.1:{node.cluster_port}, "
                            f"routes: [ {routes} ] }}",
                            f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port} }}",
                            f'log_file: "{node.dir / "nats.log"}"',
                            "",
                        ]
                    )
                )
                node.proc = subprocess.Popen(
                    [binary, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            for node in nodes:
                _wait_port(cluster.host, node.mqtt_port, max(1.0, deadline - time.monotonic()), node.name)
            while not cluster._meta_leader():
                if time.monotonic() > deadline:
                    raise ServiceError(f"NATS JetStream has no meta leader after {timeout:.0f} s\n"
                                       f"{nodes[0].log_tail()}")  # fmt: skip
                time.sleep(0.5)
        except BaseException:
            cluster.stop()
            raise
        log.info("nats cluster of %d on MQTT ports %s", size, [n.mqtt_port for n in nodes])
        return cluster

    def _meta_leader(self) -> bool:
        for node in self.nodes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/jsz", timeout=2) as answer:
                    data = json.load(answer)
            except (OSError, ValueError):
                return False
            meta = data.get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != len(self.nodes):
                return False
        return True

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash or power cut); it stays down."""
        node = self.nodes[index]
        if node.proc is None:
            raise ServiceError(f"{node.name} was not started")
        node.proc.kill()
        node.proc.wait(10)
        self.killed.append(node.name)
        log.info("nats node %s killed", node.name)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every server by pid: SIGTERM, then SIGKILL after ``timeout``."""
        for node in self.nodes:
            if node.alive() and node.proc is not None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)
