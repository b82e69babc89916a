"""The site configuration: one file that describes a district.

Zones, parking lots (coordinates, capacity, bays), locker banks (compartments
and sizes), cameras (which zone each counting line leads into), displays (where
they stand, what they show) and the devices expected on site. The gateway uses
it to reject readings about things that do not exist; the server uses it to
answer in terms users know (lot names, capacities, coordinates).

Numbers must be finite: a YAML ``.inf``/``.nan`` anywhere is rejected by
``district check-config``, with file, line and column; the services start on it
but log a warning (:mod:`contracts.configfile`, "findings"). A lot's
``full_below`` must fit its bays (:meth:`SiteConfig.config_findings`).
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.configfile import Finding, StrictModel
from contracts.messages import MAX_WIRE_INT, Ident


class CoordsConfig(StrictModel):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lng: Annotated[float, Field(ge=-180, le=180)]


class SiteInfo(StrictModel):
    id: Ident
    name: str
    timezone: str = "UTC"


class Zone(StrictModel):
    id: Ident
    name: str
    #: People the zone holds comfortably; crowd levels are a share of this.
    capacity: Annotated[int, Field(gt=0, le=MAX_WIRE_INT)] | None = None
    coords: CoordsConfig | None = None


class BayRange(StrictModel):
    """``count`` bays named ``{prefix}{n:0{width}d}`` from ``start``."""

    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{0,32}$")] = ""
    count: Annotated[int, Field(gt=0, le=100_000)]
    start: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)] = 1
    width: Annotated[int, Field(ge=1, le=8)] = 3

    def ids(self) -> list[str]:
        return [f"{self.prefix}{n:0{self.width}d}" for n in range(self.start, self.start + self.count)]


class LotConfig(StrictModel):
    """An off-street lot or garage (FIWARE OffStreetParking, ParkAPI lot)."""

    id: Ident
    name: str
    coords: CoordsConfig
    address: str | None = None
    lot_type: Literal["garage", "underground", "surface", "street"] = "garage"
    zone: Ident | None = None
    bays: list[Ident] | BayRange
    #: Seconds: a bay not heard from for this long counts as unknown, never as
    #: free. Must be finite (check-config; a lot cannot be "never stale").
    stale_after_s: Annotated[float, Field(gt=0)] = 600.0
    #: A reserve, in bays: the lot shows ``full`` while fewer than this many
    #: bays are free, and always when none is (so 0 and 1 both mean "no
    #: reserve"). Must be less than the lot's bay count (1 is always allowed):
    #: a lot with every bay free never shows full (check-config).
    full_below: Annotated[int, Field(ge=0, le=100_000)] = 1
    closed: bool = False

    def bay_ids(self) -> list[str]:
        return list(self.bays) if isinstance(self.bays, list) else self.bays.ids()

    @property
    def total(self) -> int:
        return len(self.bay_ids())

    def reserve(self, total: int | None = None) -> int:
        """The effective ``full_below`` for a lot of ``total`` bays (default: its own).

        At least 1 (no free bay is always full), at most ``max(1, total - 1)``
        (every bay free is never full), so a ``full_below`` that check-config
        rejects still cannot make the shown state contradict the free count.
        """
        total = self.total if total is None else total
        return min(max(self.full_below, 1), max(total - 1, 1))


class CompartmentRange(StrictModel):
    size: Literal["S", "M", "L", "XL"]
    count: Annotated[int, Field(gt=0, le=10_000)]
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{0,32}$")] = ""
    start: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)] = 1
    width: Annotated[int, Field(ge=1, le=8)] = 2


class Compartment(StrictModel):
    id: Ident
    size: Literal["S", "M", "L", "XL"]


class LockerBank(StrictModel):
    id: Ident
    name: str
    coords: CoordsConfig
    zone: Ident | None = None
    compartments: list[Compartment | CompartmentRange]

    def compartment_list(self) -> list[Compartment]:
        out: list[Compartment] = []
        for item in self.compartments:
            if isinstance(item, Compartment):
                out.append(item)
            else:
                out.extend(
                    Compartment(id=f"{item.prefix}{n:0{item.width}d}", size=item.size)
                    for n in range(item.start, item.start + item.count)
                )
        return out


class CameraLine(StrictModel):
    id: Ident
    #: The zone a person enters when crossing this line in its "in" direction.
    zone: Ident


class Camera(StrictModel):
    id: Ident
    device: Ident
    name: str | None = None
    lines: Annotated[list[CameraLine], Field(min_length=1)]


class Display(StrictModel):
    id: Ident
    kind: Literal["parking", "wayfinding"]
    coords: CoordsConfig
    name: str | None = None
    lots: list[Ident] = Field(default_factory=list)
    zones: list[Ident] = Field(default_factory=list)


class Device(StrictModel):
    id: Ident
    kind: Literal["bay_controller", "locker_controller", "camera_node", "gateway"]
    description: str | None = None
    #: Status heartbeats are expected at least this often.
    heartbeat_s: Annotated[float, Field(gt=0)] = 60.0


class SiteConfig(StrictModel):
    site: SiteInfo
    zones: list[Zone] = Field(default_factory=list)
    parking: list[LotConfig] = Field(default_factory=list)
    lockers: list[LockerBank] = Field(default_factory=list)
    cameras: list[Camera] = Field(default_factory=list)
    displays: list[Display] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> SiteConfig:
        problems: list[str] = []
        for what, ids in (
            ("zone", [z.id for z in self.zones]),
            ("parking lot", [p.id for p in self.parking]),
            ("locker bank", [b.id for b in self.lockers]),
            ("camera", [c.id for c in self.cameras]),
            ("display", [d.id for d in self.displays]),
            ("device", [d.id for d in self.devices]),
        ):
            dups = [i for i, n in Counter(ids).items() if n > 1]
            if dups:
                problems.append(f"duplicate {what} id(s): {', '.join(sorted(dups))}")
        zones = {z.id for z in self.zones}
        lots = {p.id for p in self.parking}
        devices = {d.id for d in self.devices}
        for lot in self.parking:
            dups = [i for i, n in Counter(lot.bay_ids()).items() if n > 1]
            if dups:
                problems.append(f"parking lot {lot.id}: duplicate bay id(s): {', '.join(sorted(dups)[:10])}")
            if lot.zone and lot.zone not in zones:
                problems.append(f"parking lot {lot.id}: unknown zone {lot.zone!r}")
        for bank in self.lockers:
            ids = [c.id for c in bank.compartment_list()]
            dups = [i for i, n in Counter(ids).items() if n > 1]
            if dups:
                problems.append(f"locker bank {bank.id}: duplicate compartment id(s): {', '.join(sorted(dups)[:10])}")
            if bank.zone and bank.zone not in zones:
                problems.append(f"locker bank {bank.id}: unknown zone {bank.zone!r}")
        for cam in self.cameras:
            if devices and cam.device not in devices:
                problems.append(f"camera {cam.id}: unknown device {cam.device!r}")
            dups = [i for i, n in Counter(line.id for line in cam.lines).items() if n > 1]
            if dups:
                problems.append(f"camera {cam.id}: duplicate line id(s): {', '.join(sorted(dups))}")
            for line in cam.lines:
                if line.zone not in zones:
                    problems.append(f"camera {cam.id} line {line.id}: unknown zone {line.zone!r}")
        for disp in self.displays:
            for lot_id in disp.lots:
                if lot_id not in lots:
                    problems.append(f"display {disp.id}: unknown parking lot {lot_id!r}")
            for zone_id in disp.zones:
                if zone_id not in zones:
                    problems.append(f"display {disp.id}: unknown zone {zone_id!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def config_findings(self) -> list[Finding]:
        """What validates but cannot be meant; ``district check-config`` rejects these.

        A lot's ``full_below`` above ``max(1, bays - 1)``: with ``full_below``
        >= its bay count a lot would show full with every bay (or all but one)
        free. The server clamps it (:meth:`LotConfig.reserve`) meanwhile.
        """
        findings: list[Finding] = []
        for i, lot in enumerate(self.parking):
            total = len(self.bays_by_lot[lot.id])
            if lot.full_below > max(1, total - 1):
                findings.append(
                    (
                        ("parking", i, "full_below"),
                        f"parking lot {lot.id}: full_below {lot.full_below} must be less than the lot's {total} "
                        f"bay(s) (1 is always allowed): it is a reserve, the lot shows full while fewer than "
                        f"full_below bays are free, so {lot.full_below} would show it full with every bay free"
                        + ("" if lot.full_below > total else " but one"),
                    )
                )
        return findings

    # Indexes derived from the configuration, built once per (immutable) site.
    @cached_property
    def bays_by_lot(self) -> dict[str, frozenset[str]]:
        return {lot.id: frozenset(lot.bay_ids()) for lot in self.parking}

    @cached_property
    def compartments_by_bank(self) -> dict[str, frozenset[str]]:
        return {bank.id: frozenset(c.id for c in bank.compartment_list()) for bank in self.lockers}

    @cached_property
    def zone_ids(self) -> frozenset[str]:
        return frozenset(z.id for z in self.zones)

    def lot(self, lot_id: str) -> LotConfig | None:
        return next((p for p in self.parking if p.id == lot_id), None)
