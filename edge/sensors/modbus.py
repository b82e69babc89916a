"""Modbus RTU field bus: register map v1, one thread per serial port.

Register map v1 (input registers, function code 04), per controller unit:

    IR 0      register-map version (1)
    IR 1      device type: 1 = bay controller, 2 = locker controller
    IR 2      number of points N
    IR 3      change counter (wraps at 65536)
    IR 4..5   controller uptime in seconds, 32-bit, high word first
    IR 6      fault flags (bit0 = bus/sensor wiring fault)
    IR 100..  one register per point, in order

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
* a port that cannot be opened or vanishes (USB adapter unplugged), or a bus
  where no controller answers -> the port is closed and reopened with backoff.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from contracts.messages import LockerCompartmentState, ParkingBayState, utcnow
from edge.config import MAX_REGISTERS_PER_READ, ModbusBayControllerConfig, ModbusLockerControllerConfig, Parity

log = logging.getLogger(__name__)

REGISTER_MAP_VERSION = 1
HEADER_ADDRESS = 0
HEADER_COUNT = 7
TABLE_ADDRESS = 100
DEVICE_TYPE_BAY = 1
DEVICE_TYPE_LOCKER = 2
FAULT_WIRING = 0x0001

SensorMessage = ParkingBayState | LockerCompartmentState
Emit = Callable[[list[SensorMessage]], None]


class HealthSink(Protocol):
    """Where drivers report problems (``None`` clears); see :class:`edge.mqtt.DeviceHealth`."""

    def set_problem(self, source: str, problem: str | None) -> None: ...


# -- errors ---------------------------------------------------------------------------------------


class SensorError(Exception):
    """Base of the sensor drivers' errors."""


class BusGone(SensorError):
    """The serial port cannot be opened or stopped working: close and reopen it."""


class NoResponse(SensorError):
    """A controller did not answer within its timeout."""


class BadReply(SensorError):
    """A controller answered with a Modbus exception or a malformed reply."""


# -- reading registers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SerialSettings:
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


class PymodbusReader:
    """A pymodbus 3.x RTU client on a serial device (``/dev/ttyUSB0``, or a simulator's pty)."""

    def __init__(self, settings: SerialSettings) -> None:
        from pymodbus.client import ModbusSerialClient
        from pymodbus.framer import FramerType

        self.settings = settings
        self._client = ModbusSerialClient(
            settings.port,
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            bytesize=8,
            parity=settings.parity,
            stopbits=settings.stopbits,
            timeout=settings.timeout_s,
            retries=1,
        )
        # pymodbus 3.10 renamed ``slave=`` to ``device_id=``.
        params = inspect.signature(self._client.read_input_registers).parameters
        self._unit_kw = "device_id" if "device_id" in params else "slave"
        try:
            ok = self._client.connect()
        except Exception as exc:
            self._client.close()  # type: ignore[no-untyped-call]
            raise BusGone(f"cannot open {settings.port}: {exc}") from exc
        if not ok:
            self._client.close()  # type: ignore[no-untyped-call]
            raise BusGone(f"cannot open {settings.port}")

    def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        kwargs: dict[str, Any] = {"count": count, self._unit_kw: unit}
        try:
            reply = self._client.read_input_registers(address, **kwargs)
        except ConnectionException as exc:
            raise BusGone(f"{self.settings.port}: {exc}") from exc
        except ModbusIOException as exc:
            raise NoResponse(f"no answer within {self.settings.timeout_s:g} s") from exc
        except OSError as exc:  # a vanished USB adapter surfaces as a serial/OS error
            raise BusGone(f"{self.settings.port}: {exc}") from exc
        except Exception as exc:  # any other pymodbus error: treat as a bad reply, never crash
            raise BadReply(f"{type(exc).__name__}: {exc}") from exc
        if reply.isError():
            raise BadReply(f"Modbus exception reply {getattr(reply, 'exception_code', '?')} for IR {address}+{count}")
        registers = list(getattr(reply, "registers", []))
        if len(registers) != count:
            raise BadReply(f"asked for {count} registers at IR {address}, got {len(registers)}")
        return registers

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


# -- controllers ----------------------------------------------------------------------------------

S = TypeVar("S")  # a point's decoded state
C = TypeVar("C", ModbusBayControllerConfig, ModbusLockerControllerConfig)


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    device_type: int
    points: int
    counter: int
    uptime_s: int
    faults: int

    @classmethod
    def parse(cls, regs: Sequence[int]) -> Header:
        return cls(regs[0], regs[1], regs[2], regs[3], (regs[4] << 16) | regs[5], regs[6])


class ControllerDriver(Generic[C, S]):
    """Polls one controller unit and turns its point codes into contract messages.

    Subclasses give the device type, the code mapping and the message builder.
    Not thread-safe: one :class:`ModbusBus` thread drives it.
    """

    device_type: ClassVar[int]
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
        """One poll: True if the controller answered sanely. Raises :class:`BusGone` only."""
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
            self.unreachable(str(exc))
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
        for offset in range(0, n, MAX_REGISTERS_PER_READ):
            count = min(MAX_REGISTERS_PER_READ, n - offset)
            codes += reader.read_input_registers(self.config.unit, TABLE_ADDRESS + offset, count)
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
                log.warning("%s", problem)
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
        backoff = self._backoff_min
        while not self._stop.is_set():
            try:
                reader = self._factory(self.serial)
            except BusGone as exc:
                self._down(str(exc), backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            except Exception:
                log.exception("%s: unexpected error opening the port", self.label)
                self._down("cannot open port (unexpected error)", backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            self.opens += 1
            log.info("%s: open (%d baud, %d controller(s))", self.label, self.serial.baudrate, len(self.drivers))
            self._health.set_problem(self.label, None)
            try:
                if self._poll_until_broken(reader):
                    backoff = self._backoff_min
            except BusGone as exc:
                self._down(str(exc), backoff)
                backoff = min(backoff * 2, self._backoff_max)
            except Exception:
                log.exception("%s: unexpected error while polling; reopening", self.label)
                self._down("unexpected error while polling", backoff)
                backoff = min(backoff * 2, self._backoff_max)
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
