"""The simulated count display's register model: what it shows, what it refuses, its comms-loss watchdog."""

from __future__ import annotations

import logging

import pytest

from contracts.fieldbus import (
    DEVICE_TYPE_COUNT_DISPLAY,
    DISPLAY_FLAGS,
    DISPLAY_HEARTBEAT,
    DISPLAY_MODE,
    DISPLAY_STATUS,
    DISPLAY_STATUS_COMMS_LOST,
    DISPLAY_TEXT,
    DISPLAY_WRITE_COUNT,
    DisplayFrame,
)
from firmware_sim.count_display import ILLEGAL_ADDRESS, ILLEGAL_VALUE, CountDisplay


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def frame(value: int | None, heartbeat: int, text: str | None = None) -> list[int]:
    shown = text if text is not None else ("" if value is None else str(value))
    return DisplayFrame(value, shown, "auto", "open", heartbeat=heartbeat).registers()


def test_blank_until_the_first_write_then_shows_it() -> None:
    d = CountDisplay("vms", clock=FakeClock())
    assert d.shown().blank and not d.shown().comms_lost
    assert d.write_registers(0, frame(123, 1)) is None
    shown = d.shown()
    assert (shown.face, shown.value, shown.frame.mode, shown.writes) == ("123", 123, "auto", 1)


def test_text_wins_over_the_number() -> None:
    d = CountDisplay("vms", clock=FakeClock())
    d.write_registers(0, DisplayFrame(3, "LOW", "auto", "low", heartbeat=1).registers())
    assert d.shown().face == "LOW" and d.shown().value is None


def test_reads_back_registers_and_identifies_itself() -> None:
    d = CountDisplay("vms", clock=FakeClock())
    regs = frame(57, 9)
    d.write_registers(0, regs)
    assert d.read_holding_registers(0, DISPLAY_WRITE_COUNT) == regs
    assert d.read_holding_registers(16, 3) == [1, DEVICE_TYPE_COUNT_DISPLAY, 0]
    for address, count in ((14, 1), (13, 2), (19, 1), (0, 0), (10, 8)):
        assert d.read_holding_registers(address, count) is None, (address, count)


def test_refused_writes_change_nothing() -> None:
    d = CountDisplay("vms", clock=FakeClock())
    d.write_registers(0, frame(57, 1))
    assert d.write_registers(DISPLAY_MODE, [99]) == ILLEGAL_VALUE
    assert d.write_registers(DISPLAY_FLAGS, [0x0030]) == ILLEGAL_VALUE  # low and full at once
    assert d.write_registers(DISPLAY_TEXT, [0xC3A4]) == ILLEGAL_VALUE
    assert d.write_registers(14, [0]) == ILLEGAL_ADDRESS
    assert d.write_registers(DISPLAY_STATUS, [0]) == ILLEGAL_ADDRESS  # read-only
    assert d.write_registers(8, [0] * 8) == ILLEGAL_ADDRESS  # runs past HR 13
    assert d.shown().face == "57" and d.refused == 6 and d.writes == 1


def test_a_single_register_write_applies_in_context() -> None:
    d = CountDisplay("vms", clock=FakeClock())
    d.write_registers(0, frame(57, 1, text=""))
    assert d.write_registers(0, [58]) is None  # FC 06 on the value only
    assert d.shown().face == "58"


def test_watchdog_blanks_without_a_changing_heartbeat_and_a_new_beat_brings_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    d = CountDisplay("vms", comms_timeout_s=10, clock=clock)
    d.write_registers(0, frame(57, 1))
    clock.t += 9
    d.write_registers(0, frame(57, 1))  # the same heartbeat again: does not count
    clock.t += 1.5
    with caplog.at_level(logging.INFO, logger="firmware_sim.count_display"):
        shown = d.shown()
        assert shown.blank and shown.comms_lost and shown.value is None
        assert shown.frame.value == 57, "the registers keep what was written"
        assert d.read_holding_registers(DISPLAY_STATUS, 1) == [DISPLAY_STATUS_COMMS_LOST]
        d.write_registers(DISPLAY_HEARTBEAT, [2])
    assert d.shown().face == "57" and not d.shown().comms_lost and d.comms_losses == 1
    assert d.read_holding_registers(DISPLAY_STATUS, 1) == [0]
    assert "no heartbeat" in caplog.text and "heartbeat back" in caplog.text
    assert [face for _, face in d.history()] == ["", "57", "", "57"]


def test_a_heartbeat_within_the_timeout_keeps_it_lit() -> None:
    clock = FakeClock()
    d = CountDisplay("vms", comms_timeout_s=10, clock=clock)
    for beat in range(1, 30):
        d.write_registers(0, frame(57, beat & 0xFFFF))
        clock.t += 2
        assert d.shown().face == "57"
    assert d.comms_losses == 0


def test_every_change_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    d = CountDisplay("vms", clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="firmware_sim.count_display"):
        d.write_registers(0, frame(57, 1))
        d.write_registers(0, frame(57, 2))  # only the heartbeat: no line
        d.write_registers(0, frame(None, 3, text=""))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "'57'" in lines[0] and "''" in lines[1]


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        CountDisplay("x", unit=0)
    with pytest.raises(ValueError):
        CountDisplay("x", comms_timeout_s=0)
