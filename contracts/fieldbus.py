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

Pure Python: no Modbus or serial library is imported here (the contracts
import no third-party client library).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

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
