"""Modbus RTU field bus: the generic master for register map v1, one thread per serial port.

The register map (addresses, device types, point codes, decoding) is the
contract in :mod:`contracts.fieldbus`, shared with the simulator. This module
knows no concrete sensor kind: each kind (``edge/sensors/<kind>.py``)
subclasses :class:`ModbusControllerConfig` and :class:`ControllerDriver`, and
``edge/sensors/__init__.py`` registers it (docs/sensor-kinds.md).

Several controllers may share one RS-485 bus (one serial port): a
:class:`ModbusBus` owns the port and polls its controllers in turn from its own
thread, so reads never run on the MQTT thread or the main thread. Each
:class:`ControllerDriver` reads the header, skips the table when the change
counter has not moved, re-reads it fully at every refresh, and emits contract
messages on change plus a full refresh every ``refresh_interval_s``.

Errors, by scope:

* a point's fault code or a garbage value -> that point is ``unknown``
  (garbage is counted and logged), the loop goes on;
* a controller that does not answer or answers nonsense -> the device is
  ``degraded`` with a reason; after ``unknown_after_s`` its points are
  published as ``unknown``;
* a reply that does not match its request (late, echoed, duplicated, from
  another unit, truncated, garbled, of another size) -> the line is drained
  and the read retried once; if it still fails the whole poll is dropped
  (nothing published, counted per reason). See :class:`PymodbusReader` and
  docs/fieldbus.md, "Line hygiene";
* a port that cannot be opened or vanishes (USB adapter unplugged), or a bus
  where no controller answers -> the port is closed and reopened with backoff.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import Field, model_validator

from common.retry import Backoff
from contracts.configfile import StrictModel
from contracts.fieldbus import (
    FAULT_WIRING,
    FC_READ_INPUT_REGISTERS,
    HEADER_ADDRESS,
    HEADER_COUNT,
    MAX_POINTS,
    MAX_REGISTERS_PER_READ,
    MAX_UNIT,
    MIN_UNIT,
    REGISTER_MAP_VERSION,
    TABLE_ADDRESS,
    Header,
)
from contracts.messages import LockerCompartmentState, ParkingBayState, utcnow

log = logging.getLogger(__name__)

#: The contract messages a field-bus controller may publish (``contracts.messages``). A kind that
#: publishes a new message type adds it here, once the contract defines it.
SensorMessage = ParkingBayState | LockerCompartmentState
Emit = Callable[[list[SensorMessage]], None]


class HealthSink(Protocol):
    """Where drivers report problems (``None`` clears); see :class:`edge.mqtt.HealthReporter`."""

    def set_problem(self, source: str, problem: str | None) -> None: ...


# -- configuration --------------------------------------------------------------------------------

Parity = Literal["N", "E", "O"]


class ModbusControllerConfig(StrictModel):
    """What every field-bus controller's configuration has: its serial line, unit id and timing.

    A sensor kind subclasses it with ``type: Literal["<kind>"]`` (its key in ``edge.sensors.DRIVERS``),
    its group id and its points, and implements :meth:`point_ids` and :attr:`group_id`. Times are
    seconds. Unknown keys are rejected; validation errors are ``ValueError`` (pydantic).
    """

    #: The kind's key in ``edge.sensors.DRIVERS``; each kind narrows it to a ``Literal``.
    type: str
    port: Annotated[str, Field(min_length=1)]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    #: Modbus unit (slave) id of the controller on the bus.
    unit: Annotated[int, Field(ge=MIN_UNIT, le=MAX_UNIT)] = 1
    #: Wait this long for an answer before counting the request as unanswered.
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    #: Every point's state is re-published this often even when unchanged, so
    #: the server can tell fresh from stale. 60 s: half of a garage sign's stale limit (120 s;
    #: contracts.site.DISPLAY_STALE_AFTER_S), so one lost refresh does not blank it (check-config checks).
    refresh_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    #: A controller that has not answered for this long gets its points published as ``unknown``.
    unknown_after_s: Annotated[float, Field(gt=0)] = 60.0

    def point_ids(self) -> list[str]:
        """The point ids in register order: point ``i`` is IR ``TABLE_ADDRESS + i``."""
        raise NotImplementedError

    @property
    def group_id(self) -> str:
        """The id the points belong to (a lot, a locker bank): point ids are unique within it."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.port} unit {self.unit}"

    @model_validator(mode="after")
    def _points_ok(self) -> ModbusControllerConfig:
        ids = self.point_ids()
        if not ids:
            raise ValueError("no points configured")
        if len(ids) > MAX_POINTS:
            raise ValueError(f"{len(ids)} points is more than the register map holds ({MAX_POINTS})")
        dups = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dups:
            raise ValueError(f"duplicate point id(s): {', '.join(dups[:10])}")
        if self.refresh_interval_s < self.poll_interval_s:
            raise ValueError("refresh_interval_s must not be shorter than poll_interval_s")
        return self


