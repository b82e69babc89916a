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

import logging
from collections import Counter
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from contracts.configfile import Finding, StrictModel
from contracts.messages import MAX_WIRE_INT, Ident

if TYPE_CHECKING:
    from contracts.ownership import Ownership

log = logging.getLogger(__name__)


class CoordsConfig(StrictModel):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lng: Annotated[float, Field(ge=-180, le=180)]


class SiteInfo(StrictModel):
    id: Ident
    name: str
    timezone: str = "UTC"


class CrowdLevels(StrictModel):
    """Where a zone's crowd level changes, as a share of its ``capacity`` (occupancy / capacity).

    ``low`` below ``moderate``; ``moderate`` from it; ``high`` from ``high``;
    ``very_high`` from ``very_high``. Capacity is what the zone holds
    *comfortably*, so the defaults put ``very_high`` at 90 % of it and
    ``high`` at 70 %: the band where pedestrian level of service falls to
    Fruin's "restricted" walkways (Fruin, *Pedestrian Planning and Design*,
    1971; HCM 2010 Exhibit 23-1, LOS D-E). Our choice, stated so an operator can
    tune it. Strictly increasing, each in (0, 10].
    """

    moderate: Annotated[float, Field(gt=0, le=10)] = 0.4
    high: Annotated[float, Field(gt=0, le=10)] = 0.7
    very_high: Annotated[float, Field(gt=0, le=10)] = 0.9

    @model_validator(mode="after")
    def _increasing(self) -> CrowdLevels:
        if not self.moderate < self.high < self.very_high:
            raise ValueError(
                f"crowd levels must increase: moderate {self.moderate} < high {self.high} < very_high {self.very_high}"
            )
        return self


class LineRef(StrictModel):
    """One counting line of one camera (``cameras[].lines[]``), by the camera's and the line's ids."""

    camera: Ident
    line: Ident


class Zone(StrictModel):
    id: Ident
    name: str
    #: People the zone holds comfortably; crowd levels are a share of this.
    capacity: Annotated[int, Field(gt=0, le=MAX_WIRE_INT)] | None = None
    coords: CoordsConfig | None = None
    crowd_levels: CrowdLevels = Field(default_factory=CrowdLevels)
    #: Seconds: a zone whose cameras sent no footfall interval for this long
    #: has no data (``nodata``), never 0 people. Cameras report every minute
    #: by default (``edge`` camera ``interval_s``), so 5 minutes is 5 missed intervals.
    stale_after_s: Annotated[float, Field(gt=0)] = 300.0
    #: The counting line on the street in front of the zone (a shop front, a mall entrance): everyone
    #: crossing it either way is a passer-by, the denominator of the zone's capture rate (docs/analytics.md).
    #: It must lead into another zone (the street's), not into this one.
    street_line: LineRef | None = None


class BayRange(StrictModel):
    """``count`` bays named ``{prefix}{n:0{width}d}`` from ``start``."""

    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{0,32}$")] = ""
    count: Annotated[int, Field(gt=0, le=100_000)]
    start: Annotated[int, Field(ge=0, le=MAX_WIRE_INT)] = 1
    width: Annotated[int, Field(ge=1, le=8)] = 3

    def ids(self) -> list[str]:
        return [f"{self.prefix}{n:0{self.width}d}" for n in range(self.start, self.start + self.count)]


class Entrance(StrictModel):
    """A pedestrian way in or out of a lot: guidance measures walking distance from here."""

    name: str | None = None
    coords: CoordsConfig


class LotLevel(StrictModel):
    """A level (or any named part) of a lot: a subset of its bays, for level signs (cascade)."""

    id: Ident
    name: str | None = None
    bays: list[Ident] | BayRange

    def bay_ids(self) -> list[str]:
        return list(self.bays) if isinstance(self.bays, list) else self.bays.ids()


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
    #: Pedestrian entrances; guidance walks from the nearest. Empty: the lot's ``coords``.
    entrances: list[Entrance] = Field(default_factory=list)
    #: Named parts of the lot (levels, decks) that signs may show on their own.
    levels: list[LotLevel] = Field(default_factory=list)

    def bay_ids(self) -> list[str]:
        return list(self.bays) if isinstance(self.bays, list) else self.bays.ids()

    def entrance_coords(self) -> list[CoordsConfig]:
        """Where people walk out of the lot: its entrances, or its ``coords`` if none is configured."""
        return [e.coords for e in self.entrances] or [self.coords]

    def level(self, level_id: str) -> LotLevel | None:
        return next((lv for lv in self.levels if lv.id == level_id), None)

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


