"""Typed response models: what the API promises, documented in OpenAPI.

Field names follow what users already know: ParkAPI's lot fields and FIWARE's
OffStreetParking (``total`` is ``totalSpotNumber``, ``free`` is
``availableSpotNumber``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from server.analytics.privacy import CellState

LotState = Literal["open", "full", "closed", "nodata"]
LotType = Literal["garage", "underground", "surface", "street"]
TrendDirection = Literal["filling", "emptying", "steady", "unknown"]
LockerBankState = Literal["open", "full", "out_of_service", "nodata"]
CompartmentSize = Literal["S", "M", "L", "XL"]
CrowdLevel = Literal["low", "moderate", "high", "very_high", "nodata", "suppressed"]
CrowdTrend = Literal["rising", "falling", "steady", "unknown", "suppressed"]
#: A live figure under the k rule, in the words of the analytics cells (:data:`CellState`): ``ok`` shown as
#: counted; ``coarsened`` shown coarser than counted and marked so (the live occupancy, rounded to a multiple
#: of k); ``suppressed`` rests on fewer than k people (null, never 0); ``nodata`` nothing counted.
FigureState = Literal["ok", "coarsened", "suppressed", "nodata"]
#: A completed window's counts: published whole (``ok``) or not at all; an aligned window is never coarsened.
FlowState = Literal["ok", "suppressed", "nodata"]
#: The parts of a zone flow (live window, history bucket or line) that the k rule can withhold one by one.
ZonePart = Literal["entries", "exits"]
#: ... of a zone history bucket: its flows, and the mean occupancy (withheld under k people).
ZoneBucketPart = Literal["entries", "exits", "occupancy_mean"]
#: ... of a zone peak: the means that give a direction's count back (times `days`).
ZonePeakPart = Literal["entries_mean", "exits_mean"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Coords(_Out):
    lat: float
    lng: float


class Trend(_Out):
    """How a lot's free count moved over the last minutes of the live stream."""

    direction: TrendDirection = Field(
        description="filling: free spaces fell by at least max(2, 1 % of the bays) in the window; emptying: rose"
        " by that much; steady: neither; unknown: less than a minute of live changes seen."
    )
    free_change: int | None = Field(description="Net change of free bays in the window (negative: filling).")
    window_s: float = Field(description="Seconds looked back (up to 600; less right after the server started).")


class ParkingLot(_Out):
    """Live availability of one parking lot."""

    id: str = Field(description="Lot id from the site configuration (ParkAPI id where there is one).")
    name: str
    coords: Coords
    address: str | None = None
    lot_type: LotType
    zone: str | None = Field(None, description="The district zone the lot serves.")
    total: int = Field(description="Bays in the site configuration (FIWARE totalSpotNumber).")
    free: int = Field(description="Bays whose fresh reading says free (FIWARE availableSpotNumber).")
    occupied: int = Field(description="Bays whose fresh reading says occupied.")
    unknown: int = Field(
        description="Bays with no reading, a reading older than the lot's freshness limit, or status unknown/closed."
        " A stale bay is never counted as free."
    )
    percent_free: float | None = Field(
        description="free / total in percent (one decimal); null when the lot has no fresh data."
    )
    state: LotState = Field(
        description="closed: closed in the site configuration; nodata: no bay has a fresh free/occupied reading;"
        " full: fewer free bays than the lot's reserve; open: otherwise."
    )
    observed_at: datetime | None = Field(
        description="When the newest bay reading was observed (UTC, on the server's clock: the device's own"
        " time corrected by its estimated clock offset), null if none was ever seen."
    )
    age_s: float | None = Field(description="Seconds from observed_at to the moment of this answer.")
    fresh: bool = Field(description="True when the newest reading was heard within the lot's freshness limit.")
    stale_after_s: float = Field(description="A bay not heard from for this long counts as unknown.")
    trend: Trend = Field(description="Filling or emptying, from the live changes of the last 10 minutes.")