# -- errors ---------------------------------------------------------------------------------------


class SensorError(Exception):
    """Base of the sensor drivers' errors.

    ``reason`` is a short, stable code (``timeout``, ``wrong_unit``, ...) used as a counter key and in
    health text; ``str(exc)`` is the human-readable detail.
    """

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class BusGone(SensorError):
    """The serial port cannot be opened or stopped working: close and reopen it."""

    reason = "bus_gone"


class NoResponse(SensorError):
    """A controller did not answer within its timeout."""

    reason = "timeout"


class BadReply(SensorError):
    """A controller answered with a Modbus exception, or what came back does not match the request.

    Reasons: ``exception`` (a well-formed Modbus exception reply; not a line fault), ``wrong_unit``,
    ``wrong_function``, ``wrong_size``, ``bad_crc``, ``truncated``, ``garbage``, ``trailing_bytes``,
    ``line_busy``.
    """

    reason = "bad_reply"


# -- line hygiene ---------------------------------------------------------------------------------

#: Longest RTU frame: 256 bytes (Modbus over Serial Line V1.02 §2.5.1).
MAX_RTU_FRAME = 256
#: Bits per character in RTU mode: start + 8 data + parity (or a 2nd stop bit) + stop
#: (Modbus over Serial Line V1.02 §2.5.1).
RTU_BITS_PER_CHAR = 11


def silent_interval_s(baudrate: int) -> float:
    """The inter-frame silence t3.5, in seconds, at ``baudrate`` (bits/s).

    3.5 character times of 11 bits, and a fixed 1.75 ms above 19200 baud (Modbus over Serial Line
    spec V1.02 §2.5.1.1). 19200 baud -> ~2.0 ms.
    """
    if baudrate > 19200:
        return 0.00175
    return 3.5 * RTU_BITS_PER_CHAR / baudrate


def _crc(data: bytes) -> bytes:
    """Modbus CRC-16 of ``data`` as it goes on the wire (2 bytes, low byte first), via pymodbus."""
    from pymodbus.framer import FramerRTU

    return int(FramerRTU.compute_CRC(data)).to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One FC 04 request: ``count`` (1..125) input registers from ``address`` (0..65535) of ``unit`` (1..247)."""

    unit: int
    address: int
    count: int

    @property
    def frame(self) -> bytes:
        """The request ADU (8 bytes: unit, 04, address, count, CRC), encoded by pymodbus."""
        from pymodbus.framer import FramerRTU
        from pymodbus.pdu import DecodePDU
        from pymodbus.pdu.register_message import ReadInputRegistersRequest

        pdu = ReadInputRegistersRequest(address=self.address, count=self.count, dev_id=self.unit)
        return bytes(FramerRTU(DecodePDU(False)).buildFrame(pdu))

    @property
    def reply_size(self) -> int:
        """Bytes in the matching normal reply: unit, 04, byte count ``2 * count``, data, CRC."""
        return 5 + 2 * self.count

    def __str__(self) -> str:
        return f"unit {self.unit} IR {self.address}+{self.count}"


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply that matches its request: the register values, and whether an exact copy followed it."""

    registers: list[int]
    duplicated: bool = False


