"""The edge agent against a real Modbus RTU bus (pymodbus server on a pty pair)
and a real Mosquitto: topics and payloads, change-only + refresh, the last will
on SIGKILL, store-and-forward across a broker outage and an agent restart.

The bus fixture is our own (not firmware_sim): a virtual null-modem cable made
of two pty pairs and a relay thread, a pymodbus RTU server on one end, and a
symlink to the other end's tty that the agent opens like /dev/ttyUSB0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from contracts import receive, topics
from contracts.messages import DeviceStatus, LockerCompartmentState, Message, ParkingBayState
from district.provision import Provisioned
from district.services import Service, free_port, start_mosquitto
from edge.agent import EdgeAgent
from edge.config import DeviceConfig
from tests.conftest import mqtt_access, wait_for

pytestmark = pytest.mark.integration

SITE = "testsite"
DEVICE = "edge-test"


# -- the field bus ------------------------------------------------------------------------------


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


class PtyBus:
    """A Modbus RTU server on a virtual serial cable; ``path`` is the device the edge opens."""

    def __init__(self, workdir: Path, units: dict[int, tuple[int, int]]) -> None:
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.path = workdir / "bus0"
        #: unit -> registers (IR 0.. and IR 100..); tests mutate them through set_point
        self.regs: dict[int, list[int]] = {}
        for unit, (device_type, n) in units.items():
            regs = [0] * (100 + n)
            regs[0:3] = [1, device_type, n]
            self.regs[unit] = regs
        self.muted = False
        self._lock = threading.Lock()
        self._srv_master, self._srv_slave, srv_name = _pty()
        self._cli_master, self._cli_slave, cli_name = _pty()
        os.symlink(cli_name, self.path)
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._run_relay, daemon=True)
        self._relay.start()

        def action_for(unit: int) -> Any:
            async def action(fc: int, start: int, address: int, count: int, current: list[int], values: Any) -> None:
                regs = self.regs[unit]
                current[:] = regs[start : start + len(current)]

            return action

        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(0, count=len(regs), values=0, datatype=DataType.REGISTERS)],
                action=action_for(unit),
            )
            for unit, regs in self.regs.items()
        ]
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        ready = threading.Event()

        async def serve() -> None:
            self._server = ModbusSerialServer(devices, port=srv_name, baudrate=19200, ignore_missing_devices=True)
            ready.set()
            await self._server.serve_forever()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def set_point(self, unit: int, index: int, code: int) -> None:
        regs = self.regs[unit]
        regs[100 + index] = code
        regs[3] = (regs[3] + 1) % 65536

    def unplug(self) -> None:
        """The USB adapter disappears: its device node goes away, open handles break."""
        with self._lock:
            self.path.unlink()
            os.close(self._cli_master)
            os.close(self._cli_slave)
            self._cli_master = self._cli_slave = -1

    def plug(self) -> None:
        with self._lock:
            self._cli_master, self._cli_slave, name = _pty()
            os.symlink(name, self.path)

    def _run_relay(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fds = [fd for fd in (self._srv_master, self._cli_master) if fd >= 0]
            try:
                readable, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                continue
            for fd in readable:
                with self._lock:
                    if fd not in (self._srv_master, self._cli_master):
                        continue
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        continue
                    other = self._cli_master if fd == self._srv_master else self._srv_master
                    if not self.muted and other >= 0:
                        os.write(other, data)

    def close(self) -> None:
        async def shutdown() -> None:
            await self._server.shutdown()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._thread.join(10)
        self._loop.close()
        self._stop.set()
        self._relay.join(5)
        for fd in (self._srv_master, self._srv_slave, self._cli_master, self._cli_slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.path.is_symlink():
            self.path.unlink()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[PtyBus]:
    b = PtyBus(tmp_path, {1: (1, 130), 2: (2, 4)})  # 130 bays: the table takes two reads
    yield b
    b.close()


# -- MQTT -----------------------------------------------------------------------------------------


class Collector:
    """A QoS 1 subscriber with a persistent session that collects every message."""

    def __init__(self, broker: Service, prefix: str, client_id: str | None = None) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt_access(broker).client(client_id or f"collector-{prefix}", clean_session=False)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def decoded(self) -> list[tuple[str, Message]]:
        with self._lock:
            got = list(self.messages)
        out = []
        for topic, payload, _ in got:
            where, message = receive(topic, payload, prefix=self.prefix)
            assert where.site_id == SITE and where.device_id == DEVICE
            out.append((topic, message))
        return out

    def bays(self) -> list[ParkingBayState]:
        return [m for _, m in self.decoded() if isinstance(m, ParkingBayState)]

    def statuses(self) -> list[DeviceStatus]:
        return [m for _, m in self.decoded() if isinstance(m, DeviceStatus)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _device_config(
    tmp_path: Path,
    prefix: str,
    broker: Service,
    bus_path: Path,
    *,
    refresh_s: float = 30,
    outbox: str = "outbox.sqlite",
    delivery: str = "broker",
) -> dict[str, Any]:
    # No gateway runs in these tests: the broker's PUBACK is the end of the
    # line (tests/e2e/test_confirmation.py covers the gateway's confirmation).
    common = {"port": str(bus_path), "poll_interval_s": 0.1, "refresh_interval_s": refresh_s, "timeout_s": 0.3}
    return {
        "device": {"id": DEVICE, "site_id": SITE, "firmware": "test-1"},
        "mqtt": {**mqtt_access(broker).edge_mqtt(), "topic_prefix": prefix, "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5, "keepalive_s": 5, "delivery": delivery},
        "outbox": {"path": str(tmp_path / outbox), "max_messages": 10_000},
        "status_interval_s": 0.5,
        "sensors": [
            {**common, "type": "modbus_bay_controller", "unit": 1, "lot_id": "lot-a",
             "bays": {"prefix": "B", "count": 130}},
            {**common, "type": "modbus_locker_controller", "unit": 2, "bank_id": "bank-a",
             "compartments": [{"size": "S", "count": 4, "prefix": "C"}]},
        ],
    }  # fmt: skip


def _status_now(collector: Collector) -> DeviceStatus | None:
    statuses = collector.statuses()
    return statuses[-1] if statuses else None


# -- tests ----------------------------------------------------------------------------------------


def test_readings_change_only_then_refresh_then_clean_stop(
    tmp_path: Path, bus: PtyBus, mosquitto: Service, prefix: str
) -> None:
    bus.regs[1][100:103] = [1, 3, 2]
    bus.regs[1][229] = 77  # garbage on the last bay
    bus.regs[2][100:104] = [0b0011, 0b1000, 0b0100, 0]
    collector = Collector(mosquitto, prefix)
    cfg = DeviceConfig.model_validate(_device_config(tmp_path, prefix, mosquitto, bus.path, refresh_s=4))
    agent = EdgeAgent(cfg)
    try:
        agent.start()
        wait_for(lambda: len(collector.bays()) >= 130, 15, what="first full read of 130 bays")
        bays = {m.bay_id: m.status for m in collector.bays()}
        assert len(bays) == 130
        assert (bays["B001"], bays["B002"], bays["B003"], bays["B004"], bays["B130"]) == (
            "occupied",
            "closed",
            "unknown",
            "free",
            "unknown",
        )
        decoded = collector.decoded()
        for topic, m in decoded:
            assert topic == topics.build(prefix, SITE, DEVICE, m.kind)
        lockers = wait_for(
            lambda: {m.compartment_id: (m.status, m.door) for _, m in collector.decoded()
                     if isinstance(m, LockerCompartmentState)} if len(collector.decoded()) else None,
            10,
            what="locker states",
        )  # fmt: skip
        wait_for(lambda: len(lockers) == 4 or None, 1)
        assert lockers == {
            "C01": ("occupied", "open"),
            "C02": ("out_of_service", "closed"),
            "C03": ("unknown", "unknown"),
            "C04": ("free", "closed"),
        }
        bay_driver = agent.buses[0].drivers[0]
        assert bay_driver.stats["garbage_codes"] >= 1

        # change-only: one bay changes -> exactly one new bay message, over several polls
        before = len(collector.bays())
        polls = bay_driver.stats["polls"]
        bus.set_point(1, 3, 1)
        wait_for(lambda: any(m.bay_id == "B004" and m.status == "occupied" for m in collector.bays()), 5,
                 what="the change")  # fmt: skip
        wait_for(lambda: bay_driver.stats["polls"] >= polls + 10, 5, what="ten more polls")
        if bay_driver.stats["refreshes"] == 1:  # no refresh happened meanwhile
            assert len(collector.bays()) == before + 1

        # refresh: every bay again with a fresh reading id, unchanged or not
        wait_for(lambda: bay_driver.stats["refreshes"] >= 2, 10, what="a refresh")
        wait_for(lambda: len({m.bay_id for m in collector.bays()[before + 1 :]}) == 130, 10, what="refreshed bays")
        ids = [m.reading_id for m in collector.bays()]
        assert len(ids) == len(set(ids))

        status = wait_for(lambda: _status_now(collector), 5, what="a status")
        assert status.state == "online" and status.firmware == "test-1" and status.outbox_pending is not None
        assert status.uptime_s is not None and status.uptime_s >= 0
        wait_for(lambda: agent.outbox is not None and agent.outbox.pending == 0, 5, what="outbox drained")
    finally:
        agent.stop()
    last = wait_for(lambda: (s := _status_now(collector)) and s.state == "offline" and s, 5, what="offline")
    assert last.reason == "shutdown"
    collector.close()
    # the retained status a newcomer sees is the shutdown one
    newcomer = Collector(mosquitto, prefix, client_id=f"late-{prefix}")
    try:
        seen = wait_for(lambda: newcomer.messages, 5, what="retained status")
        topic, payload, retained = seen[0]
        assert retained and topic == topics.status_topic(prefix, SITE, DEVICE)
        assert b'"shutdown"' in payload
    finally:
        newcomer.client.unsubscribe(f"{prefix}/#")
        newcomer.close()


def test_bus_unplugged_degrades_with_reason_and_recovers(
    tmp_path: Path, bus: PtyBus, mosquitto: Service, prefix: str
) -> None:
    collector = Collector(mosquitto, prefix)
    cfg = DeviceConfig.model_validate(_device_config(tmp_path, prefix, mosquitto, bus.path))
    with EdgeAgent(cfg) as agent:
        wait_for(lambda: len(collector.bays()) >= 130, 15, what="first read")
        wait_for(lambda: (s := _status_now(collector)) and s.state == "online", 5, what="online")
        bus.unplug()
        degraded = wait_for(lambda: (s := _status_now(collector)) and s.state == "degraded" and s, 10,
                            what="degraded")  # fmt: skip
        assert str(bus.path) in (degraded.reason or "")
        opens = agent.buses[0].opens
        bus.plug()
        wait_for(lambda: agent.buses[0].opens > opens, 10, what="bus reopened")
        wait_for(lambda: (s := _status_now(collector)) and s.state == "online", 10, what="online again")
        n = len(collector.bays())
        bus.set_point(1, 0, 1)
        wait_for(lambda: any(m.bay_id == "B001" and m.status == "occupied" for m in collector.bays()[n:]), 10,
                 what="readings after replug")  # fmt: skip
    collector.close()


def test_sigkill_leaves_the_retained_last_will(tmp_path: Path, bus: PtyBus, mosquitto: Service, prefix: str) -> None:
    collector = Collector(mosquitto, prefix)
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_device_config(tmp_path, prefix, mosquitto, bus.path)))
    district = Path(sys.executable).parent / "district"
    log = (tmp_path / "edge.log").open("wb")
    proc = subprocess.Popen([str(district), "edge", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (s := _status_now(collector)) and s.state == "online", 20, what="online status")
        wait_for(lambda: len(collector.bays()) >= 130, 10, what="readings from the subprocess")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        will = wait_for(lambda: (s := _status_now(collector)) and s.state == "offline" and s, 10, what="last will")
        assert will.reason == "connection_lost"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        collector.close()


def test_sigterm_stops_cleanly(tmp_path: Path, bus: PtyBus, mosquitto: Service, prefix: str) -> None:
    collector = Collector(mosquitto, prefix)
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump(_device_config(tmp_path, prefix, mosquitto, bus.path)))
    district = Path(sys.executable).parent / "district"
    proc = subprocess.Popen([str(district), "edge", "--config", str(config)], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (s := _status_now(collector)) and s.state == "online", 20, what="online status")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        last = wait_for(lambda: (s := _status_now(collector)) and s.state == "offline" and s, 5, what="offline")
        assert last.reason == "shutdown"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
        collector.close()


def _outbox_rows(path: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(path)
    try:
        return [(str(t), bytes(p)) for t, p in db.execute("SELECT topic, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def test_broker_outage_store_and_forward(tmp_path: Path, bus: PtyBus, prefix: str, broker_pki: Provisioned) -> None:
    port = free_port()
    broker = start_mosquitto(tmp_path / "broker", port=port, pki=broker_pki)
    collector: Collector | None = None
    agent: EdgeAgent | None = None
    try:
        collector = Collector(broker, prefix)
        cfg = DeviceConfig.model_validate(_device_config(tmp_path, prefix, broker, bus.path, refresh_s=600))
        agent = EdgeAgent(cfg)
        agent.start()
        assert agent.outbox is not None and agent.publisher is not None
        wait_for(lambda: len(collector.bays()) >= 130, 15, what="first read")  # type: ignore[union-attr]
        wait_for(lambda: agent.outbox.pending == 0, 5, what="drained")  # type: ignore[union-attr]

        broker.stop()
        wait_for(lambda: not agent.publisher.connected.is_set(), 10, what="agent notices")  # type: ignore[union-attr]
        for n in range(10):  # bay B005 toggles ten times while the broker is away
            pending = agent.outbox.pending
            bus.set_point(1, 4, (n + 1) % 2)
            wait_for(lambda p=pending: agent.outbox.pending > p, 5, what=f"change {n} stored")  # type: ignore[union-attr]
        stored = _outbox_rows(cfg.outbox.path)
        assert len(stored) == 10

        broker = start_mosquitto(tmp_path / "broker", port=port, pki=broker_pki)
        wait_for(lambda: agent.outbox.pending == 0, 20, what="outbox drained after the outage")  # type: ignore[union-attr]
        got = {p for _, p, _ in collector.messages}
        wait_for(lambda: all(p in {q for _, q, _ in collector.messages} for _, p in stored), 10,  # type: ignore[union-attr]
                 what="every stored reading delivered")  # fmt: skip
        b005 = [m for m in collector.bays() if m.bay_id == "B005"]
        ids = {m.reading_id for m in b005}
        assert len(ids) == 11  # the initial state and ten distinct changes, nothing lost
        ordered = sorted({(m.observed_at, m.status) for m in b005})
        assert [s for _, s in ordered] == ["free"] + ["occupied", "free"] * 5
        del got
    finally:
        if agent is not None:
            agent.stop()
        if collector is not None:
            collector.close()
        broker.stop()


def test_restart_republishes_the_pending_outbox(tmp_path: Path, bus: PtyBus, mosquitto: Service, prefix: str) -> None:
    dead_port = free_port()  # nothing listens here: the agent cannot publish
    cfg = DeviceConfig.model_validate(_device_config(tmp_path, prefix, mosquitto, bus.path))
    cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"port": dead_port})})
    agent = EdgeAgent(cfg)
    agent.start()
    try:
        wait_for(lambda: agent.outbox is not None and agent.outbox.pending >= 134, 15, what="readings stored")
        assert agent.publisher is not None and not agent.publisher.connected.is_set()
        assert agent.publisher.stats["connect_failures"] >= 1
    finally:
        agent.stop()
    stored = _outbox_rows(cfg.outbox.path)
    assert len(stored) >= 134

    collector = Collector(mosquitto, prefix)
    restarted = EdgeAgent(cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"port": mosquitto.port})}))
    try:
        restarted.start()
        wait_for(lambda: all(p in {q for _, q, _ in collector.messages} for _, p in stored), 15,
                 what="every reading stored before the restart, byte for byte")  # fmt: skip
        # in order: the stored rows arrive in the order they were stored
        arrived = [p for _, p, _ in collector.messages]
        positions = [arrived.index(p) for _, p in stored]
        assert positions == sorted(positions)
        for topic, payload in stored:
            assert (topic, payload, False) in collector.messages
    finally:
        restarted.stop()
        collector.close()