class LockerSize(_Out):
    """One compartment size of a locker bank."""

    size: CompartmentSize
    total: int = Field(description="Compartments of this size in the site configuration.")
    free: int = Field(description="Compartments whose fresh reading says free.")
    occupied: int = Field(description="Compartments whose fresh reading says occupied (a parcel waits).")
    out_of_service: int = Field(description="Compartments whose fresh reading says out of service.")
    unknown: int = Field(
        description="Compartments with no reading, a stale one, or status unknown: never counted as free."
    )


class OpenDoor(_Out):
    compartment_id: str
    size: CompartmentSize
    since: datetime = Field(description="When the door was first reported open in its current open streak (UTC).")
    open_s: float = Field(description="Seconds the door has been open at the moment of this answer.")


class LockerBank(_Out):
    """Live availability of one pickup-locker bank."""

    id: str
    name: str
    coords: Coords
    zone: str | None = None
    total: int
    free: int
    occupied: int
    out_of_service: int
    unknown: int
    sizes: list[LockerSize] = Field(description="Per compartment size (S, M, L, XL), sizes the bank has only.")
    doors_open: list[OpenDoor] = Field(description="Compartments whose fresh reading says the door is open.")
    state: LockerBankState = Field(
        description="nodata: no compartment has a fresh reading; open: at least one is free;"
        " out_of_service: every fresh one is out of service; full: otherwise."
    )
    observed_at: datetime | None = Field(description="When the newest compartment reading was heard (server clock).")
    age_s: float | None
    fresh: bool = Field(description="True when the newest reading was heard within the bank's freshness limit.")
    stale_after_s: float


class ZoneFlow(_Out):
    """People crossing into (entries) and out of (exits) a zone in one completed, clock-aligned window [start, end).

    Under the k rule (docs/analytics.md, "The public live crowd"): published only when the window rests on at
    least k people (its crossings, in and out), and within it each direction only when it does; otherwise null,
    never 0.
    """

    start: datetime = Field(description="Start of the window (UTC), on a quarter-hour or hour of the site's clock.")
    end: datetime = Field(description="End of the window (UTC, excluded): the window is complete, it never moves"
                          " until the next one completes.")  # fmt: skip
    state: FlowState = Field(
        description="ok: rests on at least k people (site `analytics.k`, default 10: its entries plus exits);"
        " suppressed: on fewer (for the hour also: its suppressed quarters together rest on fewer, so the hour"
        " minus its published quarters would reveal them); nodata: no camera interval was heard in the window."
    )
    entries: int | None = Field(
        description="Crossings into the zone (FIWARE CrowdFlowObserved peopleCountTowards); null unless ok, and"
        " null in an ok window when withheld (named in `withheld`)."
    )
    exits: int | None = Field(description="Crossings out of the zone (peopleCountAway); null as `entries`.")
    withheld: list[ZonePart] = Field(
        description="The directions of an ok window withheld by the k rule (null above): a direction under k"
        " people (0 included); for the hour also a direction whose withheld quarters (those of the hour whose"
        " same direction was not shown, suppressed quarters included) together hold fewer than k people (0"
        " included), so the"
        " hour minus its shown quarters would reveal them. Empty in a suppressed or nodata window, whose state"
        " already says both are withheld. Whether a direction was under k itself is not said.",
    )


class ZoneCameras(_Out):
    configured: int = Field(description="Cameras with a counting line into this zone.")
    working: int = Field(description="Cameras heard within the zone's freshness limit and not reported broken.")
    broken: list[str] = Field(description="Cameras whose device reports them frozen, black or disconnected.")