def _frame_size(buf: bytes) -> int | None:
    """The RTU frame size announced by the start of ``buf``, or None when it cannot be a read reply.

    ``buf`` needs at least 3 bytes for a normal read reply (the byte count), 2 for an exception.
    """
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc & 0x80:
        return 5
    if fc in (0x03, 0x04) and len(buf) >= 3:
        return 5 + buf[2]
    return None


def check_reply(request: ReadRequest, data: bytes) -> Reply:
    """Check that ``data`` (everything received for ``request``, echo removed) is its answer.

    Checked in order: a whole frame came (else ``truncated`` / ``garbage``); its CRC (``bad_crc``, or
    ``garbage`` when it does not even start with our unit id and function code); the
    unit id (``wrong_unit``); the function code (``exception`` for a Modbus exception reply,
    ``wrong_function``); the byte count is ``2 * request.count`` (``wrong_size``); nothing but an exact
    copy of the frame follows it (``trailing_bytes``). Returns the registers (``request.count`` ints,
    0..65535). Raises :class:`NoResponse` for no data, :class:`BadReply` otherwise.
    """
    if not data:
        raise NoResponse(f"no answer to {request}")
    size = _frame_size(data)
    if size is None:
        if len(data) < 3 and request.reply_size > len(data) and data[:1] == bytes([request.unit]):
            raise BadReply(f"truncated reply to {request}: {len(data)} bytes", reason="truncated")
        raise BadReply(f"garbage instead of a reply to {request}: {data[:8].hex(' ')}...", reason="garbage")
    if len(data) < size:
        prefix_ok = data[0] == request.unit and data[1] == FC_READ_INPUT_REGISTERS
        reason = "truncated" if prefix_ok else "garbage"
        raise BadReply(f"{reason} reply to {request}: {len(data)} of {size} bytes", reason=reason)
    frame, rest = data[:size], data[size:]
    if _crc(frame[:-2]) != frame[-2:]:
        if frame[0] == request.unit and frame[1] in (FC_READ_INPUT_REGISTERS, FC_READ_INPUT_REGISTERS | 0x80):
            raise BadReply(f"CRC error in the reply to {request}", reason="bad_crc")
        raise BadReply(f"garbage instead of a reply to {request}: {data[:8].hex(' ')}...", reason="garbage")
    if frame[0] != request.unit:
        raise BadReply(f"reply from unit {frame[0]} to a request for {request}", reason="wrong_unit")
    fc = frame[1]
    if fc == FC_READ_INPUT_REGISTERS | 0x80:
        raise BadReply(f"Modbus exception reply {frame[2]} for {request}", reason="exception")
    if fc != FC_READ_INPUT_REGISTERS:
        raise BadReply(f"reply with function code {fc} to {request}", reason="wrong_function")
    if frame[2] != 2 * request.count:
        raise BadReply(
            f"reply to {request} carries {frame[2] // 2} registers, not {request.count}", reason="wrong_size"
        )
    duplicated = False
    if rest:
        if rest != frame:
            raise BadReply(f"{len(rest)} unexpected bytes after the reply to {request}", reason="trailing_bytes")
        duplicated = True
    from pymodbus.pdu import DecodePDU

    pdu = DecodePDU(False).decode(frame[1:-2])
    registers = [int(r) for r in getattr(pdu, "registers", [])]
    if len(registers) != request.count:  # cannot happen after the byte count check; never trust silently
        raise BadReply(f"asked for {request.count} registers, decoded {len(registers)}", reason="wrong_size")
    return Reply(registers, duplicated)


class RateLimitedLog:
    """Warn at most once per ``interval_s`` per key, saying how many were suppressed in between."""

    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._next: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._next.get(key, float("-inf")):
            self._suppressed[key] += 1
            return
        self._next[key] = now + self._interval
        n = self._suppressed.pop(key, 0)
        if n:
            self._log.warning(msg + " (and %d more like it in the last %.0f s)", *args, n, self._interval)
        else:
            self._log.warning(msg, *args)