CompartmentSize = Literal["S", "M", "L", "XL"]
#: Compartment sizes, smallest first: a parcel that fits one fits every later one.
COMPARTMENT_SIZES: tuple[CompartmentSize, ...] = ("S", "M", "L", "XL")


class LockerBank(StrictModel):
    """A pickup-locker station: compartments of sizes S/M/L/XL behind one controller."""

    id: Ident
    name: str
    coords: CoordsConfig
    zone: Ident | None = None
    compartments: list[Compartment | CompartmentRange]
    #: Seconds: a compartment not heard from for this long is ``unknown``, never free.
    stale_after_s: Annotated[float, Field(gt=0)] = 600.0

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
    #: The zone a person leaves when crossing in the "in" direction, when the line is the boundary between
    #: two counted zones: ``towards`` is then the flow ``from_zone`` -> ``zone``, ``away`` the flow back
    #: (zone-to-zone flow, docs/analytics.md). None: the line's other side is not a zone of the site.
    from_zone: Ident | None = None


class Camera(StrictModel):
    id: Ident
    device: Ident
    name: str | None = None
    lines: Annotated[list[CameraLine], Field(min_length=1)]


#: What a sign shows when its data is stale or untrusted: nothing (``blank``) or ``fallback_text``.
DisplayFallback = Literal["blank", "text"]
#: Longest text a count display can show (the bridge's register map carries 16 ASCII characters).
MAX_SIGN_TEXT = 16
SignText = Annotated[str, Field(max_length=MAX_SIGN_TEXT, pattern=r"^[\x20-\x7e]*$")]

#: Default ``stale_after_s`` by display kind: seconds of sensor silence after
#: which a sign shows its fallback. A sign inside a garage steers drivers to a
#: level they reach within a minute, so it goes blank sooner than a street sign
#: (research/display-feeds.md §0.5: 120 s in-facility, 300 s street).
DISPLAY_STALE_AFTER_S: dict[str, float] = {"garage": 120.0, "parking": 300.0, "wayfinding": 300.0}


class LevelRef(StrictModel):
    lot: Ident
    level: Ident


class Display(StrictModel):
    """A sign: where it stands, what it sums (cascade), and how it renders the sum.

    ``kind``: ``garage`` (a count sign inside a facility), ``parking`` (a
    street parking sign), ``wayfinding`` (a totem; may show crowd levels).
    Sources: ``lots``, lot ``levels`` and ``zones``; a sign sums either free
    spaces (lots and levels) or people (zones), never both.

    Rendering, in order (research/display-feeds.md §0.3-0.5, after Park Assist
    and IRIS): sum the sources' free spaces; add ``offset`` (negative keeps a
    buffer); clamp to [``min_value``, ``max_value``]; show ``full_text`` at or
    below ``full_threshold``, ``low_text`` at or below ``low_threshold``, else
    the number. ``closed`` (or every source lot closed) shows ``closed_text``.
    The sign trusts its sources only while at least ``trust_share`` of their
    bays report fresh readings (IRIS ``shouldTrust``: 75 %); stale (no fresh
    observation within ``stale_after_s``) or untrusted, it shows its
    ``fallback``, never a number.
    """

    id: Ident
    kind: Literal["parking", "garage", "wayfinding"]
    coords: CoordsConfig
    name: str | None = None
    lots: list[Ident] = Field(default_factory=list)
    levels: list[LevelRef] = Field(default_factory=list)
    zones: list[Ident] = Field(default_factory=list)
    offset: Annotated[int, Field(ge=-100_000, le=100_000)] = 0
    min_value: Annotated[int, Field(ge=0, le=65_000)] = 0
    max_value: Annotated[int, Field(ge=0, le=65_000)] = 9999
    #: Free spaces at or below which the sign shows ``low_text`` (None: never).
    low_threshold: Annotated[int, Field(ge=0, le=65_000)] | None = None
    low_text: SignText = "LOW"
    #: Free spaces at or below which the sign shows ``full_text``.
    full_threshold: Annotated[int, Field(ge=0, le=65_000)] = 0
    full_text: SignText = "FULL"
    closed_text: SignText = "CLOSED"
    closed: bool = False
    fallback: DisplayFallback = "blank"
    fallback_text: SignText = ""
    #: Seconds; default by ``kind`` (:data:`DISPLAY_STALE_AFTER_S`).
    stale_after_s: Annotated[float, Field(gt=0, le=86_400)] | None = None
    #: Share of the sources' bays that must report for the sign to show a number.
    trust_share: Annotated[float, Field(gt=0, le=1)] = 0.75

    @property
    def stale_limit_s(self) -> float:
        """``stale_after_s``, or the default of the display's kind."""
        return self.stale_after_s if self.stale_after_s is not None else DISPLAY_STALE_AFTER_S[self.kind]

    @property
    def shows(self) -> Literal["spaces", "people"]:
        """What the sign's number counts: free spaces (lots, levels) or people (zones)."""
        return "people" if self.zones and not (self.lots or self.levels) else "spaces"