class ZoneCrowd(_Out):
    """Crowd level of one zone, from its cameras' footfall counts; public, so every figure follows the k rule."""

    id: str
    name: str
    capacity: int | None = Field(description="People the zone holds comfortably (site configuration).")
    coords: Coords | None = None
    state: Literal["ok", "nodata"] = Field(
        description="nodata: no working camera; occupancy, share and level are then null or nodata."
    )
    occupancy: int | None = Field(
        description="Estimated people in the zone now (the cameras' in-minus-out estimates), rounded to the nearest"
        " multiple of `occupancy_base` (conventional rounding, a half up: with k = 10, 10-14 people are 10, 15-24"
        " are 20), so two answers differ by 0 or by at least k people, never by the few who came or went in a"
        " minute. Published from k people (site `analytics.k`, default 10), so never under k and never 0; null"
        " when `occupancy_state` is suppressed or nodata."
    )
    occupancy_base: int | None = Field(
        description="The rounding base of `occupancy`, in people: the site's k (1 means not rounded); null when"
        " occupancy is null."
    )
    share: float | None = Field(
        description="The published (rounded) occupancy / capacity, 4 decimals (may exceed 1); null when occupancy"
        " is null or the zone has no capacity."
    )
    occupancy_state: FigureState = Field(
        description="coarsened: occupancy and share shown, rounded to a multiple of `occupancy_base` (k); ok: shown"
        " as estimated (only when k is 1); suppressed: the estimate is under k people, so neither is published;"
        " nodata: no working camera or no estimate."
    )
    level: CrowdLevel | None = Field(
        description="A coarsened figure: low / moderate / high / very_high by the zone's crowd_levels thresholds on"
        " `share` (defaults 0.4 / 0.7 / 0.9), i.e. on the published (rounded) occupancy, so level and share agree."
        " Under k people it is shown only when every count under k is in the same band (the zone's low band reaches"
        " k - 1 people), else suppressed (a small zone's bands would narrow an under-k count to a few people);"
        " nodata without a working camera; null when the zone has no capacity."
    )
    trend: CrowdTrend = Field(
        description="From the net flow of `last_15m`: rising / falling beyond max(5, 2 % of capacity), steady"
        " otherwise; suppressed when that quarter is suppressed or a direction of it is withheld (the net flow"
        " would narrow the withheld count); unknown when it has no data."
    )
    last_15m: ZoneFlow = Field(description="The last completed quarter hour of the site's clock.")
    last_1h: ZoneFlow = Field(description="The last completed hour of the site's clock.")
    observed_at: datetime | None = Field(description="When the newest interval was heard (server clock).")
    age_s: float | None
    fresh: bool
    stale_after_s: float
    cameras: ZoneCameras


DeviceState = Literal["online", "degraded", "offline", "silent", "unknown"]


class CameraOut(_Out):
    camera_id: str
    state: Literal["ok", "frozen", "black", "disconnected", "starting"]
    fps: float
    dropped_frames: int = Field(description="Frames lost since the camera process started.")
    last_frame_age_s: float | None


class DeviceOut(_Out):
    """One device's health, judged at the moment of the answer."""

    id: str
    kind: str | None = Field(description="From the site configuration; null for a device the site does not list.")
    description: str | None = None
    configured: bool = Field(description="Whether the site configuration lists this device.")
    state: DeviceState = Field(
        description="offline: its last status says so (a last will or a clean stop); silent: nothing heard for"
        " silent_after_s; unknown: configured but never heard; else what it reports (online, degraded)."
    )
    reported_state: Literal["online", "degraded", "offline"] | None = Field(
        description="The state in its last status message."
    )
    reason: str | None = None
    last_heard_at: datetime | None = Field(
        description="When anything was last heard from it, on the server's clock (a retained status counts"
        " at its own observed_at, corrected by the device's clock offset when known)."
    )
    last_heard_age_s: float | None
    heartbeat_s: float
    silent_after_s: float = Field(description="heartbeat_s x the site's silent_after_heartbeats (default 3).")
    status_observed_at: datetime | None = Field(description="observed_at of its last status (device clock).")
    status_retained: bool | None = Field(description="Whether that status was a copy the broker kept.")
    battery_pct: float | None = None
    signal_dbm: float | None = None
    outbox_pending: int | None = Field(None, description="Readings waiting in its store-and-forward outbox.")
    firmware: str | None = None
    uptime_s: float | None = None
    clock_offset_s: float | None = Field(
        description="The server's clock minus the device's (positive: the device is behind), from its live"
        " messages of the last minute; null before any."
    )
    cameras: list[CameraOut]


AlertSeverity = Literal["info", "warning", "critical"]


class AlertSubject(_Out):
    type: str = Field(description="device, camera, lot, bay or site.")
    id: str