# -- reading registers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """One serial port: device path, line settings, and the reply timeout in seconds."""

    port: str
    baudrate: int = 19200
    parity: Parity = "N"
    stopbits: int = 1
    timeout_s: float = 1.0


class RegisterReader(Protocol):
    """One open serial port. Raises :class:`BusGone`, :class:`NoResponse` or :class:`BadReply`."""

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]: ...

    def close(self) -> None: ...


ReaderFactory = Callable[[SerialSettings], RegisterReader]


class Line(Protocol):
    """A raw open serial line, 8-bit bytes. Methods raise :class:`BusGone` when the port is gone."""

    def write(self, data: bytes) -> None:
        """Send ``data`` and return once it has left the port."""

    def read(self, max_bytes: int, wait_s: float) -> bytes:
        """Up to ``max_bytes`` received bytes; waits up to ``wait_s`` seconds for the first; ``b""`` if none."""
        ...

    def close(self) -> None: ...


class SerialLine:
    """A :class:`Line` on a pyserial port (``/dev/ttyUSB0``, or a simulator's pty), opened exclusively."""

    def __init__(self, settings: SerialSettings) -> None:
        import serial

        try:
            self._port = serial.serial_for_url(
                settings.port,
                baudrate=settings.baudrate,
                bytesize=8,
                parity=settings.parity,
                stopbits=settings.stopbits,
                timeout=0,  # non-blocking reads; waiting is done with select() in read()
                write_timeout=max(settings.timeout_s, 1.0),
                exclusive=True,
            )
        except Exception as exc:  # pyserial raises SerialException, OSError, ValueError, termios.error
            raise BusGone(f"cannot open {settings.port}: {exc}") from exc
        self._name = settings.port

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except Exception as exc:
            raise BusGone(f"{self._name}: write failed: {exc}") from exc

    def read(self, max_bytes: int, wait_s: float) -> bytes:
        try:
            ready, _, _ = select.select([self._port.fileno()], [], [], max(wait_s, 0.0))
            if not ready:
                return b""
            data = bytes(self._port.read(max_bytes))
        except Exception as exc:
            raise BusGone(f"{self._name}: read failed: {exc}") from exc
        return data

    def close(self) -> None:
        self._port.close()


