"""Writing a count display's holding registers over Modbus RTU (FC 16), with the edge's line hygiene.

Same rules as the edge's reader (:class:`edge.sensors.modbus.PymodbusReader`, docs/fieldbus.md "Line
hygiene"): pymodbus only builds the request frame and computes CRCs; this module owns the exchange:

1. wait for the inter-frame silence t3.5, discarding and counting stray bytes;
2. send the request; remove our own echo (2-wire adapters without echo suppression);
3. read exactly one reply and check it: CRC, unit id, function code (0x90 is an exception reply),
   address and register count echoed back, nothing after it but an identical copy;
4. on a timeout or a mismatch: drain the line until it has been quiet for the timeout (so a late reply
   cannot be taken for the next write's answer), then raise. The caller retries at its next cycle.

Raises the edge's :class:`~edge.sensors.modbus.BusGone` (the port is gone: reopen it),
:class:`~edge.sensors.modbus.NoResponse` and :class:`~edge.sensors.modbus.BadReply` (``reason`` names
what was wrong). Not thread-safe: one port writer thread owns one :class:`RtuWriter`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from contracts.fieldbus import FC_WRITE_MULTIPLE_REGISTERS, MAX_UNIT, MIN_UNIT, REGISTER_MAX
from edge.sensors.modbus import (
    BadReply,
    Line,
    NoResponse,
    RateLimitedLog,
    SerialLine,
    SerialSettings,
    silent_interval_s,
)

log = logging.getLogger(__name__)

#: A normal FC 16 reply: unit, 0x10, address (2), count (2), CRC (2).
WRITE_REPLY_SIZE = 8
#: An exception reply: unit, 0x90, exception code, CRC (2).
EXCEPTION_REPLY_SIZE = 5
#: FC 16 carries at most 123 registers (Modbus Application Protocol V1.1b3 §6.12).
MAX_REGISTERS_PER_WRITE = 123


def crc(data: bytes) -> bytes:
    """Modbus CRC-16 of ``data`` as it goes on the wire (2 bytes, low byte first), via pymodbus."""
    from pymodbus.framer import FramerRTU

    return int(FramerRTU.compute_CRC(data)).to_bytes(2, "big")


def write_frame(unit: int, address: int, values: Sequence[int]) -> bytes:
    """The FC 16 request ADU writing ``values`` (1..123 ints, 0..65535) from ``address`` of ``unit``.

    Raises ValueError outside those ranges.
    """
    if not MIN_UNIT <= unit <= MAX_UNIT:
        raise ValueError(f"unit id {unit} outside {MIN_UNIT}..{MAX_UNIT}")
    if not 1 <= len(values) <= MAX_REGISTERS_PER_WRITE or not 0 <= address <= REGISTER_MAX - len(values) + 1:
        raise ValueError(f"cannot write {len(values)} registers at {address}")
    if any(not 0 <= v <= REGISTER_MAX for v in values):
        raise ValueError(f"register values {list(values)} are not all 16-bit")
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import WriteMultipleRegistersRequest

    pdu = WriteMultipleRegistersRequest(address=address, registers=list(values), dev_id=unit)
    return bytes(FramerRTU(DecodePDU(False)).buildFrame(pdu))


def check_write_reply(request: bytes, data: bytes) -> bool:
    """Check that ``data`` (everything received after sending ``request``, echo removed) answers it.

    Returns True when an identical copy of the reply followed it (kept, counted as ``duplicate``).
    Raises :class:`NoResponse` for no data; :class:`BadReply` with reason ``truncated``, ``garbage``,
    ``bad_crc``, ``wrong_unit``, ``exception`` (the display refused: the code is in the message),
    ``wrong_function``, ``wrong_size`` (address or count not echoed) or ``trailing_bytes``.
    """
    if not data:
        raise NoResponse("no answer")
    unit = request[0]
    refused = len(data) >= 2 and data[1] == FC_WRITE_MULTIPLE_REGISTERS | 0x80
    size = EXCEPTION_REPLY_SIZE if refused else WRITE_REPLY_SIZE
    if len(data) < size:
        ours = data[0] == unit and (len(data) < 2 or data[1] in (0x10, 0x90))
        reason = "truncated" if ours else "garbage"
        raise BadReply(f"{reason} reply: {len(data)} of {size} bytes", reason=reason)
    frame, rest = data[:size], data[size:]
    if crc(frame[:-2]) != frame[-2:]:
        if frame[0] == unit and frame[1] in (FC_WRITE_MULTIPLE_REGISTERS, FC_WRITE_MULTIPLE_REGISTERS | 0x80):
            raise BadReply("CRC error in the reply", reason="bad_crc")
        raise BadReply(f"garbage instead of a reply: {data[:8].hex(' ')}", reason="garbage")
    if frame[0] != unit:
        raise BadReply(f"reply from unit {frame[0]}, not {unit}", reason="wrong_unit")
    if frame[1] == FC_WRITE_MULTIPLE_REGISTERS | 0x80:
        raise BadReply(f"the display refused the write: Modbus exception {frame[2]}", reason="exception")
    if frame[1] != FC_WRITE_MULTIPLE_REGISTERS:
        raise BadReply(f"reply with function code {frame[1]}", reason="wrong_function")
    if frame[2:6] != request[2:6]:
        raise BadReply(f"reply confirms {frame[2:6].hex(' ')}, asked {request[2:6].hex(' ')}", reason="wrong_size")
    if rest:
        if rest != frame:
            raise BadReply(f"{len(rest)} unexpected bytes after the reply", reason="trailing_bytes")
        return True
    return False


class RtuWriter:
    """FC 16 writes on one open serial port (module doc). ``stats`` counts faults by reason, plus
    ``writes``, ``echo``, ``stray_bytes`` and ``drained_bytes``."""

    #: Give up draining when the line has not been quiet for this many timeouts in a row.
    SETTLE_MAX_TIMEOUTS = 5

    def __init__(
        self,
        settings: SerialSettings,
        *,
        line_factory: Callable[[SerialSettings], Line] = SerialLine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.silence_s = silent_interval_s(settings.baudrate)
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._warn = RateLimitedLog(log, 60.0, clock)
        self._line = line_factory(settings)  # raises BusGone

    def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """Write ``values`` from ``address`` of ``unit`` and check the display's confirmation (module doc)."""
        request = write_frame(unit, address, values)
        try:
            self._clear()
            self._line.write(request)
            data = self._receive(request)
            if check_write_reply(request, data):
                self._fault("duplicate", f"unit {unit}: the reply came twice (identical; kept)")
        except (NoResponse, BadReply) as exc:
            self.stats[exc.reason] += 1
            if exc.reason != "exception":
                self._settle()
            raise
        self.stats["writes"] += 1

    def close(self) -> None:
        self._line.close()

    def _clear(self) -> None:
        stray = 0
        end = self._clock() + self.settings.timeout_s
        while chunk := self._line.read(4096, self.silence_s):
            stray += len(chunk)
            if self._clock() >= end:
                raise BadReply(f"line never quiet before a write ({stray} bytes)", reason="line_busy")
        if stray:
            self._fault("stray_bytes", f"{stray} stray bytes on the line before a write, discarded")

    def _receive(self, request: bytes) -> bytes:
        """One reply (our echo removed), plus whatever follows it within t3.5."""
        deadline = self._clock() + self.settings.timeout_s
        buf = b""
        while not self._complete(buf, request):
            left = deadline - self._clock()
            if left <= 0:
                break
            chunk = self._line.read(256, left)
            if not chunk:
                break
            buf += chunk
        while len(buf) < 4 * WRITE_REPLY_SIZE + len(request) and (chunk := self._line.read(256, self.silence_s)):
            buf += chunk
        if buf.startswith(request):
            self.stats["echo"] += 1
            buf = buf[len(request) :]
        return buf

    @staticmethod
    def _complete(buf: bytes, request: bytes) -> bool:
        """Whether ``buf`` holds a whole reply: after our full echo, or on its own. A normal reply repeats
        the request's first 6 bytes, so a prefix of the request is a reply only once its CRC checks."""
        if buf.startswith(request):
            buf = buf[len(request) :]
        elif len(buf) < len(request) and request.startswith(buf):
            return len(buf) >= WRITE_REPLY_SIZE and crc(buf[:6]) == buf[6:8]
        if len(buf) >= 2 and buf[1] & 0x80:
            return len(buf) >= EXCEPTION_REPLY_SIZE
        return len(buf) >= WRITE_REPLY_SIZE

    def _settle(self) -> None:
        """Discard everything until the line has been quiet for the timeout (a late reply goes here)."""
        end = self._clock() + self.SETTLE_MAX_TIMEOUTS * self.settings.timeout_s
        drained = 0
        while chunk := self._line.read(4096, self.settings.timeout_s):
            drained += len(chunk)
            if self._clock() >= end:
                self._fault("line_busy", f"line not quiet after {drained} bytes")
                break
        if drained:
            self.stats["drained_bytes"] += drained

    def _fault(self, reason: str, detail: str) -> None:
        self.stats[reason] += 1
        self._warn.warning(reason, "%s: %s (%s)", self.settings.port, detail, reason)