class Alert(_Out):
    """A condition an operator should act on; it clears itself when the cause goes."""

    id: str = Field(description="kind:subject type:subject id; stable while the condition holds.")
    kind: str = Field(
        description="device_offline, device_silent, camera_frozen, camera_black, camera_disconnected, battery_low,"
        " clock_offset, outbox_growing, lot_underreported, bays_stuck, bay_flapping, reject_rate."
    )
    severity: AlertSeverity
    subject: AlertSubject
    since: datetime = Field(description="When the condition was first seen (server clock).")
    text: str
    value: float | None = Field(None, description="The measured value the rule judged, where there is one.")


class ErrorOut(_Out):
    """An error the client can show or act on."""

    error: str = Field(description="A short, stable category, e.g. not_found.")
    detail: str = Field(description="What exactly went wrong.")


class BrokerHealth(_Out):
    connected: bool
    last_message_age_s: float | None = Field(description="Seconds since the last message arrived (any kind).")
    messages: int = Field(0, description="Messages received since start.")
    rejected: dict[str, int] = Field(default_factory=dict, description="Rejected messages by reason.")
    error: str | None = None


class DatabaseHealth(_Out):
    reachable: bool
    last_check_age_s: float | None = Field(description="Seconds since the last /ping finished; null before the first.")
    error: str | None = None
    bootstrapped: bool = Field(description="Whether live state was loaded from InfluxDB at start (or since).")
    bootstrap_bays: int = Field(0, description="Bay states the bootstrap loaded.")


class DeviceHealth(_Out):
    seen: int = Field(description="Devices heard from (a status or a reading).")
    by_state: dict[str, int] = Field(
        default_factory=dict,
        description="Devices per judged state (online, degraded, offline, silent: see /v1/devices).",
    )
    clock_offset_s: dict[str, float] = Field(
        default_factory=dict,
        description="Each device's estimated clock offset in seconds: the server's clock minus the device's"
        " (positive: the device is behind), the smallest received-minus-observed of its live messages"
        " over the last minute. Freshness is judged on the server's clock, so an offset never makes a"
        " device's readings stale.",
    )


class Health(_Out):
    status: Literal["ok", "degraded"]
    site: str
    uptime_s: float
    broker: BrokerHealth
    database: DatabaseHealth
    devices: DeviceHealth


# -- guidance (server/guidance.py, docs/guidance.md) ------------------------------

DestinationSource = Literal["coords", "zone", "locker_bank"]
ParkingUnavailableReason = Literal["closed", "stale", "nodata", "full", "too_far"]
#: What a guidance entry's spaces at arrival rest on (docs/guidance.md).
ArrivalBasis = Literal["forecast", "trend"]
LockerUnavailableReason = Literal["stale", "nodata", "no_size", "none_free", "too_far"]


class GuidanceDestination(_Out):
    """Where the person is going, as asked and as resolved to coordinates."""

    source: DestinationSource = Field(description="How the destination was given: lat/lng, a zone id or a bank id.")
    id: str | None = Field(description="The zone or locker bank id; null for coordinates.")
    name: str | None = Field(description="The zone's or bank's name; null for coordinates.")
    coords: Coords


class GuidanceEntrance(_Out):
    """The lot entrance nearest the destination: where the walk starts."""

    name: str | None = Field(description="The entrance's name; null when the lot has none configured (its coords).")
    coords: Coords


class GuidanceScoreParts(_Out):
    """The score's terms, in minutes of walking they are worth; their sum is the score (lower is better)."""

    walk_min: float = Field(description="Walking time from the nearest entrance to the destination.")
    space_risk_min: float = Field(
        description="FULL_COST_MIN * exp(-spaces_beyond_reserve / SPACE_SCALE): the risk of finding the lot full."
    )
    trend_min: float = Field(
        description="Without arrive_in_min: FILLING_MIN if the lot is filling, else 0. With arrive_in_min and a"
        " known trend: the space risk at the projected arrival minus the space risk now (negative if emptying)."
    )
    freshness_min: float = Field(description="STALENESS_MIN * data_age_s / stale_after_s: older data, more risk.")


