"""Line hygiene of the Modbus reader: reply checks, chunk plan, and exchanges on a fake line in fake time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import pytest

from contracts.fieldbus import HEADER_COUNT
from contracts.messages import ParkingBayState
from edge.sensors.bay_controller import BayControllerDriver
from edge.sensors.modbus import (
    BadReply,
    BusGone,
    NoResponse,
    PymodbusReader,
    RateLimitedLog,
    ReadRequest,
    SerialSettings,
    _crc,
    check_reply,
    plan_chunks,
    silent_interval_s,
)
from tests.unit.edge.test_edge_sensors import _bay_driver

T = 0.3  # the master's reply timeout in these tests, seconds


def frame(*body: int) -> bytes:
    return bytes(body) + _crc(bytes(body))


def reply(unit: int, values: list[int], fc: int = 4) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return frame(unit, fc, len(data), *data)


# -- check_reply --------------------------------------------------------------------------------------

REQ = ReadRequest(1, 100, 3)


def test_request_frame_is_standard_rtu() -> None:
    # unit 1, FC 04, IR 100 (0x0064), 82 registers (0x0052), CRC low byte first
    assert ReadRequest(1, 100, 82).frame.hex() == "0104006400523028"
    assert ReadRequest(1, 100, 82).reply_size == 169


def test_a_matching_reply_gives_its_registers() -> None:
    assert check_reply(REQ, reply(1, [1, 0, 65535])).registers == [1, 0, 65535]
    dup = check_reply(REQ, reply(1, [1, 0, 3]) * 2)
    assert dup.registers == [1, 0, 3] and dup.duplicated


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (reply(2, [1, 0, 3]), "wrong_unit"),
        (reply(1, [1, 0, 3], fc=3), "wrong_function"),
        (reply(1, [1, 0]), "wrong_size"),
        (reply(1, [1, 0, 3, 4]), "wrong_size"),
        (reply(1, [1, 0, 3])[:-3], "truncated"),
        (reply(1, [1, 0, 3])[:2], "truncated"),
        (reply(1, [1, 0, 3])[:-1] + b"\x00", "bad_crc"),
        (b"\x55\xaa\x00" + reply(1, [1, 0, 3]), "garbage"),
        (reply(1, [1, 0, 3]) + b"\x00\xff", "trailing_bytes"),
        (reply(1, [1, 0, 3]) + reply(1, [0, 0, 0]), "trailing_bytes"),
        (frame(1, 0x84, 2), "exception"),
    ],
)
def test_mismatches_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(BadReply) as info:
        check_reply(REQ, data)
    assert info.value.reason == reason


def test_nothing_is_no_response() -> None:
    with pytest.raises(NoResponse) as info:
        check_reply(REQ, b"")
    assert info.value.reason == "timeout"


# -- constants and the chunk plan ---------------------------------------------------------------------


def test_silent_interval_follows_the_serial_line_spec() -> None:
    assert silent_interval_s(19200) == pytest.approx(3.5 * 11 / 19200)  # ~2.0 ms
    assert silent_interval_s(9600) == pytest.approx(2 * 3.5 * 11 / 19200)
    assert silent_interval_s(115200) == 0.00175


def test_plan_chunks_examples() -> None:
    assert plan_chunks(0) == []
    assert plan_chunks(3) == [3]
    assert plan_chunks(7) == [3, 4]  # never the header's 7
    assert plan_chunks(125) == [125]
    assert plan_chunks(250) == [82, 83, 85]  # not 125 + 125 (bugcase 05)
    assert len(plan_chunks(1059)) == 9  # the largest garage: as few reads as before
    with pytest.raises(ValueError):
        plan_chunks(-1)


def test_plan_chunks_properties() -> None:
    for n in range(1, 9000):
        sizes = plan_chunks(n)
        assert sum(sizes) == n
        assert all(1 <= s <= 125 and s != HEADER_COUNT for s in sizes), n
        assert all(a != b for a, b in itertools.pairwise(sizes)), n
        if n <= 7000:
            assert len(set(sizes)) == len(sizes), n


# -- a fake line in fake time -------------------------------------------------------------------------


class FakeLine:
    """A serial line in fake time, with a controller behind it that answers requests one after another.

    ``answer(request_frame, n)`` (n = 1, 2, ... per request) returns ``(processing_s, bytes)``; the
    controller starts on a request when it has finished the previous one, like a slow real slave.
    ``inject(delay_s, data)`` puts bytes on the line regardless of requests.
    """

    def __init__(self, answer: Callable[[bytes, int], tuple[float, bytes]], echo: bool = False) -> None:
        self.now = 0.0
        self.answer = answer
        self.echo = echo
        self.sent: list[bytes] = []
        self._busy_until = 0.0
        self._due: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self.gone = False

    def clock(self) -> float:
        return self.now

    def inject(self, delay_s: float, data: bytes) -> None:
        self._seq += 1
        self._due.append((self.now + delay_s, self._seq, data))
        self._due.sort()

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        if self.echo:
            self.inject(0.0, data)
        processing, out = self.answer(data, len(self.sent))
        start = max(self.now, self._busy_until)
        self._busy_until = start + processing
        if out:
            self.inject(self._busy_until - self.now, out)

    def read(self, max_bytes: int, wait_s: float) -> bytes:
        if self.gone:
            raise BusGone("unplugged")
        if not self._due or self._due[0][0] > self.now + wait_s:
            self.now += wait_s
            return b""
        self.now = max(self.now, self._due[0][0])
        out = b""
        while self._due and self._due[0][0] <= self.now and len(out) < max_bytes:
            t, seq, data = self._due.pop(0)
            take = max_bytes - len(out)
            out += data[:take]
            if data[take:]:
                self._due.insert(0, (t, seq, data[take:]))
        return out

    def close(self) -> None:
        pass


REGS = {100 + i: 1 if i < 125 else 0 for i in range(250)} | {0: 1, 1: 1, 2: 250, 3: 7, 4: 0, 5: 9, 6: 0}


def controller(delay: Callable[[int, int, int], float] = lambda n, addr, count: 0.02) -> Callable[..., tuple]:
    """Answers unit 1 from REGS after ``delay(n, address, count)`` seconds; other units: silence."""

    def answer(req: bytes, n: int) -> tuple[float, bytes]:
        if req[0] != 1:
            return 0.0, b""
        addr, count = int.from_bytes(req[2:4], "big"), int.from_bytes(req[4:6], "big")
        return delay(n, addr, count), reply(1, [REGS.get(a, 0) for a in range(addr, addr + count)])

    return answer


def reader_on(line: FakeLine) -> PymodbusReader:
    return PymodbusReader(SerialSettings("/dev/fake", timeout_s=T), line_factory=lambda s: line, clock=line.clock)


def table(addr: int, count: int) -> list[int]:
    return [REGS[a] for a in range(addr, addr + count)]


def test_a_late_reply_is_drained_not_taken_for_the_next_same_size_read() -> None:
    line = FakeLine(controller(lambda n, addr, count: 1.5 * T if n == 1 else 0.02))
    reader = reader_on(line)
    assert reader.read_input_registers(1, 100, 125) == table(100, 125)
    assert reader.read_input_registers(1, 225, 125) == table(225, 125)
    assert reader.stats["timeout"] == 1 and reader.stats["rescued"] == 1
    assert reader.stats["drained_bytes"] == 255
    assert len(line.sent) == 3


def test_a_reply_later_than_the_quiet_period_is_caught_by_the_chunk_sizes() -> None:
    """The first table read is answered 2.5 timeouts late, after the master has settled and retried:
    the answer to the retry then lands in the next chunk's window. Only its size gives it away."""
    line = FakeLine(controller(lambda n, addr, count: 2.5 * T if n == 2 else 0.02))
    driver, out, _, health = _bay_driver(250)
    reader = reader_on(line)
    assert driver.poll(reader)
    states = [m.status for m in out if isinstance(m, ParkingBayState)]
    assert states == ["occupied"] * 125 + ["free"] * 125
    assert reader.stats["wrong_size"] == 1 and reader.stats["timeout"] == 1
    assert health.problems == {}