class PymodbusReader:
    """FC 04 reads over Modbus RTU with line hygiene; pymodbus encodes, computes CRCs and decodes.

    RTU has no transaction id, so a reply that arrives late (after our timeout) would otherwise be
    taken as the answer to the next request. Per request (:meth:`read_input_registers`):

    1. wait for the inter-frame silence t3.5 (:func:`silent_interval_s`), discarding and counting any
       stray bytes on the line (``stray_bytes``);
    2. send the request; remove our own echo if the line echoes it (``echo``);
    3. read exactly one frame and check it against the request (:func:`check_reply`);
    4. on a timeout or any mismatch: count it, wait until the line has been quiet for
       ``timeout_s`` (discarding whatever arrives, e.g. the late reply), then retry once. A second
       failure raises, and the caller drops the poll. A Modbus exception reply is not retried.

    pymodbus' own client is not used for the exchange: its RTU transaction takes the first CRC-valid
    frame for the unit id whatever its function code or size, drops any bytes after it unseen, and
    retries without flushing the late reply (see docs/fieldbus.md, "Line hygiene").

    ``stats`` counts faulty exchanges per reason (including those a retry rescued) plus ``retries``,
    ``rescued``, ``echo`` and ``duplicate``. Not thread-safe: one :class:`ModbusBus` thread uses it.
    """

    #: Give up settling when the line has not been quiet for this many timeouts in a row.
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
        self.quiet_s = settings.timeout_s
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._warn = RateLimitedLog(log, 60.0, clock)
        self._line = line_factory(settings)

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        """``count`` input registers (ints 0..65535) from ``address`` of ``unit``.

        Raises :class:`BusGone` (port gone), :class:`NoResponse` (no answer twice), :class:`BadReply`
        (exception reply, or two mismatching answers; ``reason`` says which).
        """
        request = ReadRequest(unit, address, count)
        for attempt in (1, 2):
            try:
                reply = self._exchange(request)
            except (NoResponse, BadReply) as exc:
                if exc.reason == "exception":
                    raise
                self._fault(exc.reason, str(exc))
                quiet = self._settle()
                if attempt == 2 or not quiet:
                    raise
                self.stats["retries"] += 1
                continue
            if attempt == 2:
                self.stats["rescued"] += 1
            if reply.duplicated:
                self._fault("duplicate", f"the reply to {request} came twice (identical; kept)")
            return reply.registers
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._line.close()

    # -- one exchange -------------------------------------------------------------------------------
    def _exchange(self, request: ReadRequest) -> Reply:
        self._clear(request)
        frame = request.frame
        self._line.write(frame)
        data = self._receive(request, frame)
        if not data:
            raise NoResponse(f"no answer within {self.settings.timeout_s:g} s")
        return check_reply(request, data)

    def _clear(self, request: ReadRequest) -> None:
        """Wait for t3.5 of silence before sending, discarding stray bytes; bounded by ``quiet_s``."""
        stray = 0
        end = self._clock() + self.quiet_s
        while chunk := self._line.read(4096, self.silence_s):
            stray += len(chunk)
            if self._clock() >= end:
                raise BadReply(f"line never quiet before {request} ({stray} bytes)", reason="line_busy")
        if stray:
            self._fault("stray_bytes", f"{stray} stray bytes on the line before {request}, discarded")

    def _receive(self, request: ReadRequest, sent: bytes) -> bytes:
        """Everything that came for ``request`` within the timeout: one frame, plus whatever follows
        it before t3.5 of silence. Our own echo is removed."""
        deadline = self._clock() + self.settings.timeout_s
        buf = b""
        echo_possible = True
        while True:
            need = self._need(buf, request, sent if echo_possible else b"")
            if need <= 0:
                break
            left = deadline - self._clock()
            if left <= 0:
                return buf
            chunk = self._line.read(need, left)
            if not chunk:
                return buf
            buf += chunk
            if echo_possible and buf.startswith(sent):
                buf = buf[len(sent) :]
                echo_possible = False
                self.stats["echo"] += 1
            elif echo_possible and not sent.startswith(buf):
                echo_possible = False
        # anything right behind the frame (a duplicate, garbage, a second reply) is part of the evidence
        while len(buf) <= 2 * MAX_RTU_FRAME and (chunk := self._line.read(MAX_RTU_FRAME, self.silence_s)):
            buf += chunk
        return buf

    @staticmethod
    def _need(buf: bytes, request: ReadRequest, echo: bytes) -> int:
        """How many more bytes the current frame needs (<= 0: complete, or not a frame at all)."""
        if echo and len(buf) < len(echo) and echo.startswith(buf):
            # our echo so far, or the start of the reply (same unit id and function code)
            size = _frame_size(buf)
            if size is not None and len(buf) >= size:
                try:
                    check_reply(request, buf)
                    return 0
                except SensorError:
                    pass
            return len(echo) - len(buf)
        if len(buf) >= 2 and buf[1] & 0x80:
            return 5 - len(buf)  # an exception reply: unit, function code | 0x80, code, CRC
        if len(buf) < 3:
            return 3 - len(buf)
        size = _frame_size(buf)
        if size is None:
            return 0  # not a read reply: stop here, check_reply says what it is
        return size - len(buf)

    def _settle(self) -> bool:
        """After a timeout or mismatch: discard everything until the line has been quiet for
        ``quiet_s``. False when it never went quiet within ``SETTLE_MAX_TIMEOUTS`` timeouts."""
        end = self._clock() + self.SETTLE_MAX_TIMEOUTS * self.quiet_s
        drained = 0
        while chunk := self._line.read(4096, self.quiet_s):
            drained += len(chunk)
            if self._clock() >= end:
                self._fault("line_busy", f"line not quiet after {drained} bytes; giving up on this read")
                return False
        if drained:
            self.stats["drained_bytes"] += drained
        return True

    def _fault(self, reason: str, detail: str) -> None:
        self.stats[reason] += 1
        self._warn.warning(reason, "%s: %s (%s)", self.settings.port, detail, reason)