class ParkingGuidanceEntry(_Out):
    """One lot in a parking guidance answer, with why it stands where it does."""

    rank: int | None = Field(description="1 for the best lot with space; null for an unavailable lot.")
    available: bool = Field(
        description="Fresh, open, with spaces beyond its reserve and within the walking limit: ranked by score."
        " Unavailable lots (only with include_unavailable=true) always come after every available one."
    )
    reason: ParkingUnavailableReason | None = Field(
        description="Why an unavailable lot is not recommended (first that applies: closed, stale, nodata,"
        " full, too_far); null when available."
    )
    lot_id: str
    name: str
    coords: Coords = Field(description="The lot's own coordinates.")
    entrance: GuidanceEntrance
    walk_m: float = Field(description="Estimated walking distance: great-circle distance times the circuity factor.")
    walk_min: float = Field(description="walk_m at the walking speed, in minutes.")
    state: LotState
    total: int
    free: int
    reserve: int = Field(description="The lot's effective full_below: it shows full while fewer bays are free.")
    spaces_beyond_reserve: int = Field(
        description="free - reserve + 1: bays that can still fill before the lot shows full (full_below 1 is no"
        " reserve, so this is then just free). At least 1 for an available lot."
    )
    spaces_at_arrival: float | None = Field(
        description="With arrive_in_min: spaces_beyond_reserve plus the change expected by the arrival (how:"
        " arrival_basis), within 0 and the lot's bays; null without arrive_in_min, or with neither a fresh"
        " forecast nor a known trend."
    )
    arrival_basis: ArrivalBasis | None = Field(
        None,
        description="What spaces_at_arrival rests on: `forecast` (the lot's fresh forecast's change of free bays"
        " from now to the arrival) or, without one, `trend` (the live trend's rate to the arrival); null when"
        " spaces_at_arrival is.",
    )
    trend: Trend
    fresh: bool
    data_age_s: float | None = Field(description="Age of the lot's newest bay reading; null if none was heard.")
    stale_after_s: float
    score: float | None = Field(description="Sum of score_parts in minutes (lower is better); null if unavailable.")
    score_parts: GuidanceScoreParts | None
    reasons: list[str] = Field(description="Each term or rule that put the lot here, in words.")
    summary: str = Field(description="One sentence a person can read.")


class ParkingGuidance(_Out):
    """Lots ranked for a destination: available ones by score, then (optionally) the rest with their reasons."""

    destination: GuidanceDestination
    arrive_in_min: float | None = Field(description="Minutes until the driver reaches the lot, as asked.")
    outside_site: bool = Field(
        description="True when the destination is farther than max_walk_m from every lot: nothing is ranked."
    )
    max_walk_m: float = Field(description="The walking limit: farther lots are unavailable (too_far).")
    available: int = Field(description="Lots available in all (the list holds at most `limit`).")
    unavailable: int = Field(description="Lots not recommended in all, listed only with include_unavailable=true.")
    lots: list[ParkingGuidanceEntry]
    note: str | None = Field(description="Why the ranked list is empty, when it is.")


class GuidanceSizeFree(_Out):
    size: CompartmentSize
    free: int = Field(description="Compartments of this size whose fresh reading says free.")


class LockerGuidanceEntry(_Out):
    """One locker bank in a locker guidance answer."""

    rank: int | None = Field(description="1 for the nearest bank with a fitting free compartment; null otherwise.")
    available: bool
    reason: LockerUnavailableReason | None = Field(
        description="Why an unavailable bank is not recommended (first that applies: no_size, stale, nodata,"
        " none_free, too_far); null when available."
    )
    bank_id: str
    name: str
    coords: Coords
    walk_m: float
    walk_min: float
    size_offered: CompartmentSize | None = Field(
        description="The smallest size at least as large as asked with a free compartment; null if none."
    )
    free_of_size: int = Field(description="Free compartments of size_offered (0 when none).")
    free_fitting: list[GuidanceSizeFree] = Field(
        description="Free compartments per size at least as large as asked, that the bank has."
    )
    state: LockerBankState
    fresh: bool
    data_age_s: float | None
    reasons: list[str]
    summary: str


class LockerGuidance(_Out):
    """Locker banks with a free compartment of the asked size or larger, nearest first."""

    destination: GuidanceDestination
    size: CompartmentSize = Field(description="The size asked for; larger sizes fit too (S < M < L < XL).")
    outside_site: bool = Field(description="True when the destination is farther than max_walk_m from every bank.")
    max_walk_m: float
    available: int
    unavailable: int
    banks: list[LockerGuidanceEntry]
    note: str | None