def test_same_size_chunks_would_have_been_fooled() -> None:
    """The case above with the old 125 + 125 plan: the flush alone cannot tell; this is why sizes differ."""
    line = FakeLine(controller(lambda n, addr, count: 2.5 * T if n == 1 else 0.02))
    reader = reader_on(line)
    assert reader.read_input_registers(1, 100, 125) == table(100, 125)
    assert reader.read_input_registers(1, 225, 125) != table(225, 125)  # the known limit, documented


def test_echo_is_removed() -> None:
    line = FakeLine(controller(), echo=True)
    reader = reader_on(line)
    assert reader.read_input_registers(1, 0, 7) == [1, 1, 250, 7, 0, 9, 0]
    assert reader.read_input_registers(1, 100, 82) == table(100, 82)
    assert reader.stats["echo"] == 2 and reader.stats["timeout"] == 0 and len(line.sent) == 2


def test_stray_bytes_are_discarded_before_sending() -> None:
    line = FakeLine(controller())
    line.inject(0.0, b"\x00\x01\x02" + reply(1, [0] * 7))
    reader = reader_on(line)
    assert reader.read_input_registers(1, 0, 7)[:3] == [1, 1, 250]
    assert reader.stats["stray_bytes"] == 1 and len(line.sent) == 1


def test_exception_reply_is_not_retried() -> None:
    line = FakeLine(lambda req, n: (0.02, frame(1, 0x84, 2)))
    reader = reader_on(line)
    with pytest.raises(BadReply) as info:
        reader.read_input_registers(1, 7, 1)
    assert info.value.reason == "exception" and len(line.sent) == 1


