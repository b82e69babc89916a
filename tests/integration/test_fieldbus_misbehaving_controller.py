"""Line hygiene against a misbehaving controller: a real process speaking Modbus RTU on a pseudo-terminal.

The controller (``CONTROLLER`` below, run with ``python -c``) is a 250-bay controller, register map v1,
unit 1: bays 1-125 occupied, 126-250 free. It misbehaves once, in the way ``mode`` says, then answers
normally; like a real slow slave it answers every request it received, in order. The edge's own driver
(``BayControllerDriver`` + ``PymodbusReader``) polls it twice: no poll may publish a wrong state, the
fault must be counted, and after the second poll every bay is published right.

``late`` is bugcase 05 (a late reply plus the answer to the retry used to shift bays 126-250).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.messages import ParkingBayState
from contracts.site import BayRange
from edge.sensors.bay_controller import BayControllerDriver, ModbusBayControllerConfig
from edge.sensors.modbus import PymodbusReader, SensorMessage, SerialSettings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

CONTROLLER = r"""
import os, select, sys, time, tty

def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])

def frame(body):
    return body + crc16(body)

N = 250
regs = {0: 1, 1: 1, 2: N, 3: 7, 4: 0, 5: 100, 6: 0}
regs.update({100 + i: 1 if i < 125 else 0 for i in range(N)})
mode = sys.argv[2]
master, slave = os.openpty()
tty.setraw(master); tty.setraw(slave)
done = False          # the fault happens once
buf = b""
end = time.time() + float(sys.argv[3])
open(sys.argv[1] + ".tmp", "w").write(os.ttyname(slave))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while time.time() < end:
    if select.select([master], [], [], 0.1)[0]:
        buf += os.read(master, 4096)
    while len(buf) >= 8:
        req, buf = buf[:8], buf[8:]
        if crc16(req[:6]) != req[6:]:
            buf = b""
            break
        if req[0] != 1:
            continue  # another unit's request: silence, as on a real bus
        addr, count = int.from_bytes(req[2:4], "big"), int.from_bytes(req[4:6], "big")
        data = b"".join(regs.get(a, 0).to_bytes(2, "big") for a in range(addr, addr + count))
        reply = frame(bytes([req[0], 4, len(data)]) + data)
        table, header = addr >= 100, addr == 0
        delay, out, after = 0.02, reply, b""
        if mode == "echo":
            os.write(master, req)  # a 2-wire adapter without echo suppression, on every request
        elif not done and mode == "late" and table:
            delay, done = 0.45, True          # longer than the master's 0.3 s timeout
        elif not done and mode == "late_header" and header:
            delay, done = 0.45, True          # a 7-register reply, late: a different size than a chunk
        elif not done and mode == "duplicate" and table:
            out, done = reply + reply, True
        elif not done and mode == "duplicate_late" and table:
            after, done = reply, True         # the copy comes after the master sent its next request
        elif not done and mode == "wrong_unit" and table:
            # the neighbour (unit 2) answers, with its own bays: all closed
            out = frame(bytes([2, 4, len(data)]) + bytes([0, 3]) * count)
            done = True
        elif not done and mode == "truncated" and table:
            out, done = reply[: len(reply) // 2], True
        elif not done and mode == "garbage" and table:
            out, after, done = bytes([0x00, 0xFF, 0x55, 0x01, 0x04]) + reply, bytes([0xAA, 0x01, 0x03]), True
        time.sleep(delay)
        os.write(master, out)
        if after:
            time.sleep(0.06)
            os.write(master, after)
        if select.select([master], [], [], 0)[0]:
            buf += os.read(master, 4096)  # requests that queued while busy are answered next, in order
"""

TRUTH = {f"b{i:03d}": "occupied" if i <= 125 else "free" for i in range(1, 251)}


def start_controller(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[bytes], str]:
    pathfile = tmp_path / f"pty-{mode}"
    proc = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(pathfile), mode, "60"])
    wait_for(lambda: pathfile.exists() or proc.poll() is not None, 10, what="controller pty")
    assert proc.poll() is None, "controller died"
    return proc, pathfile.read_text()


@pytest.fixture
def controller(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    proc, port = start_controller(tmp_path, request.param)
    yield port
    proc.kill()
    proc.wait()


class Health:
    def __init__(self) -> None:
        self.history: list[str | None] = []

    def set_problem(self, source: str, problem: str | None) -> None:
        self.history.append(problem)


def driver_for(port: str, unit: int = 1) -> tuple[BayControllerDriver, list[SensorMessage], Health]:
    bays = BayRange(prefix="b", count=250)
    cfg = ModbusBayControllerConfig(
        type="modbus_bay_controller", port=port, unit=unit, lot_id="lot1", bays=bays, timeout_s=0.3
    )
    out: list[SensorMessage] = []
    health = Health()
    return BayControllerDriver(cfg, device_id="dev1", emit=out.extend, health=health), out, health


def published(out: list[SensorMessage]) -> list[tuple[str, str]]:
    return [(m.bay_id, m.status) for m in out if isinstance(m, ParkingBayState)]


# mode -> the reader counter that must show the fault was seen
FAMILY = {
    "late": "timeout",
    "late_header": "timeout",
    "echo": "echo",
    "duplicate": "duplicate",
    "duplicate_late": "wrong_size",
    "wrong_unit": "wrong_unit",
    "truncated": "truncated",
    "garbage": "garbage",
}


@pytest.mark.parametrize("controller", list(FAMILY), indirect=True)
def test_no_wrong_state_is_published_and_the_next_poll_recovers(
    controller: str, request: pytest.FixtureRequest
) -> None:
    mode = request.node.callspec.params["controller"]
    driver, out, health = driver_for(controller)
    reader = PymodbusReader(SerialSettings(port=controller, timeout_s=0.3))
    try:
        first = driver.poll(reader)
        driver._next_refresh = 0.0  # the second poll republishes everything
        second = driver.poll(reader)
    finally:
        reader.close()
    states = published(out)
    wrong = [(bay, status) for bay, status in states if status != TRUTH[bay]]
    assert wrong == [], f"{mode}: {len(wrong)} wrong states published, e.g. {wrong[:3]}"
    assert second, f"{mode}: the second poll did not recover: {health.history}"
    assert dict(states[-250:]) == TRUTH, f"{mode}: the second poll must publish every bay"
    assert reader.stats[FAMILY[mode]] >= 1, f"{mode}: fault not counted: {dict(reader.stats)}"
    if not first:
        assert driver.stats["dropped_polls"] == 1
        assert any(p and "poll dropped" in p for p in health.history)
    assert health.history[-1] is None, "healthy again after the good poll"


@pytest.mark.parametrize("controller", ["late"], indirect=True)
def test_late_reply_is_not_taken_for_the_next_same_size_read(controller: str) -> None:
    """The flush after a timeout alone protects two same-size reads in a row (the old 125 + 125 plan)."""
    reader = PymodbusReader(SerialSettings(port=controller, timeout_s=0.3))
    try:
        first = reader.read_input_registers(1, 100, 125)
        second = reader.read_input_registers(1, 225, 125)
    finally:
        reader.close()
    assert first == [1] * 125
    assert second == [0] * 125, "the late reply to IR 100+125 was taken as the answer to IR 225+125"
    assert reader.stats["timeout"] == 1 and reader.stats["rescued"] == 1
    assert reader.stats["drained_bytes"] == 255, "the late 125-register reply was drained"


@pytest.mark.parametrize("controller", ["wrong_unit"], indirect=True)
def test_a_read_that_fails_twice_drops_the_poll_and_the_bus_goes_on(controller: str) -> None:
    """Unit 3 is nobody: its poll times out twice and is dropped, nothing published, the reason in the
    health text; the same line then serves unit 1, whose one wrong-unit reply is rejected and retried."""
    nobody, out_nobody, health_nobody = driver_for(controller, unit=3)
    driver, out, _ = driver_for(controller)
    reader = PymodbusReader(SerialSettings(port=controller, timeout_s=0.3))
    try:
        assert not nobody.poll(reader)
        assert driver.poll(reader)
    finally:
        reader.close()
    assert out_nobody == []
    assert nobody.stats["dropped_polls"] == 1 and nobody.stats["dropped:timeout"] == 1
    assert health_nobody.history[-1] == "/dev/pts unit 3: no answer within 0.3 s (timeout); poll dropped".replace(
        "/dev/pts", controller
    )
    assert reader.stats["timeout"] == 2 and reader.stats["wrong_unit"] == 1 and reader.stats["retries"] == 2
    assert dict(published(out)) == TRUTH