# -- displays (server.displays, server.routes.displays) ---------------------------------------------

DisplayMode = Literal["auto", "blank", "full", "closed", "text", "test"]
DisplaySignState = Literal["open", "low", "full", "closed", "fallback", "blank", "text", "test"]
OverrideMode = Literal["blank", "full", "closed", "text", "test"]


class SignSource(_Out):
    """One source a sign sums: a lot, a lot level, or a zone."""

    id: str = Field(description="Lot id, `lot/level`, or zone id.")
    kind: Literal["lot", "level", "zone"]
    value: int | None = Field(
        description="Free spaces (lot, level) or people (zone: its published occupancy, a multiple of k as in"
        " /v1/zones); null without fresh data, or for a zone whose occupancy rests on fewer than k people"
        " (`suppressed`; never 0)."
    )
    capacity: int = Field(description="Bays (lot, level) or the zone's configured capacity (0 when none).")
    reporting: int = Field(description="Bays with a fresh free/occupied reading; for a zone, 1 when it has data.")
    fresh: bool = Field(description="Its newest reading is younger than the display's stale_after_s.")
    data_age_s: int | None = Field(description="Whole seconds since its newest reading was heard; null if never.")
    closed: bool = Field(description="A lot closed in the site configuration (levels: their lot).")
    level: CrowdLevel | None = Field(None, description="A zone's crowd level (a coarsened figure, as /v1/zones).")
    suppressed: bool = Field(
        False, description="A zone whose occupancy is under k people (site `analytics.k`): its value is withheld."
    )


class SignOverride(_Out):
    """An operator's manual mode, with its mandatory expiry."""

    mode: OverrideMode
    text: str | None = Field(description="What a `text` override shows.")
    until: datetime = Field(description="When it ends by itself (UTC).")
    by: str = Field(description="The name of the API key that set it.")
    reason: str | None = None
    set_at: datetime


class SignState(_Out):
    """What one sign shows now, and why (docs/displays.md)."""

    display_id: str
    event_id: int = Field(
        description="Grows with every change of anything the sign shows (value, text, mode, state, stale,"
        " trusted, override), across displays and server restarts; the SSE id and the ETag."
    )
    value: int | None = Field(
        description="The number behind the sign; null when it shows none (fallback, blank, text), and on a people"
        " sign when a zone's occupancy is under k people (the sign shows the crowd level or its fallback instead)."
        " A people sign's number is the sum of its zones' published occupancies, each a multiple of k, so the"
        " sum is one too (before the display's configured offset and clamp)."
    )
    text: str = Field(
        description="Exactly what the sign shows: the number, low_text, full_text, closed_text, fallback_text,"
        " an operator text, a test pattern, or '' (blank)."
    )
    mode: DisplayMode = Field(description="auto, or the operator override's mode.")
    state: DisplaySignState = Field(
        description="open / low / full / closed from the data (or a full/closed override); fallback when the data"
        " is stale or untrusted; blank, text, test from an override."
    )
    stale: bool = Field(description="Some source's newest reading is older than stale_after_s (or there is none).")
    trusted: bool = Field(description="At least trust_share of the sources' bays (zones) report fresh data.")
    trust: float = Field(description="Share of the sources' bays (zones) reporting fresh data, 0..1.")
    trust_share: float
    data_age_s: int | None = Field(
        description="Whole seconds since the least recently heard source's newest sensor reading (not since the"
        " last publish); null when some source was never heard."
    )
    stale_after_s: float = Field(description="Past this data age the sign shows its fallback, never the number.")
    shows: Literal["spaces", "people"]
    kind: Literal["parking", "garage", "wayfinding"]
    name: str | None = None
    sources: list[SignSource]
    override: SignOverride | None = Field(description="The operator override in force, null when none.")
    updated_at: datetime = Field(description="When the sign last changed (this event id began).")