def test_two_failures_raise_with_the_reason() -> None:
    line = FakeLine(lambda req, n: (0.02, reply(2, [3] * 7)))  # the neighbour answers, every time
    reader = reader_on(line)
    with pytest.raises(BadReply) as info:
        reader.read_input_registers(1, 0, 7)
    assert info.value.reason == "wrong_unit" and len(line.sent) == 2
    assert reader.stats["wrong_unit"] == 2 and reader.stats["retries"] == 1


def test_a_babbling_line_gives_up_instead_of_hanging() -> None:
    line = FakeLine(controller())
    for i in range(2000):
        line.inject(i * 0.001, b"\xff")
    reader = reader_on(line)
    with pytest.raises(BadReply) as info:
        reader.read_input_registers(1, 0, 7)
    assert info.value.reason == "line_busy"
    assert line.sent == []


def test_a_vanished_port_is_bus_gone() -> None:
    line = FakeLine(controller())
    reader = reader_on(line)
    line.gone = True
    with pytest.raises(BusGone):
        reader.read_input_registers(1, 0, 7)


def test_faults_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    line = FakeLine(lambda req, n: (0.02, reply(2, [3] * 7)))
    reader = reader_on(line)
    for _ in range(3):
        with pytest.raises(BadReply):
            reader.read_input_registers(1, 0, 7)
    assert reader.stats["wrong_unit"] == 6
    assert caplog.text.count("(wrong_unit)") == 1


def test_rate_limited_log_reports_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    warn = RateLimitedLog(logging.getLogger("t"), 60.0, clock=lambda: now[0])
    for _ in range(3):
        warn.warning("k", "bad %s", "thing")
    warn.warning("other", "else")
    now[0] = 61.0
    warn.warning("k", "bad %s", "thing")
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing",
        "else",
        "bad thing (and 2 more like it in the last 60 s)",
    ]


# -- the driver drops the poll ------------------------------------------------------------------------


def test_a_failed_chunk_drops_the_whole_poll() -> None:
    driver, out, clock, health = _bay_driver(250)

    class Reader:
        def __init__(self) -> None:
            self.fail = True

        def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
            if address == 182 and self.fail:  # the second chunk (82 + 83 + 85)
                raise BadReply("reply to IR 182+83 carries 82 registers", reason="wrong_size")
            return table(address, count) if address >= 100 else [1, 1, 250, 7, 0, 9, 0]

        def close(self) -> None:
            pass

    reader = Reader()
    assert not driver.poll(reader)
    assert out == []  # not even the first chunk, which did read fine
    assert driver.stats["dropped_polls"] == 1 and driver.stats["dropped:wrong_size"] == 1
    assert health.problems["/dev/fake unit 1"] == (
        "/dev/fake unit 1: reply to IR 182+83 carries 82 registers (wrong_size); poll dropped"
    )
    reader.fail = False
    clock.t += 1
    assert driver.poll(reader)
    assert len(out) == 250 and health.problems == {}
    assert isinstance(driver, BayControllerDriver)
