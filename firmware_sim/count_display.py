"""A simulated LED count display: the holding registers of contracts.fieldbus "count display" and its face.

It behaves like the real sign a display bridge drives over RS-485 Modbus RTU:

- it shows what was last written (HR 0..13, applied whole: one FC 16 block is one state);
- a write the map does not allow (unknown mode, two state bits, non-ASCII text, a read-only or
  unmapped address) is refused with a Modbus exception and changes nothing;
- a comms-loss watchdog: if the heartbeat register (HR 5) has not changed for ``comms_timeout_s``, the
  sign blanks itself and sets the status bit (HR 18 bit 0) until a write changes the heartbeat again,
  so a dead controller never leaves a number up;
- before the first write it is blank.

Tests read what the sign shows with :meth:`CountDisplay.shown` and every change of its face with
:meth:`CountDisplay.history`; each change is also logged. Pure Python like :mod:`firmware_sim.controllers`:
the Modbus server around it is :class:`firmware_sim.bus.SerialBus`. Thread-safe (one lock): the bus
thread writes, tests and the fleet's tick read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contracts.fieldbus import (
    DEVICE_TYPE_COUNT_DISPLAY,
    DISPLAY_BLANK_FRAME,
    DISPLAY_HEARTBEAT,
    DISPLAY_INFO_ADDRESS,
    DISPLAY_STATUS_COMMS_LOST,
    DISPLAY_WRITE_ADDRESS,
    DISPLAY_WRITE_COUNT,
    MAX_UNIT,
    MIN_UNIT,
    REGISTER_MAP_VERSION,
    REGISTER_MAX,
    DisplayFrame,
    DisplayMapError,
)

log = logging.getLogger(__name__)

#: Modbus exception codes the display answers with (Modbus Application Protocol V1.1b3 §7).
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3

#: The default comms-loss timeout, seconds (the bridge re-writes every 2 s by default).
DEFAULT_COMMS_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Shown:
    """What the sign shows now.

    ``face`` is the lit text (``""`` = blank); ``frame`` is what was last written (kept while the
    watchdog has the sign blanked); ``comms_lost`` says the watchdog blanked it; ``writes`` counts the
    accepted writes so far.
    """

    face: str
    frame: DisplayFrame
    comms_lost: bool
    writes: int

    @property
    def blank(self) -> bool:
        return self.face == ""

    @property
    def value(self) -> int | None:
        """The number shown, None when the sign shows none (blank, text, or comms lost)."""
        if self.comms_lost or self.face != ("" if self.frame.value is None else str(self.frame.value)):
            return None
        return self.frame.value


class CountDisplay:
    """One count display (a Modbus unit): holding registers, watchdog, and what it shows."""

    def __init__(
        self,
        name: str,
        *,
        unit: int = 1,
        comms_timeout_s: float = DEFAULT_COMMS_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        history: int = 10_000,
    ) -> None:
        if not MIN_UNIT <= unit <= MAX_UNIT:
            raise ValueError(f"{name}: unit id {unit} outside {MIN_UNIT}..{MAX_UNIT}")
        if comms_timeout_s <= 0:
            raise ValueError(f"{name}: comms-loss timeout must be positive, not {comms_timeout_s}")
        self.name = name
        self.unit = unit
        self.comms_timeout_s = comms_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._regs = DISPLAY_BLANK_FRAME.registers()
        self._frame = DISPLAY_BLANK_FRAME
        self._last_beat: float | None = None
        self._comms_lost = False
        self._face = ""
        self._history: deque[tuple[float, str]] = deque([(clock(), "")], maxlen=history)
        #: Fault injection, as for :class:`firmware_sim.controllers.Controller`: no answer / corrupted answers.
        self.silent = False
        self.noise = 0.0
        self.writes = 0
        self.refused = 0
        self.reads = 0
        self.comms_losses = 0

    @property
    def answers(self) -> bool:
        """Whether it answers requests now (not ``silent``)."""
        return not self.silent

    # -- Modbus view -------------------------------------------------------------------------------
    def read_holding_registers(self, address: int, count: int) -> list[int] | None:
        """FC 03: ``count`` registers from ``address``; None (exception 02) if any is not mapped."""
        with self._lock:
            self._watchdog_locked()
            self.reads += 1
            mapped = {DISPLAY_WRITE_ADDRESS + i: v for i, v in enumerate(self._regs)}
            status = DISPLAY_STATUS_COMMS_LOST if self._comms_lost else 0
            info = [REGISTER_MAP_VERSION, DEVICE_TYPE_COUNT_DISPLAY, status]
            mapped.update({DISPLAY_INFO_ADDRESS + i: v for i, v in enumerate(info)})
            if count < 1 or any(a not in mapped for a in range(address, address + count)):
                return None
            return [mapped[a] for a in range(address, address + count)]

    def write_registers(self, address: int, values: Sequence[int]) -> int | None:
        """FC 06/16: write ``values`` from ``address``. None when accepted, else the exception code:
        :data:`ILLEGAL_ADDRESS` outside HR 0..13, :data:`ILLEGAL_VALUE` for values the map refuses."""
        end = address + len(values)
        if not values or address < DISPLAY_WRITE_ADDRESS or end > DISPLAY_WRITE_ADDRESS + DISPLAY_WRITE_COUNT:
            with self._lock:
                self.refused += 1
            return ILLEGAL_ADDRESS
        with self._lock:
            regs = list(self._regs)
            regs[address - DISPLAY_WRITE_ADDRESS : end - DISPLAY_WRITE_ADDRESS] = values
            try:
                if any(not 0 <= v <= REGISTER_MAX for v in values):
                    raise DisplayMapError(f"values {list(values)} are not all 16-bit")
                frame = DisplayFrame.parse(regs)
            except DisplayMapError as exc:
                self.refused += 1
                log.warning("display %s: write refused (exception 03): %s", self.name, exc)
                return ILLEGAL_VALUE
            now = self._clock()
            beat = regs[DISPLAY_HEARTBEAT] != self._regs[DISPLAY_HEARTBEAT] or self._last_beat is None
            self._watchdog_locked(now)
            self.writes += 1
            before = self._frame
            self._regs, self._frame = regs, frame
            if beat:
                self._last_beat = now
                if self._comms_lost:
                    self._comms_lost = False
                    log.info("display %s: heartbeat back, shows %r again", self.name, frame.face)
            if _summary(before) != _summary(frame):
                log.info(
                    "display %s: frame %r (mode %s, state %s%s%s%s)",
                    self.name,
                    frame.face,
                    frame.mode,
                    frame.state,
                    ", stale" if frame.stale else "",
                    ", trusted" if frame.trusted else "",
                    ", link lost" if frame.link_lost else "",
                )
            self._update_face_locked(now)
            return None

    # -- watchdog -------------------------------------------------------------------------------------
    def check(self) -> None:
        """Apply the comms-loss watchdog now (the fleet's tick calls this, so the blanking is logged on time)."""
        with self._lock:
            self._watchdog_locked()

    def _watchdog_locked(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        if self._comms_lost or self._last_beat is None or now - self._last_beat <= self.comms_timeout_s:
            return
        self._comms_lost = True
        self.comms_losses += 1
        log.warning(
            "display %s: no heartbeat for %.1f s (timeout %g s): blank",
            self.name,
            now - self._last_beat,
            self.comms_timeout_s,
        )
        self._update_face_locked(now)

    def _update_face_locked(self, now: float) -> None:
        face = "" if self._comms_lost else self._frame.face
        if face != self._face:
            self._face = face
            self._history.append((now, face))

    # -- what a test sees ---------------------------------------------------------------------------
    def shown(self) -> Shown:
        """What the sign shows now (the watchdog applied first)."""
        with self._lock:
            self._watchdog_locked()
            return Shown(self._face, self._frame, self._comms_lost, self.writes)

    def history(self) -> list[tuple[float, str]]:
        """Every face the sign has shown, oldest first, as ``(clock time, face)``; starts blank."""
        with self._lock:
            self._watchdog_locked()
            return list(self._history)


def _summary(frame: DisplayFrame) -> tuple[object, ...]:
    """What a log line reports about a frame (not the heartbeat or the age, which change every cycle)."""
    return frame.face, frame.mode, frame.state, frame.stale, frame.trusted, frame.link_lost