class OverrideIn(BaseModel):
    """Set an operator mode on a sign until a given time."""

    model_config = ConfigDict(extra="forbid")

    mode: OverrideMode
    text: str | None = Field(None, max_length=16, pattern=r"^[\x20-\x7e]*$", description="Required for mode text.")
    until: AwareDatetime = Field(description="RFC 3339 with a UTC offset; in the future, at most override_max_s ahead.")
    reason: str | None = Field(None, max_length=200)


class AuditEntry(_Out):
    """One operator action on a sign (or an override ending by itself)."""

    id: int
    at: datetime
    display_id: str
    action: Literal["set", "clear", "expire"]
    by: str = Field(description="API key name; `expiry` when an override ended at its until.")
    mode: OverrideMode | None
    text: str | None
    until: datetime | None
    reason: str | None


# -- history (server/routes/history.py, server/history.py, docs/history.md) ------------------------------

HistoryEvery = Literal["5m", "1h", "1d"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class HistoryStat(_Out):
    """Mean, minimum and maximum of a count over one bucket's snapshots (null: no snapshot in the bucket)."""

    mean: float | None
    min: int | None
    max: int | None


class HistoryWindow(_Out):
    """The span answered: ``from``/``to`` widened to whole buckets, in the site's time zone."""

    start: datetime = Field(description="First bucket's start (local time with its UTC offset).")
    end: datetime = Field(description="Last bucket's end, exclusive.")
    every: HistoryEvery
    timezone: str = Field(description="The site's IANA time zone: 1h and 1d buckets start at its local hours.")
    sources: list[str] = Field(
        description="Where the numbers came from, coarsest first: `rollup_1h`, `rollup_5m` (continuous-query"
        " rollups) and/or `raw` (the recent part no rollup covers yet)."
    )


class LotHistoryBucket(_Out):
    start: datetime = Field(description="Local start of the bucket (a 1d bucket is 23 or 25 h on DST days).")
    end: datetime
    samples: int = Field(description="Lot snapshots (one a minute) in the bucket; 0: no data, every value null.")
    free: HistoryStat
    occupied: HistoryStat
    unknown: HistoryStat = Field(description="Bays without a fresh free/occupied reading (never counted as free).")


class LotHistory(_Out):
    """A lot's free and occupied bays over time, per bucket."""

    lot_id: str
    name: str
    total: int = Field(description="Bays in the site configuration now.")
    window: HistoryWindow
    buckets: list[LotHistoryBucket]


class Privacy(_Out):
    k: int = Field(description="No figure rests on fewer than k people (site `analytics.k`, default 10).")


_K_STATE = (
    "`ok`: the bucket's crossings (entries and exits on all the zone's lines) reach k; `coarsened`: under k on"
    " its own, so merged with the neighbouring buckets into a wider interval (`start`/`end`) that reaches k;"
    " `suppressed`: under k even so, every count withheld (null, never 0); `nodata`: no line reported."
)


_PART_RULE = (
    "Within an ok or coarsened bucket each part (the bucket's entries and exits, each line's entries and exits)"
    " is shown only if it rests on at least k people; else it is null (never 0) and named in `withheld`. Parts"
    " add up (entries: the total is the sum of the lines' entries; exits likewise), so within each of the two"
    " groups the withheld line parts of a shown total sum to at least k (secondary suppression: more parts are"
    " withheld, the smallest first), and none can be recovered by subtraction (docs/history.md)."
)


class LineFlow(_Out):
    camera: str | None
    line: str
    entries: int | None = Field(description="Crossings into the zone (towards); null when withheld (`withheld`).")
    exits: int | None = Field(description="Crossings out of the zone (away); null when withheld (`withheld`).")
    withheld: list[ZonePart] = Field(
        description="This line's parts withheld by the k rule (null above), whether under k themselves or withheld"
        f" so that another cannot be recovered: the two are not told apart. {_PART_RULE}"
    )


class ZoneHistoryBucket(_Out):
    start: datetime = Field(description="Bucket start (local time with offset); a coarsened bucket's merged start.")
    end: datetime = Field(description="Bucket end, exclusive; a coarsened bucket spans several requested buckets.")
    state: CellState = Field(description=f"The k rule (docs/history.md). {_K_STATE}")
    entries: int | None = Field(
        description="Crossings into the zone on all its lines (people); null unless `state` is ok or coarsened,"
        " and null in such a bucket when withheld (named in `withheld`: under k)."
    )
    exits: int | None = Field(description="Crossings out of the zone on all its lines; null as `entries`.")
    withheld: list[ZoneBucketPart] = Field(
        description="The bucket's totals (`entries`, `exits`) withheld by the k rule in an ok or coarsened bucket,"
        " and `occupancy_mean` when under k people; empty in a suppressed or nodata bucket, whose state already"
        f" says every count is withheld. {_PART_RULE}"
    )
    occupancy_mean: float | None = Field(
        description="Mean estimated people in the zone (the sum of its cameras' mean estimates); null when no camera"
        " reported one, unless `state` is ok or coarsened, and when under k people (then named in `withheld`, never"
        " 0; as the live `occupancy` is suppressed under k)."
    )
    lines: list[LineFlow] = Field(
        description="Per counting line with data (parts of the bucket's crossings); empty unless ok or coarsened."
        " A line whose parts are all withheld is still listed (that it reported is not a count)."
    )


class ZoneHistory(_Out):
    """A zone's footfall (entries, exits) and occupancy over time, under the k rule (``docs/history.md``)."""

    zone_id: str
    name: str
    window: HistoryWindow
    privacy: Privacy
    buckets: list[ZoneHistoryBucket] = Field(
        description="In time order, together covering the window: one per requested bucket, except that a"
        " coarsened bucket stands for the run of buckets it merged."
    )


class LockerHistoryBucket(_Out):
    start: datetime
    end: datetime
    samples: int = Field(description="Bank snapshots (one a minute) in the bucket; 0: no data.")
    deposits: int | None = Field(description="Compartments that went free -> occupied; null without data.")
    pickups: int | None = Field(description="Compartments that went occupied -> free; null without data.")
    mean_dwell_s: float | None = Field(
        description="Mean seconds from deposit to pickup, over the pickups in the bucket whose deposit was seen."
    )
    occupied: HistoryStat
    free: HistoryStat


class LockerHistory(_Out):
    """A locker bank's use over time: deposits, pickups, dwell time and occupancy."""

    bank_id: str
    name: str
    total: int
    window: HistoryWindow
    buckets: list[LockerHistoryBucket]


class LotPeak(_Out):
    weekday: Weekday
    hour: int | None = Field(description="Local start hour (0-23) of the busiest hour; null: no data that weekday.")
    occupied_mean: float | None = Field(description="Mean occupied bays in that hour over the weekday's days.")
    free_mean: float | None
    days: int = Field(description="Days of this weekday in the span with data.")


class LotPeaks(_Out):
    """The busiest hour of each weekday: the local hour with the most occupied bays on average."""

    lot_id: str
    name: str
    total: int
    window: HistoryWindow
    peaks: list[LotPeak] = Field(description="Monday first.")


class ZonePeak(_Out):
    weekday: Weekday
    hour: int | None = Field(
        description="Local start hour (0-23) with the most entries on average, among the hours whose crossings over"
        " the weekday's days reach k; null: no data, or no hour reaches k (`state` suppressed)."
    )
    state: CellState = Field(
        description="`ok`: the hour's crossings (entries and exits over the weekday's days) reach k; `suppressed`:"
        " no hour of the weekday does, so no hour is named and the means are null (never 0); `nodata`: no data."
    )
    entries_mean: float | None = Field(
        description="Mean entries in that hour over the weekday's days with data; null unless ok, and null when"
        " withheld (`withheld`): the hour's entries over those days are under k, which the mean times `days` would"
        " give back."
    )
    exits_mean: float | None = Field(description="Mean exits in that hour, likewise; null as `entries_mean`.")
    withheld: list[ZonePeakPart] = Field(
        description="The means of an ok peak withheld by the k rule because the hour's entries (exits) over the"
        " weekday's days are under k people, though its crossings reach k. Empty in a suppressed or nodata peak,"
        " whose state already says both are withheld."
    )
    days: int


class ZonePeaks(_Out):
    """The busiest hour of each weekday: the local hour with the most entries into the zone on average."""

    zone_id: str
    name: str
    window: HistoryWindow
    privacy: Privacy
    peaks: list[ZonePeak] = Field(description="Monday first.")