def plan_chunks(n: int, *, limit: int = MAX_REGISTERS_PER_READ, avoid: int = HEADER_COUNT) -> list[int]:
    """Register counts of the reads covering a table of ``n`` points, in address order (sum = ``n``).

    Every count is 1..``limit`` (125, the FC 04 maximum) and differs from ``avoid`` (the header read's 7
    registers). The counts are pairwise different when that is possible with the fewest reads that allow
    it (up to ~7,800 points at 125), otherwise consecutive counts differ. So a reply's byte count tells
    which request of a poll it answers: a late reply can never pass as the next read's answer on length
    (a table of 250 is read as 82 + 83 + 85, not 125 + 125). Raises ValueError for ``n < 0``.
    """
    if n < 0:
        raise ValueError(f"negative point count {n}")
    if n == 0:
        return []
    k = -(-n // limit)
    while True:
        base, rem = divmod(n - k * (k - 1) // 2, k)
        if base < 1:
            break
        # base, base+1, ..., with the top ``rem`` counts one higher: still pairwise different
        sizes = list(range(base, base + k - rem)) + list(range(base + k - rem + 1, base + k + 1))
        if sizes[-1] <= limit and avoid not in sizes:
            return sizes
        k += 1
    # too many points for pairwise different counts: alternate limit, limit - 1
    sizes = []
    left = n
    while left > limit:
        size = limit if len(sizes) % 2 == 0 else limit - 1
        sizes.append(size)
        left -= size
    if left == sizes[-1] or left == avoid:
        sizes += [left - 1, 1]
    else:
        sizes.append(left)
    return sizes


# -- controllers ----------------------------------------------------------------------------------

S = TypeVar("S")  # a point's decoded state
C = TypeVar("C", bound=ModbusControllerConfig)  # the kind's configuration model


class ControllerDriver(Generic[C, S]):
    """Polls one controller unit and turns its point codes into contract messages.

    Subclasses (one per sensor kind) give the configuration model, the device type (IR 1), the code
    mapping and the message builder. Not thread-safe: one :class:`ModbusBus` thread drives it.
    """

    #: The kind's configuration model: the registry builds the config union from it.
    config_model: ClassVar[type[ModbusControllerConfig]]
    #: The device type the controller must report in IR 1 (``contracts.fieldbus.DEVICE_TYPE_*``).
    device_type: ClassVar[int]
    #: Human name used in health text ("bay controller").
    kind_name: ClassVar[str]

    def __init__(
        self,
        config: C,
        *,
        device_id: str,
        emit: Emit,
        health: HealthSink,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config: C = config
        self.device_id = device_id
        self.points = config.point_ids()
        self.label = config.label
        self._emit = emit
        self._health = health
        self._clock = clock
        self._now = now
        self.stats: Counter[str] = Counter()
        self._states: list[S | None] = [None] * len(self.points)
        self._codes: list[int | None] = [None] * len(self.points)
        self._counter: int | None = None
        self._next_refresh = clock()  # first successful read publishes everything
        self._last_ok = clock()
        self._problem: str | None = None
        self._count_warned: int | None = None
        self._warn = RateLimitedLog(log, 60.0, clock)
        self.next_poll = clock()

    # subclass hooks
    def decode(self, code: int) -> tuple[S, bool]:
        """The state for a register value, and whether the value was garbage."""
        raise NotImplementedError

    def unknown_state(self) -> S:
        raise NotImplementedError

    def message(self, point_id: str, state: S, observed_at: datetime) -> SensorMessage:
        raise NotImplementedError

    # polling
    def poll(self, reader: RegisterReader) -> bool:
        """One poll: True if the controller answered sanely. Raises :class:`BusGone` only.

        On :class:`NoResponse` or :class:`BadReply` from any read the whole poll is dropped: nothing is
        emitted, ``stats["dropped_polls"]`` and ``stats["dropped:<reason>"]`` count it, and the health
        problem reads ``"<label>: <detail> (<reason>); poll dropped"``. The next good poll re-reads the
        full table.
        """
        self.stats["polls"] += 1
        try:
            header = Header.parse(reader.read_input_registers(self.config.unit, HEADER_ADDRESS, HEADER_COUNT))
            self._check_header(header)
            refresh = self._clock() >= self._next_refresh
            if not refresh and header.counter == self._counter:
                self.stats["table_skipped"] += 1
                self._set_ok(header)
                return True
            codes = self._read_table(reader, min(header.points, len(self.points)))
            observed_at = self._now()
        except (NoResponse, BadReply) as exc:
            # Nothing of this poll is published: a chunk we cannot vouch for must not become a state.
            self.stats["dropped_polls"] += 1
            self.stats[f"dropped:{exc.reason}"] += 1
            self.unreachable(f"{exc} ({exc.reason}); poll dropped")
            return False
        self._set_ok(header)
        self._apply(codes, observed_at, refresh)
        self._counter = header.counter
        return True

    def unreachable(self, reason: str) -> None:
        """The controller (or its whole bus) cannot be read right now."""
        self.stats["read_errors"] += 1
        self._counter = None  # re-read the whole table once it answers again
        self._set_problem(f"{self.label}: {reason}")
        now = self._clock()
        outage = now - self._last_ok
        if outage < self.config.unknown_after_s:
            return
        unknown = self.unknown_state()
        already = all(s == unknown for s in self._states)
        if already and now < self._next_refresh:
            return
        if not already:
            log.warning(
                "%s: silent for %.0f s, publishing its %d points as unknown", self.label, outage, len(self.points)
            )
        self._apply([None] * len(self.points), self._now(), refresh=now >= self._next_refresh)

    def _check_header(self, h: Header) -> None:
        if h.version != REGISTER_MAP_VERSION:
            raise BadReply(f"register map version {h.version}, expected {REGISTER_MAP_VERSION}")
        if h.device_type != self.device_type:
            raise BadReply(f"device type {h.device_type}, expected {self.device_type} ({self.kind_name})")

    def _read_table(self, reader: RegisterReader, n: int) -> list[int]:
        codes: list[int] = []
        address = TABLE_ADDRESS
        for count in plan_chunks(n):
            codes += reader.read_input_registers(self.config.unit, address, count)
            address += count
        self.stats["table_reads"] += 1
        return codes

    def _set_ok(self, h: Header) -> None:
        self._last_ok = self._clock()
        problems = []
        if h.points != len(self.points):
            problems.append(f"reports {h.points} points, configured {len(self.points)}")
            if self._count_warned != h.points:
                self._count_warned = h.points
                log.warning(
                    "%s: controller reports %d points but %d are configured; extra configured points are unknown",
                    self.label,
                    h.points,
                    len(self.points),
                )
        if h.faults & FAULT_WIRING:
            problems.append("wiring fault flag set")
        self._set_problem(f"{self.label}: {', '.join(problems)}" if problems else None)

    def _set_problem(self, problem: str | None) -> None:
        if problem != self._problem:
            if problem:
                self._warn.warning(problem, "%s", problem)  # a flapping controller: once a minute per text
            elif self._problem:
                log.info("%s: ok again", self.label)
            self._problem = problem
        self._health.set_problem(self.label, problem)

    def _apply(self, codes: Sequence[int | None], observed_at: datetime, refresh: bool) -> None:
        """Decode ``codes`` (None = unreadable) and emit what changed, or everything at a refresh."""
        unknown = self.unknown_state()
        out: list[SensorMessage] = []
        for i, point_id in enumerate(self.points):
            code = codes[i] if i < len(codes) else None
            if code is None:
                state = unknown
            else:
                state, garbage = self.decode(code)
                if garbage:
                    self.stats["garbage_codes"] += 1
                    if self._codes[i] != code:
                        log.warning("%s: point %s has invalid code %d; reporting unknown", self.label, point_id, code)
            self._codes[i] = code
            if refresh or state != self._states[i]:
                out.append(self.message(point_id, state, observed_at))
            self._states[i] = state
        if refresh:
            self._next_refresh = self._clock() + self.config.refresh_interval_s
            self.stats["refreshes"] += 1
        if out:
            self.stats["messages"] += len(out)
            self._emit(out)


# -- the bus --------------------------------------------------------------------------------------


class ModbusBus:
    """One serial port, its controllers, and the thread that polls them."""

    #: A bus where no controller has answered for this long is closed and reopened.
    STUCK_AFTER_S = 10.0

    def __init__(
        self,
        serial: SerialSettings,
        drivers: Sequence[ControllerDriver[Any, Any]],
        *,
        health: HealthSink,
        stop: threading.Event,
        reader_factory: ReaderFactory = PymodbusReader,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.serial = serial
        self.drivers = list(drivers)
        self._health = health
        self._stop = stop
        self._factory = reader_factory
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._clock = clock
        self._thread: threading.Thread | None = None
        self.opens = 0
        self.label = f"bus {serial.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"modbus:{self.serial.port}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        # The shared policy (common.retry): min, doubling to max, no jitter; reset by a good poll.
        backoff = Backoff(self._backoff_min, self._backoff_max)
        while not self._stop.is_set():
            try:
                reader = self._factory(self.serial)
            except BusGone as exc:
                self._down(str(exc), backoff.next_delay())
                continue
            except Exception:
                log.exception("%s: unexpected error opening the port", self.label)
                self._down("cannot open port (unexpected error)", backoff.next_delay())
                continue
            self.opens += 1
            log.info("%s: open (%d baud, %d controller(s))", self.label, self.serial.baudrate, len(self.drivers))
            self._health.set_problem(self.label, None)
            try:
                if self._poll_until_broken(reader):
                    backoff.reset()
            except BusGone as exc:
                self._down(str(exc), backoff.next_delay())
            except Exception:
                log.exception("%s: unexpected error while polling; reopening", self.label)
                self._down("unexpected error while polling", backoff.next_delay())
            finally:
                try:
                    reader.close()
                except Exception:
                    log.exception("%s: error closing the port", self.label)
        log.info("%s: stopped", self.label)

    def _down(self, reason: str, backoff: float) -> None:
        log.warning("%s: %s; retrying in %.1f s", self.label, reason, backoff)
        self._health.set_problem(self.label, f"{self.label}: {reason}")
        for d in self.drivers:
            d.unreachable(f"bus down: {reason}")
        self._stop.wait(backoff)

    def _poll_until_broken(self, reader: RegisterReader) -> bool:
        """Poll until stopped (returns True) or the bus breaks (raises BusGone)."""
        last_answer = self._clock()
        answered = False
        for d in self.drivers:
            d.next_poll = self._clock()
        while not self._stop.is_set():
            driver = min(self.drivers, key=lambda d: d.next_poll)
            wait = driver.next_poll - self._clock()
            if wait > 0 and self._stop.wait(wait):
                break
            if driver.poll(reader):
                last_answer = self._clock()
                if not answered:
                    answered = True
            elif self._clock() - last_answer > max(self.STUCK_AFTER_S, 3 * driver.config.poll_interval_s):
                raise BusGone("no controller on the bus answers")
            driver.next_poll = max(driver.next_poll + driver.config.poll_interval_s, self._clock())
        return answered
