"""Register models of the simulated field controllers (register map v1, see docs/fieldbus.md).

The map itself (addresses, device types, point codes) is the contract in
:mod:`contracts.fieldbus`, the very one the edge driver reads with: a drift in
either side fails the simulator tests.

A controller holds one 16-bit code per point (bay or compartment) plus a small
header. Everything is guarded by one lock per controller: the demand model
writes from the fleet thread while the Modbus server reads from the bus thread.

Fault injection hooks mimic what goes wrong on a real RS-485 installation:

- ``stick(i, code)``: a sensor stuck on one value (by default its fault code);
  the demand model can no longer change it.
- ``flap(i)``: a sensor flapping between two states on every ``tick()``.
- ``set_garbage(i, value)``: a point reporting a value outside the register map.
- ``silent``: the controller stops answering (requests time out on the edge).
- ``power_off()`` / ``power_on()``: the controller switched off (answers nothing, like ``silent``) and on
  again (a reboot: its uptime restarts). Apart from ``silent``, so a power cycle never clears a fault.
- ``wiring_fault``: the controller's own wiring fault flag (IR 6 bit 0).
- ``noise``: probability that a response frame is corrupted on the wire.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from contracts.fieldbus import (
    BAY_FAULT,
    BAY_FREE,
    BAY_OCCUPIED,
    DEVICE_TYPE_BAY,
    DEVICE_TYPE_LOCKER,
    FAULT_WIRING,
    HEADER_ADDRESS,
    HEADER_COUNT,
    LOCKER_FAULT,
    LOCKER_OCCUPIED,
    MAX_POINTS,
    MAX_REGISTERS_PER_READ,
    MAX_UNIT,
    MIN_UNIT,
    REGISTER_MAP_VERSION,
    REGISTER_MAX,
    TABLE_ADDRESS,
    Header,
)

log = logging.getLogger(__name__)


class Controller:
    """One controller on a bus: header registers plus one register per point."""

    device_type: int = 0
    fault_code: int = 0
    #: The two values a flapping sensor alternates between.
    flap_values: tuple[int, int] = (0, 1)

    def __init__(self, name: str, points: int, *, unit: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= points <= MAX_POINTS:
            raise ValueError(f"{name}: point count {points} outside 1..{MAX_POINTS}")
        if not MIN_UNIT <= unit <= MAX_UNIT:
            raise ValueError(f"{name}: unit id {unit} outside {MIN_UNIT}..{MAX_UNIT}")
        self.name = name
        self.unit = unit
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._points = [0] * points
        self._changes = 0
        self._fault_flags = 0
        self._pinned: set[int] = set()
        self._flapping: set[int] = set()
        self.silent = False
        #: False while switched off (:meth:`power_off`): the bus sends none of its answers.
        self.powered = True
        self.noise = 0.0
        self.reads = 0

    # -- state ---------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self._points)

    @property
    def change_counter(self) -> int:
        with self._lock:
            return self._changes

    @property
    def wiring_fault(self) -> bool:
        return bool(self._fault_flags & FAULT_WIRING)

    @wiring_fault.setter
    def wiring_fault(self, on: bool) -> None:
        with self._lock:
            self._fault_flags = (self._fault_flags | FAULT_WIRING) if on else (self._fault_flags & ~FAULT_WIRING)

    def uptime_s(self) -> int:
        return max(0, int(self._clock() - self._started)) & 0xFFFFFFFF

    def restart(self) -> None:
        """A power cycle: uptime starts from zero (points and counter keep their values)."""
        with self._lock:
            self._started = self._clock()

    def power_off(self) -> None:
        """Switch the controller off: it answers nothing until :meth:`power_on` (its points keep their values)."""
        self.powered = False

    def power_on(self) -> None:
        """Switch it on again: it answers again, its uptime restarting from zero (a reboot)."""
        self.restart()
        self.powered = True

    @property
    def answers(self) -> bool:
        """Whether it answers requests now: switched on and not ``silent``."""
        return self.powered and not self.silent

    def get(self, index: int) -> int:
        with self._lock:
            return self._points[index]

    def points(self) -> list[int]:
        with self._lock:
            return list(self._points)

    def _set_locked(self, index: int, code: int) -> bool:
        if self._points[index] == code:
            return False
        self._points[index] = code
        self._changes = (self._changes + 1) & REGISTER_MAX
        return True

    def set(self, index: int, code: int, *, force: bool = False) -> bool:
        """Set point ``index`` to ``code``; True if it changed.

        A pinned point (stuck sensor, flapping sensor, test override) ignores
        writes unless ``force``. Codes are not validated: garbage is allowed.
        """
        if not 0 <= code <= REGISTER_MAX:
            raise ValueError(f"{self.name}: register value {code} is not 16-bit")
        with self._lock:
            if not force and index in self._pinned:
                return False
            return self._set_locked(index, code)

    def is_pinned(self, index: int) -> bool:
        with self._lock:
            return index in self._pinned

    def pinned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._pinned)

    def pin(self, index: int, code: int) -> None:
        """Force ``code`` and keep it there: the demand model no longer changes this point."""
        with self._lock:
            self._points[index]  # IndexError for a bad index before changing anything
            self._flapping.discard(index)
            self._pinned.add(index)
            self._set_locked(index, code)

    def release(self, index: int) -> None:
        """Undo ``pin``/``stick``/``flap``/``set_garbage``: the demand model owns the point again."""
        with self._lock:
            self._pinned.discard(index)
            self._flapping.discard(index)

    # -- fault injection ------------------------------------------------------
    def stick(self, index: int, code: int | None = None) -> None:
        """A sensor stuck on ``code`` (default: the fault code)."""
        self.pin(index, self.fault_code if code is None else code)
        log.info("%s: point %d stuck at %d", self.name, index, self.get(index))

    def set_garbage(self, index: int, value: int = REGISTER_MAX) -> None:
        """A point reporting a value outside the register map."""
        self.pin(index, value)
        log.info("%s: point %d reports garbage %#x", self.name, index, value)

    def flap(self, index: int) -> None:
        """A sensor alternating between two states on every ``tick()``."""
        with self._lock:
            self._points[index]
            self._pinned.add(index)
            self._flapping.add(index)
        log.info("%s: point %d flapping", self.name, index)

    def tick(self) -> None:
        """Advance flapping sensors by one step."""
        with self._lock:
            a, b = self.flap_values
            for index in self._flapping:
                self._set_locked(index, b if self._points[index] == a else a)

    # -- Modbus view -----------------------------------------------------------
    def header(self) -> list[int]:
        with self._lock:
            return self._header_locked()

    def _header_locked(self) -> list[int]:
        header = Header(
            REGISTER_MAP_VERSION, self.device_type, len(self._points), self._changes, self.uptime_s(), self._fault_flags
        )
        return header.registers()

    def read_input_registers(self, address: int, count: int) -> list[int] | None:
        """Values of ``count`` input registers from ``address``; None if any is not mapped."""
        if count < 1 or count > MAX_REGISTERS_PER_READ:
            return None
        with self._lock:
            self.reads += 1
            if address >= TABLE_ADDRESS:
                start = address - TABLE_ADDRESS
                if start + count > len(self._points):
                    return None
                return self._points[start : start + count]
            if address + count <= HEADER_COUNT:
                return self._header_locked()[address : address + count]
            return None

    def register_span(self) -> tuple[int, int]:
        """(first, last) input register address served by this controller."""
        return HEADER_ADDRESS, TABLE_ADDRESS + len(self._points) - 1


class BayController(Controller):
    """Parking guidance bay controller: 0 free, 1 occupied, 2 sensor fault, 3 closed."""

    device_type = DEVICE_TYPE_BAY
    fault_code = BAY_FAULT
    flap_values = (BAY_FREE, BAY_OCCUPIED)

    def occupied(self) -> int:
        with self._lock:
            return sum(1 for c in self._points if c == BAY_OCCUPIED)


class LockerController(Controller):
    """Locker controller: bit0 occupied, bit1 door open, bit2 fault, bit3 out of service."""

    device_type = DEVICE_TYPE_LOCKER
    fault_code = LOCKER_FAULT
    flap_values = (0, LOCKER_OCCUPIED)

    def occupied(self) -> int:
        with self._lock:
            return sum(1 for c in self._points if c & LOCKER_OCCUPIED)


def corrupt(frame: bytes, rng: random.Random) -> bytes:
    """Flip one bit of one byte: what electrical noise does to an RS-485 frame (the CRC then fails)."""
    if not frame:
        return frame
    i = rng.randrange(len(frame))
    return frame[:i] + bytes([frame[i] ^ (1 << rng.randrange(8))]) + frame[i + 1 :]
