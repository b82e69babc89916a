"""The bridge's Modbus RTU writes (edge/displays/rtu.py) and its port writer, on a fake line in fake time.

Behind the line sits the simulator's register model of a count display (firmware_sim/count_display.py),
so what the bridge writes is decoded by the same contract a real sign's firmware would follow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from contracts.fieldbus import DisplayFrame
from edge.displays.bridge import PortWriter
from edge.displays.config import DisplayLink
from edge.displays.follow import Link
from edge.displays.rtu import RtuWriter, check_write_reply, crc, write_frame
from edge.displays.sign import SignState
from edge.sensors.modbus import BadReply, BusGone, NoResponse, SerialSettings
from firmware_sim.count_display import CountDisplay

T = 0.5  # reply timeout


def reply_to(request: bytes) -> bytes:
    body = request[:6]
    return body + crc(body)


def exception_reply(unit: int, code: int) -> bytes:
    body = bytes([unit, 0x90, code])
    return body + crc(body)


class FakeLine:
    """A half-duplex line in fake time; ``answer(request, n)`` returns ``(delay_s, bytes)`` per request."""

    def __init__(self, answer: Callable[[bytes, int], tuple[float, bytes]], echo: bool = False) -> None:
        self.now = 0.0
        self.answer = answer
        self.echo = echo
        self.sent: list[bytes] = []
        self._due: list[tuple[float, bytes]] = []
        self.gone = False

    def clock(self) -> float:
        return self.now

    def inject(self, delay_s: float, data: bytes) -> None:
        self._due.append((self.now + delay_s, data))
        self._due.sort(key=lambda d: d[0])

    def write(self, data: bytes) -> None:
        if self.gone:
            raise BusGone("unplugged")
        self.sent.append(data)
        if self.echo:
            self.inject(0.0, data)
        delay, out = self.answer(data, len(self.sent))
        if out:
            self.inject(delay, out)

    def read(self, max_bytes: int, wait_s: float) -> bytes:
        if self.gone:
            raise BusGone("unplugged")
        if not self._due or self._due[0][0] > self.now + wait_s:
            self.now += wait_s
            return b""
        self.now = max(self.now, self._due[0][0])
        out = b""
        while self._due and self._due[0][0] <= self.now and len(out) < max_bytes:
            t, data = self._due.pop(0)
            take = max_bytes - len(out)
            out += data[:take]
            if data[take:]:
                self._due.insert(0, (t, data[take:]))
        return out

    def close(self) -> None:
        pass


def display_behind(display: CountDisplay, delay: float = 0.02) -> Callable[[bytes, int], tuple[float, bytes]]:
    """Answers FC 16 for ``display.unit`` the way the simulated sign does; other units: silence."""

    def answer(req: bytes, n: int) -> tuple[float, bytes]:
        if req[0] != display.unit or req[1] != 0x10:
            return 0.0, b""
        address, count = int.from_bytes(req[2:4], "big"), int.from_bytes(req[4:6], "big")
        values = [int.from_bytes(req[7 + 2 * i : 9 + 2 * i], "big") for i in range(count)]
        refused = display.write_registers(address, values)
        return delay, reply_to(req) if refused is None else exception_reply(display.unit, refused)

    return answer


def writer_on(line: FakeLine) -> RtuWriter:
    return RtuWriter(SerialSettings("/dev/fake", timeout_s=T), line_factory=lambda s: line, clock=line.clock)


REGS = DisplayFrame(57, "57", "auto", "open", heartbeat=1).registers()


# -- frames and replies --------------------------------------------------------------------------------


def test_the_request_frame_is_fc16_with_crc() -> None:
    frame = write_frame(3, 0, [1, 2, 3])
    assert frame.hex(" ") == "03 10 00 00 00 03 06 00 01 00 02 00 03 " + crc(frame[:-2]).hex(" ")
    for bad in ((0, 0, [1]), (248, 0, [1]), (1, 0, []), (1, 0, [1] * 124), (1, 0, [65536]), (1, 65535, [1, 2])):
        with pytest.raises(ValueError):
            write_frame(*bad)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x01\x10\x00", "truncated"),
        (b"\x07\x10\x00\x00\x00\x0e", "garbage"),
        (exception_reply(1, 3), "exception"),
        (reply_to(write_frame(2, 0, REGS)), "wrong_unit"),
        (reply_to(write_frame(1, 1, REGS[1:])), "wrong_size"),
        (reply_to(write_frame(1, 0, REGS))[:-1] + b"\x00", "bad_crc"),
        (reply_to(write_frame(1, 0, REGS)) + b"\x01", "trailing_bytes"),
        (bytes([1, 6, 0, 0, 0, 14]) + crc(bytes([1, 6, 0, 0, 0, 14])), "wrong_function"),
    ],
)
def test_replies_that_do_not_answer_the_write(data: bytes, reason: str) -> None:
    with pytest.raises(BadReply) as err:
        check_write_reply(write_frame(1, 0, REGS), data)
    assert err.value.reason == reason


def test_a_good_reply_and_an_identical_copy() -> None:
    request = write_frame(1, 0, REGS)
    assert check_write_reply(request, reply_to(request)) is False
    assert check_write_reply(request, reply_to(request) * 2) is True
    with pytest.raises(NoResponse):
        check_write_reply(request, b"")


# -- the exchange ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("echo", [False, True])
def test_a_write_reaches_the_display(echo: bool) -> None:
    display = CountDisplay("vms", clock=lambda: 0.0)
    line = FakeLine(display_behind(display), echo=echo)
    writer = writer_on(line)
    writer.write_registers(1, 0, REGS)
    assert display.shown().face == "57"
    assert writer.stats["writes"] == 1 and writer.stats["echo"] == (1 if echo else 0)


def test_a_refused_write_raises_with_the_exception_and_is_not_drained() -> None:
    display = CountDisplay("vms", clock=lambda: 0.0)
    writer = writer_on(FakeLine(display_behind(display)))
    bad = list(REGS)
    bad[1] = 77  # unknown mode
    with pytest.raises(BadReply) as err:
        writer.write_registers(1, 0, bad)
    assert err.value.reason == "exception" and "exception 3" in str(err.value)
    assert writer.stats["drained_bytes"] == 0 and display.shown().blank


def test_a_late_reply_is_drained_before_the_next_write() -> None:
    display = CountDisplay("vms", clock=lambda: 0.0)
    late = display_behind(display, delay=1.5 * T)
    on_time = display_behind(display)
    line = FakeLine(lambda req, n: late(req, n) if n == 1 else on_time(req, n))
    writer = writer_on(line)
    with pytest.raises(NoResponse):
        writer.write_registers(1, 0, REGS)
    assert writer.stats["drained_bytes"] == 8, "the late confirmation was discarded, not left on the line"
    writer.write_registers(1, 0, DisplayFrame(58, "58", "auto", "open", heartbeat=2).registers())
    assert display.shown().face == "58" and writer.stats["stray_bytes"] == 0


def test_an_unplugged_adapter_is_bus_gone() -> None:
    line = FakeLine(lambda req, n: (0.0, b""))
    line.gone = True
    with pytest.raises(BusGone):
        writer_on(line).write_registers(1, 0, REGS)


# -- the port writer ---------------------------------------------------------------------------------------


def state(value: int | None, event_id: int, **kw: object) -> SignState:
    doc: dict[str, object] = {
        "display_id": "vms",
        "event_id": event_id,
        "value": value,
        "text": "" if value is None else str(value),
        "mode": "auto",
        "state": "open",
        "stale": False,
        "trusted": True,
    }
    return SignState.model_validate({**doc, **kw}, strict=False)


class Rig:
    """A port writer driven step by step in fake time, with a simulated display behind a fake line."""

    def __init__(self, write_interval_s: float = 2.0, stale_after_s: float = 60.0) -> None:
        self.display = CountDisplay("vms", comms_timeout_s=10, clock=self.clock)
        self.line = FakeLine(display_behind(self.display))
        self.wake = threading.Event()
        config = DisplayLink(display_id="vms", port="/dev/fake")
        self.link = Link(config, stale_after_s=stale_after_s, wake=self.wake, clock=self.clock)
        self.port = PortWriter(
            SerialSettings("/dev/fake", timeout_s=T),
            [self.link],
            write_interval_s=write_interval_s,
            stop=threading.Event(),
            wake=self.wake,
            line_factory=lambda s: self.line,
            clock=self.clock,
            first_heartbeat=lambda: 65535,
        )
        self.writer = RtuWriter(self.port.serial, line_factory=lambda s: self.line, clock=self.clock)

    def clock(self) -> float:
        return self.line.now if hasattr(self, "line") else 0.0

    def step(self) -> None:
        """One pass of the writer's cycle, then fake time runs to whatever is due next."""
        slot = self.port._slots[0]
        now = self.clock()
        frame = self.link.frame(now)
        if now >= slot.next_write or (frame != slot.written and now >= slot.hold_until):
            self.port._write(self.writer, slot, frame, now)
        self.line.now += self.port._idle()


