"""The field-bus register map v1: the one definition the edge driver and the simulator share.

Parking-guidance bay controllers and locker controllers are Modbus RTU slaves
on an RS-485 bus (docs/fieldbus.md). The edge agent (``edge/sensors/``) reads
them; the simulator (``firmware_sim/``) serves the same map. Both import the
addresses, device types, point codes and decoding from here, so a change to
the map on one side that the other does not follow fails the simulator tests
instead of publishing wrong states.

Per controller unit, input registers (function code 04), 16-bit unsigned each:

    IR 0      register-map version (:data:`REGISTER_MAP_VERSION`)
    IR 1      device type (:data:`DEVICE_TYPE_BAY`, :data:`DEVICE_TYPE_LOCKER`)
    IR 2      number of points N
    IR 3      change counter, +1 on every point change, wraps at 65536
    IR 4..5   controller uptime in seconds, 32-bit unsigned, high word first
    IR 6      fault flags (:data:`FAULT_WIRING`)
    IR 7..99  not mapped (Modbus exception 02)
    IR 100..  one register per point, in order (:data:`TABLE_ADDRESS`)

A count display (an LED sign showing a number or a short text, driven by the
display bridge, ``edge/displays/``) is the other way round: the bridge writes
its holding registers (FC 16, FC 06) and may read them back (FC 03). Its map is
the last section of this module ("count display", :class:`DisplayFrame`).

Pure Python: no Modbus or serial library is imported here (the contracts
import no third-party client library).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from contracts.messages import DoorState, LockerStatus, ParkingSpotStatus

# -- addresses and limits ---------------------------------------------------------------------------

REGISTER_MAP_VERSION: Final = 1
#: Function code 04, read input registers: the only one the controllers serve (others: exception 01).
FC_READ_INPUT_REGISTERS: Final = 0x04
HEADER_ADDRESS: Final = 0
#: Registers in the header (IR 0..6), read in one request.
HEADER_COUNT: Final = 7
#: Address of point 0; point ``i`` is IR ``TABLE_ADDRESS + i``.
TABLE_ADDRESS: Final = 100
#: Modbus allows at most 125 registers per read request (Modbus Application Protocol V1.1b3 §6.4).
MAX_REGISTERS_PER_READ: Final = 125
#: A controller holds at most this many points (the table must end at IR 65534).
MAX_POINTS: Final = 65_535 - TABLE_ADDRESS
#: Modbus unit (slave) ids a controller may have.
MIN_UNIT: Final = 1
MAX_UNIT: Final = 247
#: A register holds 16 bits; the change counter wraps here.
REGISTER_MAX: Final = 0xFFFF

# -- device types (IR 1) ------------------------------------------------------------------------------

DEVICE_TYPE_BAY: Final = 1
DEVICE_TYPE_LOCKER: Final = 2

# -- fault flags (IR 6) -------------------------------------------------------------------------------

#: Bus/sensor wiring fault detected by the controller itself.
FAULT_WIRING: Final = 0x0001


@dataclass(frozen=True, slots=True)
class Header:
    """The header registers IR 0..6 of one controller, decoded.

    ``uptime_s`` is seconds (0..2**32-1, IR 4 high word, IR 5 low word); ``counter`` wraps at 65536.
    """

    version: int
    device_type: int
    points: int
    counter: int
    uptime_s: int
    faults: int

    @classmethod
    def parse(cls, regs: Sequence[int]) -> Header:
        """The header from the :data:`HEADER_COUNT` register values read at :data:`HEADER_ADDRESS`.

        Raises IndexError when fewer than 7 values are given.
        """
        return cls(regs[0], regs[1], regs[2], regs[3], (regs[4] << 16) | regs[5], regs[6])

    def registers(self) -> list[int]:
        """The 7 register values (0..65535) for this header; ``uptime_s`` is taken modulo 2**32."""
        up = self.uptime_s & 0xFFFFFFFF
        return [self.version, self.device_type, self.points, self.counter, up >> 16, up & 0xFFFF, self.faults]


# -- bay controller point codes (device type 1) ------------------------------------------------------

BAY_FREE: Final = 0
BAY_OCCUPIED: Final = 1
BAY_FAULT: Final = 2
BAY_CLOSED: Final = 3

#: Contract status for each valid bay code; any other value is garbage.
BAY_CODES: Final[dict[int, ParkingSpotStatus]] = {
    BAY_FREE: "free",
    BAY_OCCUPIED: "occupied",
    BAY_FAULT: "unknown",
    BAY_CLOSED: "closed",
}


def decode_bay(code: int) -> tuple[ParkingSpotStatus, bool]:
    """``(status, garbage)`` for one bay register value (0..65535).

    A sensor fault is ``unknown`` (not garbage); a value outside :data:`BAY_CODES` is ``unknown`` and garbage.
    """
    status = BAY_CODES.get(code)
    if status is None:
        return "unknown", True
    return status, False


def encode_bay(occupied: bool) -> int:
    """The code a working bay sensor reports: :data:`BAY_OCCUPIED` or :data:`BAY_FREE`."""
    return BAY_OCCUPIED if occupied else BAY_FREE


# -- locker controller point bits (device type 2) ----------------------------------------------------

LOCKER_OCCUPIED: Final = 0x1
LOCKER_DOOR_OPEN: Final = 0x2
LOCKER_FAULT: Final = 0x4
LOCKER_OUT_OF_SERVICE: Final = 0x8
#: Bits 4..15 must be 0; a value with any of them set is garbage.
LOCKER_VALID_BITS: Final = LOCKER_OCCUPIED | LOCKER_DOOR_OPEN | LOCKER_FAULT | LOCKER_OUT_OF_SERVICE

#: A compartment's decoded state: (status, door).
LockerState = tuple[LockerStatus, DoorState]
LOCKER_UNKNOWN: Final[LockerState] = ("unknown", "unknown")


def decode_locker(code: int) -> tuple[LockerState, bool]:
    """``((status, door), garbage)`` for one compartment register value (0..65535).

    Fault (bit 2) -> ``("unknown", "unknown")``; out of service (bit 3) -> ``out_of_service`` with the
    door bit; otherwise ``occupied``/``free`` by bit 0. Any of bits 4..15 set -> unknown and garbage.
    """
    if code & ~LOCKER_VALID_BITS:
        return LOCKER_UNKNOWN, True
    if code & LOCKER_FAULT:
        return LOCKER_UNKNOWN, False
    door: DoorState = "open" if code & LOCKER_DOOR_OPEN else "closed"
    if code & LOCKER_OUT_OF_SERVICE:
        return ("out_of_service", door), False
    return ("occupied" if code & LOCKER_OCCUPIED else "free", door), False


def encode_locker(occupied: bool, door_open: bool) -> int:
    """The code a working compartment reports for a parcel inside or not, and its door."""
    return (LOCKER_OCCUPIED if occupied else 0) | (LOCKER_DOOR_OPEN if door_open else 0)


# -- count display (device type 3): holding registers, written by the display bridge ------------------
#
# An LED count display on RS-485 (the CARPARK-style signs at a garage entrance or on a street) is a
# Modbus RTU slave the display bridge writes to. Per display unit, holding registers, 16-bit each:
#
#     HR 0       value: the number, 0..65534; DISPLAY_BLANK (0xFFFF) = no number
#     HR 1       mode code (DISPLAY_MODES)
#     HR 2       flags (DISPLAY_FLAG_*): stale, trusted, link lost, and one state bit (DISPLAY_STATE_FLAGS)
#     HR 3       data age in seconds, 0..65534 (more saturates); DISPLAY_AGE_UNKNOWN (0xFFFF) = unknown
#     HR 4       trust in thousandths, 0..1000
#     HR 5       heartbeat: the writer changes it on every write cycle (+1, wrapping at 65536)
#     HR 6..13   text, 16 ASCII characters, two per register, high byte first, NUL-padded
#     HR 14..15  not mapped (exception 02)
#     HR 16      register-map version (read-only), REGISTER_MAP_VERSION
#     HR 17      device type (read-only), DEVICE_TYPE_COUNT_DISPLAY
#     HR 18      status (read-only): DISPLAY_STATUS_COMMS_LOST while blanked by the comms-loss watchdog
#
# The writer sends HR 0..13 in one FC 16 request every cycle (DISPLAY_WRITE_ADDRESS, DISPLAY_WRITE_COUNT),
# so a display applies a whole state at once and never shows half of one. A write with a value the map
# does not allow (an unknown mode, two state bits, a non-ASCII character, ...) is refused with exception
# 03 and changes nothing. A display that has not seen HR 5 change for its comms-loss timeout blanks
# itself (and sets DISPLAY_STATUS_COMMS_LOST) until the next write that changes it: a controller that
# died never leaves a number up.
#
# What the display shows (DisplayFrame.face): the text when there is one, else the number, else nothing.

DEVICE_TYPE_COUNT_DISPLAY: Final = 3
FC_READ_HOLDING_REGISTERS: Final = 0x03
FC_WRITE_SINGLE_REGISTER: Final = 0x06
FC_WRITE_MULTIPLE_REGISTERS: Final = 0x10

DISPLAY_VALUE: Final = 0
DISPLAY_MODE: Final = 1
DISPLAY_FLAGS: Final = 2
DISPLAY_AGE: Final = 3
DISPLAY_TRUST: Final = 4
DISPLAY_HEARTBEAT: Final = 5
DISPLAY_TEXT: Final = 6
DISPLAY_TEXT_REGISTERS: Final = 8
DISPLAY_TEXT_CHARS: Final = 2 * DISPLAY_TEXT_REGISTERS
#: The block a writer sends each cycle: HR 0..13.
DISPLAY_WRITE_ADDRESS: Final = DISPLAY_VALUE
DISPLAY_WRITE_COUNT: Final = DISPLAY_TEXT + DISPLAY_TEXT_REGISTERS
#: The read-only identification and status registers, HR 16..18.
DISPLAY_INFO_ADDRESS: Final = 16
DISPLAY_INFO_COUNT: Final = 3
DISPLAY_STATUS: Final = DISPLAY_INFO_ADDRESS + 2
#: HR 18 bit 0: the display blanked itself because HR 5 stopped changing.
DISPLAY_STATUS_COMMS_LOST: Final = 0x0001

#: HR 0 value meaning "no number" (the display shows its text, or nothing).
DISPLAY_BLANK: Final = 0xFFFF
DISPLAY_VALUE_MAX: Final = 0xFFFE
#: HR 3 value for an unknown data age; known ages saturate at DISPLAY_AGE_MAX.
DISPLAY_AGE_UNKNOWN: Final = 0xFFFF
DISPLAY_AGE_MAX: Final = 0xFFFE
#: HR 4 holds trust (0.0..1.0) in thousandths.
DISPLAY_TRUST_SCALE: Final = 1000

#: Operator modes of a sign, as the guidance API names them.
DisplayMode = Literal["auto", "blank", "full", "closed", "text", "test"]
#: What a sign is showing, as the guidance API names it.
DisplayState = Literal["open", "low", "full", "closed", "fallback", "blank", "text", "test"]

#: HR 1: mode code for each mode.
DISPLAY_MODES: Final[dict[DisplayMode, int]] = {m: i for i, m in enumerate(get_args(DisplayMode))}

DISPLAY_FLAG_STALE: Final = 0x0001
DISPLAY_FLAG_TRUSTED: Final = 0x0002
#: Set by the bridge when it shows its own fallback because it lost the guidance API.
DISPLAY_FLAG_LINK_LOST: Final = 0x0004
DISPLAY_FLAG_LOW: Final = 0x0010
DISPLAY_FLAG_FULL: Final = 0x0020
DISPLAY_FLAG_CLOSED: Final = 0x0040
DISPLAY_FLAG_FALLBACK: Final = 0x0080
DISPLAY_FLAG_BLANK: Final = 0x0100
DISPLAY_FLAG_TEXT: Final = 0x0200
DISPLAY_FLAG_TEST: Final = 0x0400
#: HR 2: the one state bit for each state (``open`` has none); at most one of them may be set.
DISPLAY_STATE_FLAGS: Final[dict[DisplayState, int]] = {
    "open": 0,
    "low": DISPLAY_FLAG_LOW,
    "full": DISPLAY_FLAG_FULL,
    "closed": DISPLAY_FLAG_CLOSED,
    "fallback": DISPLAY_FLAG_FALLBACK,
    "blank": DISPLAY_FLAG_BLANK,
    "text": DISPLAY_FLAG_TEXT,
    "test": DISPLAY_FLAG_TEST,
}
_STATE_MASK: Final = sum(DISPLAY_STATE_FLAGS.values())
#: Bits of HR 2 the map defines; a value with any other bit set is refused.
DISPLAY_VALID_FLAGS: Final = DISPLAY_FLAG_STALE | DISPLAY_FLAG_TRUSTED | DISPLAY_FLAG_LINK_LOST | _STATE_MASK

#: Letters a display cannot show, spelled the way German signs do.
_TRANSLITERATE: Final = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})


class DisplayMapError(ValueError):
    """Register values the count-display map does not allow (a display refuses the write: exception 03)."""


def fit_text(text: str) -> str:
    """``text`` as a display can show it: printable ASCII, at most :data:`DISPLAY_TEXT_CHARS` characters.

    German umlauts and ß are spelled out (``Straße`` -> ``Strasse``), other accents dropped (``é`` -> ``e``),
    any other character becomes ``?``, and the result is cut to 16 characters. Idempotent.
    """
    out = []
    for ch in unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE)):
        if unicodedata.combining(ch):
            continue
        out.append(ch if " " <= ch <= "~" else "?")
    return "".join(out)[:DISPLAY_TEXT_CHARS]


def encode_text(text: str) -> list[int]:
    """The :data:`DISPLAY_TEXT_REGISTERS` register values for ``text`` (two ASCII bytes each, high byte
    first, NUL-padded). Raises :class:`DisplayMapError` for more than 16 characters or one outside
    printable ASCII (use :func:`fit_text` first)."""
    if len(text) > DISPLAY_TEXT_CHARS:
        raise DisplayMapError(f"text {text!r} is longer than {DISPLAY_TEXT_CHARS} characters")
    if any(not " " <= ch <= "~" for ch in text):
        raise DisplayMapError(f"text {text!r} is not printable ASCII")
    raw = text.encode("ascii").ljust(DISPLAY_TEXT_CHARS, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, DISPLAY_TEXT_CHARS, 2)]


def decode_text(regs: Sequence[int]) -> str:
    """The text held in the 8 text registers: up to the first NUL. Raises :class:`DisplayMapError` for a
    byte outside printable ASCII before it, or for a wrong register count."""
    if len(regs) != DISPLAY_TEXT_REGISTERS:
        raise DisplayMapError(f"{len(regs)} text registers, expected {DISPLAY_TEXT_REGISTERS}")
    raw = b"".join(bytes([(r >> 8) & 0xFF, r & 0xFF]) for r in regs).split(b"\0", 1)[0]
    if any(not 0x20 <= b <= 0x7E for b in raw):
        raise DisplayMapError(f"text bytes {raw!r} are not printable ASCII")
    return raw.decode("ascii")


@dataclass(frozen=True, slots=True)
class DisplayFrame:
    """One state of a count display: what the writer sends as HR 0..13, decoded.

    ``value`` is None for no number; ``text`` is at most 16 printable ASCII characters; ``age_s`` is the
    data age in seconds (None: unknown; above 65534 saturates); ``trust`` is 0.0..1.0 (stored in
    thousandths); ``heartbeat`` is 0..65535. ``link_lost`` marks the bridge's own fallback.
    """

    value: int | None
    text: str
    mode: DisplayMode
    state: DisplayState
    stale: bool = False
    trusted: bool = True
    link_lost: bool = False
    age_s: int | None = None
    trust: float = 1.0
    heartbeat: int = 0

    @property
    def face(self) -> str:
        """What the sign shows: the text when there is one, else the number, else ``""`` (blank)."""
        if self.text:
            return self.text
        return "" if self.value is None else str(self.value)

    @property
    def flags(self) -> int:
        """The HR 2 bit field for this frame."""
        return (
            (DISPLAY_FLAG_STALE if self.stale else 0)
            | (DISPLAY_FLAG_TRUSTED if self.trusted else 0)
            | (DISPLAY_FLAG_LINK_LOST if self.link_lost else 0)
            | DISPLAY_STATE_FLAGS[self.state]
        )

    def registers(self) -> list[int]:
        """The :data:`DISPLAY_WRITE_COUNT` values for HR 0..13. Raises :class:`DisplayMapError` for a value
        outside 0..65534, a negative age, trust outside 0..1, a heartbeat outside 0..65535, or a text
        :func:`encode_text` refuses."""
        if self.value is not None and not 0 <= self.value <= DISPLAY_VALUE_MAX:
            raise DisplayMapError(f"value {self.value} outside 0..{DISPLAY_VALUE_MAX}")
        if self.age_s is not None and self.age_s < 0:
            raise DisplayMapError(f"negative data age {self.age_s}")
        if not 0.0 <= self.trust <= 1.0:
            raise DisplayMapError(f"trust {self.trust} outside 0..1")
        if not 0 <= self.heartbeat <= REGISTER_MAX:
            raise DisplayMapError(f"heartbeat {self.heartbeat} is not 16-bit")
        return [
            DISPLAY_BLANK if self.value is None else self.value,
            DISPLAY_MODES[self.mode],
            self.flags,
            DISPLAY_AGE_UNKNOWN if self.age_s is None else min(self.age_s, DISPLAY_AGE_MAX),
            round(self.trust * DISPLAY_TRUST_SCALE),
            self.heartbeat,
            *encode_text(self.text),
        ]

    @classmethod
    def parse(cls, regs: Sequence[int]) -> DisplayFrame:
        """The frame held in HR 0..13 (:data:`DISPLAY_WRITE_COUNT` values, 0..65535 each).

        Raises :class:`DisplayMapError` for a wrong count, an unknown mode code, an undefined flag bit or
        more than one state bit, trust above 1000, or text bytes outside printable ASCII.
        """
        if len(regs) != DISPLAY_WRITE_COUNT:
            raise DisplayMapError(f"{len(regs)} registers, expected {DISPLAY_WRITE_COUNT}")
        if any(not 0 <= r <= REGISTER_MAX for r in regs):
            raise DisplayMapError(f"register values {list(regs)} are not all 16-bit")
        modes = {code: mode for mode, code in DISPLAY_MODES.items()}
        mode = modes.get(regs[DISPLAY_MODE])
        if mode is None:
            raise DisplayMapError(f"unknown mode code {regs[DISPLAY_MODE]}")
        flags = regs[DISPLAY_FLAGS]
        if flags & ~DISPLAY_VALID_FLAGS:
            raise DisplayMapError(f"undefined flag bits {flags & ~DISPLAY_VALID_FLAGS:#06x}")
        states = [s for s, bit in DISPLAY_STATE_FLAGS.items() if bit and flags & bit]
        if len(states) > 1:
            raise DisplayMapError(f"more than one state bit set: {', '.join(states)}")
        trust = regs[DISPLAY_TRUST]
        if trust > DISPLAY_TRUST_SCALE:
            raise DisplayMapError(f"trust {trust} above {DISPLAY_TRUST_SCALE}")
        value, age = regs[DISPLAY_VALUE], regs[DISPLAY_AGE]
        return cls(
            value=None if value == DISPLAY_BLANK else value,
            text=decode_text(regs[DISPLAY_TEXT : DISPLAY_TEXT + DISPLAY_TEXT_REGISTERS]),
            mode=mode,
            state=states[0] if states else "open",
            stale=bool(flags & DISPLAY_FLAG_STALE),
            trusted=bool(flags & DISPLAY_FLAG_TRUSTED),
            link_lost=bool(flags & DISPLAY_FLAG_LINK_LOST),
            age_s=None if age == DISPLAY_AGE_UNKNOWN else age,
            trust=trust / DISPLAY_TRUST_SCALE,
            heartbeat=regs[DISPLAY_HEARTBEAT],
        )


#: What a display shows before anything was written, and while its comms-loss watchdog has it blanked.
DISPLAY_BLANK_FRAME: Final = DisplayFrame(value=None, text="", mode="blank", state="blank", trusted=False)