class Device(StrictModel):
    """A device expected on site, and what it reports on (its ownership, :mod:`contracts.ownership`).

    ``lots``, ``levels`` and ``lockers`` name the parking lots (every bay),
    lot levels (their bays) and locker banks (every compartment) whose readings
    this device, and only a device that lists them, may send; a camera's
    ``device`` does the same for footfall. ``district provision`` issues each
    device its broker identity (``docs/security.md``).
    """

    id: Ident
    kind: Literal["bay_controller", "locker_controller", "camera_node", "gateway"]
    description: str | None = None
    lots: list[Ident] = Field(default_factory=list)
    levels: list[LevelRef] = Field(default_factory=list)
    lockers: list[Ident] = Field(default_factory=list)
    #: Status heartbeats are expected at least this often.
    heartbeat_s: Annotated[float, Field(gt=0)] = 60.0
    #: A device not heard from for this many heartbeats is ``silent``, not ``online``
    #: (a lost heartbeat or two is normal on a busy cell link; three in a row is not).
    silent_after_heartbeats: Annotated[float, Field(ge=1, le=1000)] = 3.0

    @property
    def silent_after_s(self) -> float:
        return self.heartbeat_s * self.silent_after_heartbeats


#: For a device the site does not list: the defaults of :class:`Device`.
DEFAULT_HEARTBEAT_S = 60.0
DEFAULT_SILENT_AFTER_HEARTBEATS = 3.0


class HistoryConfig(StrictModel):
    """How long InfluxDB keeps history (``docs/history.md``); the gateway sets it up at start.

    ``raw_days``: raw readings and the gateway's lot/locker snapshots;
    ``rollup_days``: the 5-minute and hourly rollups (``rollup_5m_days``
    overrides it for the 5-minute ones). Gateway settings ``history_*_days`` override these.
    """

    raw_days: Annotated[int, Field(ge=1, le=36_500)] = 30
    rollup_days: Annotated[int, Field(ge=1, le=36_500)] = 730
    rollup_5m_days: Annotated[int, Field(ge=1, le=36_500)] | None = None


class AnalyticsArea(StrictModel):
    """Parking lots and the zones their drivers walk to: the unit of the parking-to-footfall relation."""

    id: Ident
    name: str | None = None
    lots: Annotated[list[Ident], Field(min_length=1)]
    zones: Annotated[list[Ident], Field(min_length=1)]


#: The default of :attr:`AnalyticsConfig.k`.
DEFAULT_K = 10


class AnalyticsConfig(StrictModel):
    """Footfall analytics from aggregate counts (``docs/analytics.md``).

    ``k``: the threshold rule of statistical disclosure control: no figure is
    published that rests on fewer than ``k`` people (crossings, or vehicles
    for a lot) in its interval or cell; it is coarsened into a wider interval
    or suppressed, and marked so, never shown as 0. Default 10, our choice:
    the order of the minimum cell counts national statistics offices publish
    (Eurostat/ONS threshold rules use 3-10; footfall vendors 10).
    ``areas``: lots and nearby zones for the parking-to-footfall relation;
    none configured: one area per zone, with the lots whose ``zone`` it is.
    """

    k: Annotated[int, Field(ge=1, le=10_000)] = DEFAULT_K
    areas: list[AnalyticsArea] = Field(default_factory=list)