def test_writes_at_once_then_on_change_and_every_interval_with_a_new_heartbeat() -> None:
    rig = Rig()
    rig.step()
    assert rig.display.shown().blank and rig.display.shown().frame.link_lost, "nothing heard yet: fallback"
    rig.link.accept(state(57, 1))
    rig.step()
    assert rig.display.shown().face == "57"
    beats = []
    for _ in range(10):
        rig.step()
        beats.append(rig.display.shown().frame.heartbeat)
    assert beats == [(1 + i) & 0xFFFF for i in range(1, 11)], "wraps past 65535 and advances every write"
    assert rig.display.comms_losses == 0
    assert rig.link.stats["writes"] == 12 and rig.link.stats["changes"] == 2


def test_the_bridge_blanks_the_sign_itself_when_the_api_goes_quiet() -> None:
    rig = Rig(stale_after_s=60)
    rig.link.accept(state(57, 1))
    rig.step()
    t0 = rig.clock()
    faces = []
    while rig.clock() - t0 < 70:
        rig.step()
        faces.append((rig.clock() - t0, rig.display.shown().face))
    blank_at = next(t for t, face in faces if face == "")
    assert 60 <= blank_at <= 60.2, "at the stale limit, not a write interval later"
    assert all(face == "" for t, face in faces if t >= blank_at), "never the old number again"
    assert rig.display.shown().frame.link_lost and rig.display.shown().frame.state == "fallback"
    rig.link.accept(state(57, 2))
    rig.step()
    assert rig.display.shown().face == "57"


def test_heartbeats_keep_a_state_vouched_for_but_not_after_a_malformed_one() -> None:
    rig = Rig(stale_after_s=60)
    rig.link.accept(state(57, 1))
    for _ in range(50):
        rig.line.now += 2
        rig.link.alive()
    assert rig.link.frame().face == "57"
    rig.link.lost_step()
    for _ in range(31):
        rig.line.now += 2
        rig.link.alive()
    assert rig.link.frame().face == "", "a heartbeat does not vouch for a state the API has moved on from"
    rig.link.confirm()  # a 304 for the state held
    assert rig.link.frame().face == "57"


def test_a_failed_write_is_counted_and_retried_at_the_next_cycle() -> None:
    rig = Rig(write_interval_s=2)
    rig.link.accept(state(57, 1))
    answer = rig.line.answer
    rig.line.answer = lambda req, n: (0.0, b"")  # the sign stops answering
    t0 = rig.clock()
    rig.step()
    assert rig.link.stats["write_failures"] == 1 and rig.link.stats["write:timeout"] == 1
    assert rig.clock() - t0 == pytest.approx(2, abs=0.01), "retried one write interval later, not in a tight loop"
    rig.line.answer = answer
    rig.step()
    assert rig.display.shown().face == "57"
