"""Register models: header layout, change counter, uptime, fault hooks, power switch, fault specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.fieldbus import (
    BAY_CLOSED,
    BAY_FAULT,
    BAY_FREE,
    BAY_OCCUPIED,
    LOCKER_DOOR_OPEN,
    LOCKER_FAULT,
    LOCKER_OCCUPIED,
)
from firmware_sim.bus import SerialBus
from firmware_sim.controllers import BayController, LockerController, corrupt
from firmware_sim.fleet import Fault, FaultError


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_header_layout() -> None:
    clock = FakeClock()
    bays = BayController("lot", 300, unit=3, clock=clock)
    assert bays.header() == [1, 1, 300, 0, 0, 0, 0]
    lockers = LockerController("bank", 24, clock=clock)
    assert lockers.header()[:3] == [1, 2, 24]


def test_uptime_is_32_bit_high_word_first_and_restarts() -> None:
    clock = FakeClock()
    ctrl = BayController("lot", 10, clock=clock)
    clock.t += 70_000.9
    assert ctrl.header()[4:6] == [70_000 >> 16, 70_000 & 0xFFFF]
    assert ctrl.read_input_registers(4, 2) == [1, 70_000 - 65_536]
    ctrl.restart()
    assert ctrl.uptime_s() == 0


def test_change_counter_counts_changes_only_and_wraps() -> None:
    ctrl = BayController("lot", 4)
    assert ctrl.set(0, BAY_OCCUPIED)
    assert not ctrl.set(0, BAY_OCCUPIED), "same value is no change"
    assert ctrl.change_counter == 1
    for n in range(65_535):
        ctrl.set(1, BAY_OCCUPIED if n % 2 == 0 else BAY_FREE)
    assert ctrl.change_counter == 0, "wraps at 65536"
    assert ctrl.read_input_registers(3, 1) == [0]


def test_register_reads_respect_the_map() -> None:
    ctrl = BayController("lot", 300)
    ctrl.set(299, BAY_CLOSED)
    assert ctrl.read_input_registers(0, 7) is not None
    assert ctrl.read_input_registers(6, 1) == [0]
    assert ctrl.read_input_registers(0, 8) is None, "IR 7..99 are not mapped"
    assert ctrl.read_input_registers(50, 1) is None
    assert ctrl.read_input_registers(100, 125) == [0] * 125
    assert ctrl.read_input_registers(100, 126) is None, "Modbus limit"
    assert ctrl.read_input_registers(398, 2) == [0, BAY_CLOSED]
    assert ctrl.read_input_registers(399, 2) is None, "past the last point"
    assert ctrl.read_input_registers(100, 0) is None


def test_pinned_stuck_and_garbage_points_ignore_demand() -> None:
    ctrl = BayController("lot", 10)
    ctrl.stick(2)
    assert ctrl.get(2) == BAY_FAULT
    assert not ctrl.set(2, BAY_OCCUPIED)
    assert ctrl.get(2) == BAY_FAULT
    ctrl.set_garbage(3, 0x7F)
    assert ctrl.read_input_registers(103, 1) == [0x7F]
    assert ctrl.pinned() == {2, 3}
    assert ctrl.set(2, BAY_FREE, force=True)
    ctrl.release(2)
    assert ctrl.set(2, BAY_OCCUPIED)
    with pytest.raises(ValueError):
        ctrl.set(0, 0x1_0000)
    with pytest.raises(IndexError):
        ctrl.pin(10, BAY_FAULT)


def test_flapping_sensor_toggles_on_each_tick() -> None:
    ctrl = LockerController("bank", 4)
    ctrl.flap(1)
    seen = []
    for _ in range(4):
        ctrl.tick()
        seen.append(ctrl.get(1))
    assert seen == [LOCKER_OCCUPIED, 0, LOCKER_OCCUPIED, 0]
    assert ctrl.change_counter == 4
    assert not ctrl.set(1, LOCKER_DOOR_OPEN)
    ctrl.release(1)
    ctrl.tick()
    assert ctrl.change_counter == 4


def test_wiring_fault_flag_and_locker_bits() -> None:
    ctrl = LockerController("bank", 4)
    ctrl.wiring_fault = True
    assert ctrl.read_input_registers(6, 1) == [1]
    ctrl.wiring_fault = False
    assert ctrl.read_input_registers(6, 1) == [0]
    ctrl.set(0, LOCKER_OCCUPIED | LOCKER_DOOR_OPEN)
    ctrl.stick(1)
    assert ctrl.points()[:2] == [3, LOCKER_FAULT]
    assert ctrl.occupied() == 1


def test_a_switched_off_controller_answers_nothing_and_reboots_when_switched_on(tmp_path: Path) -> None:
    clock = FakeClock()
    ctrl = BayController("lot", 4, unit=3, clock=clock)
    ctrl.set(1, BAY_OCCUPIED)
    # The bus's hook on every frame pymodbus sends (never started: no pty needed to apply it).
    bus = SerialBus("lot", tmp_path / "lot", [ctrl])
    reply = bytes([3, 4, 2, 0, 0, 0x81, 0x30])  # unit 3's answer to a read
    assert ctrl.answers and bus.last_answer(3) is None
    assert bus._trace_packet(True, reply) == reply
    answered = bus.last_answer(3)
    assert answered is not None
    clock.t += 500

    ctrl.power_off()
    assert not ctrl.answers and not ctrl.silent
    assert bus._trace_packet(True, reply) == b"", "switched off: nothing goes onto the line"
    assert bus.last_answer(3) == answered and (bus.frames_answered, bus.frames_silenced) == (1, 1)
    assert ctrl.uptime_s() == 500 and ctrl.points()[1] == BAY_OCCUPIED, "its registers stay as they were"

    ctrl.power_on()
    assert ctrl.answers and ctrl.uptime_s() == 0, "a reboot: uptime from zero"
    assert bus._trace_packet(True, reply) == reply
    last = bus.last_answer(3)
    assert last is not None and last >= answered and bus.frames_answered == 2
    assert ctrl.points()[1] == BAY_OCCUPIED and ctrl.change_counter == 1

    ctrl.silent = True  # a fault outlives a power cycle: the switch is its own flag
    ctrl.power_off()
    ctrl.power_on()
    assert ctrl.silent and not ctrl.answers
    assert bus._trace_packet(True, reply) == b""


def test_controller_limits() -> None:
    with pytest.raises(ValueError):
        BayController("lot", 0)
    with pytest.raises(ValueError):
        BayController("lot", 10, unit=0)


def test_corrupt_changes_exactly_one_bit() -> None:
    import random

    frame = bytes(range(20))
    bad = corrupt(frame, random.Random(1))
    diff = [a ^ b for a, b in zip(frame, bad, strict=True) if a != b]
    assert len(diff) == 1 and bin(diff[0]).count("1") == 1


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("lot:silent", Fault("lot", "silent")),
        ("lot:wiring", Fault("lot", "wiring")),
        ("lot:noise:0.25", Fault("lot", "noise", probability=0.25)),
        ("lot:stuck:4", Fault("lot", "stuck", index=4)),
        ("lot:stuck:4=1", Fault("lot", "stuck", index=4, value=1)),
        ("lot:garbage:0=0xff", Fault("lot", "garbage", index=0, value=255)),
        ("lot:flap:9", Fault("lot", "flap", index=9)),
        ("lot:closed:2", Fault("lot", "closed", index=2)),
    ],
)
def test_fault_specs(spec: str, fault: Fault) -> None:
    assert Fault.parse(spec) == fault


@pytest.mark.parametrize(
    "spec", ["lot", "lot:melt", "lot:silent:1", "lot:noise:2", "lot:stuck", "lot:stuck:x", "lot:flap:1=2"]
)
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(FaultError, match="bad fault"):
        Fault.parse(spec)