class SiteConfig(StrictModel):
    site: SiteInfo
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
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
            level_dups = [i for i, n in Counter(lv.id for lv in lot.levels).items() if n > 1]
            if level_dups:
                problems.append(f"parking lot {lot.id}: duplicate level id(s): {', '.join(sorted(level_dups))}")
            lot_bays = set(lot.bay_ids())
            for level in lot.levels:
                strays = [b for b in level.bay_ids() if b not in lot_bays]
                if strays:
                    problems.append(
                        f"parking lot {lot.id} level {level.id}: bay(s) not in the lot: {', '.join(strays[:10])}"
                    )
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
        banks = {b.id for b in self.lockers}
        for dev in self.devices:
            for lot_id in dev.lots:
                if lot_id not in lots:
                    problems.append(f"device {dev.id}: unknown parking lot {lot_id!r}")
            for ref in dev.levels:
                ref_lot = next((p for p in self.parking if p.id == ref.lot), None)
                if ref_lot is None:
                    problems.append(f"device {dev.id}: unknown parking lot {ref.lot!r} (levels)")
                elif ref_lot.level(ref.level) is None:
                    problems.append(f"device {dev.id}: parking lot {ref.lot} has no level {ref.level!r}")
            for bank_id in dev.lockers:
                if bank_id not in banks:
                    problems.append(f"device {dev.id}: unknown locker bank {bank_id!r}")
        for disp in self.displays:
            for lot_id in disp.lots:
                if lot_id not in lots:
                    problems.append(f"display {disp.id}: unknown parking lot {lot_id!r}")
            for zone_id in disp.zones:
                if zone_id not in zones:
                    problems.append(f"display {disp.id}: unknown zone {zone_id!r}")
            for ref in disp.levels:
                ref_lot = next((p for p in self.parking if p.id == ref.lot), None)
                if ref_lot is None:
                    problems.append(f"display {disp.id}: unknown parking lot {ref.lot!r} (levels)")
                elif ref_lot.level(ref.level) is None:
                    problems.append(f"display {disp.id}: parking lot {ref.lot} has no level {ref.level!r}")
        if problems:
            raise ValueError("; ".join(problems))
        self._analytics_references_resolve()
        return self

    def _analytics_references_resolve(self) -> None:
        """Street lines, boundary lines and areas name what exists: else a ValidationError at each bad key."""
        bad: list[InitErrorDetails] = []

        def fail(loc: tuple[str | int, ...], value: object, message: str) -> None:
            bad.append(InitErrorDetails(type=PydanticCustomError("unknown_reference", message), loc=loc, input=value))

        zones = {z.id for z in self.zones}
        lines = {(c.id, line.id): line for c in self.cameras for line in c.lines}
        for i, zone in enumerate(self.zones):
            ref = zone.street_line
            if ref is None:
                continue
            line = lines.get((ref.camera, ref.line))
            if line is None:
                fail(("zones", i, "street_line"), ref.model_dump(), f"zone {zone.id}: street_line names no camera"
                     f" line: camera {ref.camera!r} has no line {ref.line!r}")  # fmt: skip
            elif line.zone == zone.id:
                fail(("zones", i, "street_line"), ref.model_dump(), f"zone {zone.id}: street_line {ref.camera}/"
                     f"{ref.line} leads into this zone: its crossings are entries, not passers-by; name a line on"
                     " the street (leading into the street's own zone)")  # fmt: skip
        for c, cam in enumerate(self.cameras):
            for n, line in enumerate(cam.lines):
                if line.from_zone is None:
                    continue
                where = ("cameras", c, "lines", n, "from_zone")
                if line.from_zone not in zones:
                    fail(where, line.from_zone, f"camera {cam.id} line {line.id}: unknown zone {line.from_zone!r}")
                elif line.from_zone == line.zone:
                    fail(where, line.from_zone, f"camera {cam.id} line {line.id}: from_zone is the zone it leads into")
        lots = {p.id for p in self.parking}
        area_ids = Counter(a.id for a in self.analytics.areas)
        for a, area in enumerate(self.analytics.areas):
            if area_ids[area.id] > 1:
                fail(("analytics", "areas", a, "id"), area.id, f"duplicate area id {area.id!r}")
            for j, lot_id in enumerate(area.lots):
                if lot_id not in lots:
                    fail(
                        ("analytics", "areas", a, "lots", j), lot_id, f"area {area.id}: unknown parking lot {lot_id!r}"
                    )
            for j, zone_id in enumerate(area.zones):
                if zone_id not in zones:
                    fail(("analytics", "areas", a, "zones", j), zone_id, f"area {area.id}: unknown zone {zone_id!r}")
        if bad:
            raise ValidationError.from_exception_data(type(self).__name__, bad)

    def analytics_areas(self) -> list[AnalyticsArea]:
        """The configured areas, or one per zone that has lots (``LotConfig.zone``), named after the zone."""
        if self.analytics.areas:
            return list(self.analytics.areas)
        out = []
        for zone in self.zones:
            lots = [p.id for p in self.parking if p.zone == zone.id]
            if lots:
                out.append(AnalyticsArea(id=zone.id, name=zone.name, lots=lots, zones=[zone.id]))
        return out

    def area(self, area_id: str) -> AnalyticsArea | None:
        return next((a for a in self.analytics_areas() if a.id == area_id), None)

    @cached_property
    def boundaries(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """Lines between two zones: (from_zone, zone) -> [(camera, line)], ``towards`` being from -> to."""
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for cam in self.cameras:
            for line in cam.lines:
                if line.from_zone is not None:
                    out.setdefault((line.from_zone, line.zone), []).append((cam.id, line.id))
        return out

    def config_findings(self) -> list[Finding]:
        """What validates but cannot be meant; ``district check-config`` rejects these.

        A lot's ``full_below`` above ``max(1, bays - 1)``: with ``full_below``
        >= its bay count a lot would show full with every bay (or all but one)
        free. The server clamps it (:meth:`LotConfig.reserve`) meanwhile.
        """
        findings: list[Finding] = []
        for i, lot in enumerate(self.parking):
            total = len(self.bays_by_lot[lot.id])
            if lot.full_below == 0:
                findings.append(
                    (
                        ("parking", i, "full_below"),
                        f"parking lot {lot.id}: full_below 0 is not a reserve: a lot with no free bay is always "
                        "full; write 1 (the default) for no reserve",
                    )
                )
            elif lot.full_below > max(1, total - 1):
                findings.append(
                    (
                        ("parking", i, "full_below"),
                        f"parking lot {lot.id}: full_below {lot.full_below} must be less than the lot's {total} "
                        f"bay(s) (1 is always allowed): it is a reserve, the lot shows full while fewer than "
                        f"full_below bays are free, so {lot.full_below} would show it full with every bay free"
                        + ("" if lot.full_below > total else " but one"),
                    )
                )
        findings += self._display_findings()
        findings += self._ownership_findings()
        return findings

    def _ownership_findings(self) -> list[Finding]:
        """Lots and banks nobody owns where the site declares ownership: their readings would all be refused."""
        from contracts.ownership import Ownership

        own = Ownership.of(self)  # not the cached property: that one warns about what is unchecked
        findings: list[Finding] = []
        if own.bays is not None:
            for i, lot in enumerate(self.parking):
                orphans = [b for b in lot.bay_ids() if not own.bays.get((lot.id, b))]
                if orphans:
                    findings.append(
                        (
                            ("parking", i),
                            f"parking lot {lot.id}: no device owns {len(orphans)} of its bays (e.g. {orphans[0]}); "
                            "list the lot (devices[].lots) or its levels (devices[].levels) on the device that "
                            "reads them, or their readings are refused as not_owner",
                        )
                    )
        if own.banks is not None:
            for i, bank in enumerate(self.lockers):
                if not own.banks.get(bank.id):
                    findings.append(
                        (
                            ("lockers", i),
                            f"locker bank {bank.id}: no device owns it; list it on its controller "
                            "(devices[].lockers), or its readings are refused as not_owner",
                        )
                    )
        return findings

    def display_capacity(self, display: Display) -> int:
        """The most a display's sources can show: their bays (spaces) or zone capacities (people)."""
        if display.shows == "people":
            by_id = {z.id: z for z in self.zones}
            return sum(by_id[z].capacity or 0 for z in display.zones if z in by_id)
        bays: set[tuple[str, str]] = set()
        for lot_id in display.lots:
            bays |= {(lot_id, b) for b in self.bays_by_lot.get(lot_id, ())}
        for ref in display.levels:
            lot = self.lot(ref.lot)
            level = lot.level(ref.level) if lot else None
            if level is not None:
                bays |= {(ref.lot, b) for b in level.bay_ids()}
        return len(bays)

    def _display_findings(self) -> list[Finding]:
        """Displays that validate but contradict themselves (``district check-config`` rejects these)."""
        findings: list[Finding] = []
        zones = {z.id: z for z in self.zones}
        for i, disp in enumerate(self.displays):
            where = ("displays", i)
            if not (disp.lots or disp.levels or disp.zones):
                findings.append((where, f"display {disp.id}: no source (lots, levels or zones): it could never show"))
                continue
            if disp.zones and (disp.lots or disp.levels):
                findings.append(
                    (where, f"display {disp.id}: sums free spaces (lots, levels) and people (zones) at once")
                )
            if disp.min_value > disp.max_value:
                findings.append(
                    (
                        (*where, "min_value"),
                        f"display {disp.id}: min_value {disp.min_value} is above max_value {disp.max_value}",
                    )
                )
            capacity = self.display_capacity(disp)
            if disp.low_threshold is not None:
                if disp.low_threshold > capacity:
                    findings.append(
                        (
                            (*where, "low_threshold"),
                            f"display {disp.id}: low_threshold {disp.low_threshold} is above the {capacity} "
                            f"{disp.shows} its sources hold: it would always show {disp.low_text!r}",
                        )
                    )
                if disp.low_threshold <= disp.full_threshold:
                    findings.append(
                        (
                            (*where, "low_threshold"),
                            f"display {disp.id}: low_threshold {disp.low_threshold} is not above full_threshold "
                            f"{disp.full_threshold}: {disp.low_text!r} could never show",
                        )
                    )
            if disp.full_threshold >= capacity > 0:
                findings.append(
                    (
                        (*where, "full_threshold"),
                        f"display {disp.id}: full_threshold {disp.full_threshold} is not below the {capacity} "
                        f"{disp.shows} its sources hold: it would always show {disp.full_text!r}",
                    )
                )
            if disp.fallback == "text" and not disp.fallback_text:
                findings.append(
                    ((*where, "fallback_text"), f"display {disp.id}: fallback 'text' needs a fallback_text")
                )
            for zone_id in disp.zones:
                zone = zones.get(zone_id)
                if zone is not None and zone.capacity is None:
                    findings.append(
                        (
                            where,
                            f"display {disp.id}: zone {zone_id} has no capacity, so it has no crowd level to show",
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

    def zone(self, zone_id: str) -> Zone | None:
        return next((z for z in self.zones if z.id == zone_id), None)

    def bank(self, bank_id: str) -> LockerBank | None:
        return next((b for b in self.lockers if b.id == bank_id), None)

    def device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def display(self, display_id: str) -> Display | None:
        return next((d for d in self.displays if d.id == display_id), None)

    @cached_property
    def ownership(self) -> Ownership:
        """Which device may report on which bay, compartment and camera (:mod:`contracts.ownership`).

        Built on first use (the first reading a gateway or server validates); a kind of entity the site
        has but declares no owner for is logged once then, as a warning: any device may report on it.
        """
        from contracts.ownership import Ownership

        own = Ownership.of(self)
        unchecked = [
            what
            for what, present, table in (
                ("parking bays (devices[].lots, levels)", self.parking, own.bays),
                ("locker compartments (devices[].lockers)", self.lockers, own.banks),
            )
            if present and table is None
        ]
        if unchecked:
            log.warning(
                "site %s declares no owner for its %s: any device may report on them (docs/security.md)",
                self.site.id,
                " or ".join(unchecked),
            )
        return own

    @cached_property
    def lines_by_zone(self) -> dict[str, list[tuple[str, str]]]:
        """Each zone's counting lines, as (camera id, line id)."""
        out: dict[str, list[tuple[str, str]]] = {z.id: [] for z in self.zones}
        for cam in self.cameras:
            for line in cam.lines:
                out.setdefault(line.zone, []).append((cam.id, line.id))
        return out
