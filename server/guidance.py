"""Guidance: which parking lot, which locker bank, for a destination. Pure code (no web framework).

The routes (:mod:`server.routes.guidance`) resolve the destination and hand
this module the live lots or banks, judged at one instant; everything here is
a function of its arguments, so the ranking is tested as a table
(``tests/unit/server/test_guidance.py``). ``docs/guidance.md`` has the
formulas with examples.

Walking
    ``walk_m = haversine(nearest entrance, destination) * CIRCUITY``, and
    ``walk_min = walk_m / WALK_SPEED_M_S / 60``. A lot's entrances are its
    configured pedestrian ways out (``LotConfig.entrance_coords``; its
    ``coords`` if none); the walk starts at the one nearest the destination.

Parking score (minutes of walking each term is worth; lower is better)::

    score = walk_min
          + FULL_COST_MIN * exp(-spaces / SPACE_SCALE)           # space_risk_min
          + trend_min
          + STALENESS_MIN * min(1, data_age_s / stale_after_s)  # freshness_min

    spaces    = free - reserve + 1    (bays that can fill before the lot shows full)
    trend_min = FILLING_MIN if the lot is filling, else 0       (no arrive_in_min)
              = risk(spaces_at_arrival) - risk(spaces)          (arrive_in_min, and a trend or a forecast)
    spaces_at_arrival = max(0, min(total, spaces + the change by the arrival)), the change (``arrival_basis``):
      forecast: the lot's fresh forecast's change of free bays from now to the arrival (``ForecastChange``)
      trend:    free_change / window_s * arrive_in_min * 60   (no fresh forecast; a known trend)
    The forecast enters as a change added to the live count, so its level error cancels. It is preferred to
    the trend at every arrival time because bench/forecast/arrival.py measured it so (README there).

Tiers
    Only lots that are fresh, ``open`` (so at least one space beyond the
    reserve) and within ``MAX_WALK_M`` are ranked, by score, then walking
    distance, then id. Every other lot (closed, stale, no data, full, too far)
    comes after all of them, with its reason, and only when asked for: a lot
    without trustworthy space never ranks above one with it, whatever the
    scores.

Lockers
    Banks with fresh data and a free compartment of the asked size or larger
    (``S < M < L < XL``), within ``MAX_WALK_M``, nearest walk first; each
    offers its smallest fitting free size.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contracts.site import COMPARTMENT_SIZES, CompartmentSize, CoordsConfig, SiteConfig
from server import models

#: Mean Earth radius in metres (IUGG R1), for the haversine great-circle distance.
EARTH_RADIUS_M = 6_371_008.8
#: Circuity (detour) factor: walking-network distance over great-circle distance.
#: Newell (1980) put network distance between random urban points at about 1.2 times
#: the straight line; O'Sullivan & Morrall (1996) measured 1.21-1.23 around transit
#: stations; Giacomin & Levinson (2015, Environment and Planning B 42(6)) find short
#: trips more circuitous than long ones, and a walk across a grid at 45 degrees is
#: sqrt(2) = 1.41. Walks from a lot to a shop are short: 1.3, between the two.
CIRCUITY = 1.3
#: Walking speed, m/s (80 m/min): the low end of the mean speeds Finnis & Walton
#: (2008, Ergonomics 51(6)) observed on city footpaths, 80-95 m/min; people leaving
#: a car with bags walk at the slow end.
WALK_SPEED_M_S = 1.34
#: Walking limit, metres: a lot (bank) farther than this from the destination is
#: not a walking option (``too_far``); a destination farther from every lot is
#: outside the site. 3 km is about 37 minutes at WALK_SPEED_M_S. Our choice.
MAX_WALK_M = 3000.0
#: Minutes it costs to arrive at a full lot (drive on to the next and search): the
#: weight of the space risk. Our choice, stated so it can be tuned.
FULL_COST_MIN = 10.0
#: Bays over which the full-lot risk falls by a factor e: 1 spare bay ~ 0.9 of
#: FULL_COST_MIN, 10 bays ~ 0.37, 30 bays ~ 0.05. Our choice.
SPACE_SCALE = 10.0
#: Minutes added for a filling lot when the arrival time is not given. Our choice.
FILLING_MIN = 2.0
#: Minutes added for data at the very edge of the lot's freshness window
#: (proportionally less for younger data). Our choice.
STALENESS_MIN = 2.0
#: A trend needs at least this many seconds of live changes to project spaces.
MIN_TREND_WINDOW_S = 60.0

#: Unavailable lots are explained with the first of these that applies.
PARKING_REASONS: tuple[models.ParkingUnavailableReason, ...] = ("closed", "stale", "nodata", "full", "too_far")
#: Unavailable banks are explained with the first of these that applies.
LOCKER_REASONS: tuple[models.LockerUnavailableReason, ...] = ("no_size", "stale", "nodata", "none_free", "too_far")


# -- geometry ----------------------------------------------------------------------


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (spherical Earth)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def walk_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Estimated walking distance: great-circle distance times :data:`CIRCUITY`."""
    return haversine_m(lat1, lng1, lat2, lng2) * CIRCUITY


def walk_min(metres: float) -> float:
    return metres / WALK_SPEED_M_S / 60.0


def _distance(metres: float) -> str:
    return f"{metres:.0f} m" if metres < 10_000 else f"{metres / 1000:,.0f} km"


# -- destination -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    source: models.DestinationSource
    lat: float
    lng: float
    id: str | None = None
    name: str | None = None

    def out(self) -> models.GuidanceDestination:
        return models.GuidanceDestination(
            source=self.source, id=self.id, name=self.name, coords=models.Coords(lat=self.lat, lng=self.lng)
        )


class DestinationError(ValueError):
    """A destination that cannot be resolved: ``code`` is stable, ``param`` the query parameter at fault.

    ``not_found``: the id names nothing in the site (an HTTP 404); otherwise
    the request is malformed (an HTTP 422).
    """

    def __init__(self, code: str, detail: str, param: str, *, not_found: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.param = param
        self.not_found = not_found


def resolve_destination(
    site: SiteConfig,
    *,
    lat: float | None = None,
    lng: float | None = None,
    zone: str | None = None,
    locker_bank: str | None = None,
) -> Destination:
    """Exactly one of ``lat`` + ``lng``, ``zone`` (its coords) or ``locker_bank`` (its coords)."""
    forms = [name for name, given in (("lat/lng", lat is not None or lng is not None), ("zone", zone is not None),
                                      ("locker_bank", locker_bank is not None)) if given]  # fmt: skip
    if not forms:
        raise DestinationError("destination_missing", "give a destination: lat and lng, or zone, or locker_bank", "lat")
    if len(forms) > 1:
        raise DestinationError(
            "destination_ambiguous",
            f"give exactly one destination (lat and lng, or zone, or locker_bank), not {' and '.join(forms)}",
            "zone" if zone is not None else "locker_bank",
        )
    if zone is not None:
        z = site.zone(zone)
        if z is None:
            raise DestinationError("unknown_zone", f"no zone {zone!r} in site {site.site.id!r}", "zone", not_found=True)
        if z.coords is None:
            raise DestinationError(
                "zone_without_coords",
                f"zone {zone!r} has no coordinates in the site configuration; give lat and lng instead",
                "zone",
            )
        return Destination("zone", z.coords.lat, z.coords.lng, z.id, z.name)
    if locker_bank is not None:
        b = site.bank(locker_bank)
        if b is None:
            raise DestinationError(
                "unknown_locker_bank",
                f"no locker bank {locker_bank!r} in site {site.site.id!r}",
                "locker_bank",
                not_found=True,
            )
        return Destination("locker_bank", b.coords.lat, b.coords.lng, b.id, b.name)
    if lat is None or lng is None:
        missing = "lng" if lng is None else "lat"
        raise DestinationError("destination_incomplete", f"lat and lng go together: {missing} is missing", missing)
    return Destination("coords", lat, lng)


# -- parking -----------------------------------------------------------------------


def space_risk_min(spaces: float) -> float:
    """Minutes the risk of arriving to a full lot is worth, with ``spaces`` to spare."""
    return FULL_COST_MIN * math.exp(-max(0.0, spaces) / SPACE_SCALE)


def _zero(x: float) -> float:
    """``x``, with what rounds to 0.000 made exactly 0.0 (no "-0.00" in answers)."""
    return 0.0 if abs(x) < 0.0005 else x


def _plural(n: float, one: str, many: str | None = None) -> str:
    return one if n == 1 else (many or one + "s")


@dataclass(frozen=True, slots=True)
class _Judged:
    """One lot with everything the ranking and its explanation need."""

    lot: models.ParkingLot
    entrance: models.GuidanceEntrance
    walk_m: float
    reserve: int
    spaces: int
    reason: models.ParkingUnavailableReason | None
    score: float | None
    parts: models.GuidanceScoreParts | None
    at_arrival: float | None
    basis: models.ArrivalBasis | None
    reasons: list[str]


#: ``(lot id, minutes)`` -> the change in the lot's free bays its forecast expects from now to that many minutes
#: from now, or None when no fresh forecast spans both (``server.forecast.service``, via the route).
ForecastChange = Callable[[str, float], float | None]


def rank_parking(
    site: SiteConfig,
    lots: Sequence[models.ParkingLot],
    destination: Destination,
    *,
    arrive_in_min: float | None = None,
    forecast_change: ForecastChange | None = None,
    limit: int = 5,
    include_unavailable: bool = False,
) -> models.ParkingGuidance:
    """Rank ``lots`` (live, judged at one instant) for walking to ``destination``.

    At most ``limit`` available lots, by score (then walking distance, then
    id); with ``include_unavailable``, then at most ``limit`` unavailable ones,
    nearest first, each with its reason. ``forecast_change`` (with
    ``arrive_in_min``) makes the spaces at arrival follow a lot's fresh
    forecast instead of its live trend (module docstring).
    """
    judged = [_judge_lot(site, lot, destination, arrive_in_min, forecast_change) for lot in lots]
    outside = bool(judged) and min(j.walk_m for j in judged) > MAX_WALK_M
    ok = sorted((j for j in judged if j.reason is None), key=_by_score)
    not_ok = sorted((j for j in judged if j.reason is not None), key=lambda j: (j.walk_m, j.lot.id))
    entries = [_parking_entry(j, rank) for rank, j in enumerate(ok[:limit], start=1)]
    if include_unavailable:
        entries += [_parking_entry(j, None) for j in not_ok[:limit]]
    note = None
    if not judged:
        note = f"site {site.site.id!r} has no parking lots"
    elif outside:
        nearest = min(judged, key=lambda j: j.walk_m)
        note = (
            f"the destination is outside the site: the nearest lot ({nearest.lot.name}) is a"
            f" {_distance(nearest.walk_m)} walk, beyond the {MAX_WALK_M:.0f} m limit"
        )
    elif not ok:
        counts = Counter(j.reason for j in not_ok)
        why = ", ".join(f"{counts[r]} {r}" for r in PARKING_REASONS if counts[r])
        note = f"no lot with space: {why}" + ("" if include_unavailable else " (include_unavailable=true lists them)")
    return models.ParkingGuidance(
        destination=destination.out(),
        arrive_in_min=arrive_in_min,
        outside_site=outside,
        max_walk_m=MAX_WALK_M,
        available=len(ok),
        unavailable=len(not_ok),
        lots=entries,
        note=note,
    )


def _by_score(j: _Judged) -> tuple[float, float, str]:
    assert j.score is not None
    return (j.score, j.walk_m, j.lot.id)


def _nearest_entrance(
    site: SiteConfig, lot: models.ParkingLot, dest: Destination
) -> tuple[float, CoordsConfig, str | None]:
    config = site.lot(lot.id)
    if config is None:  # a lot the site does not describe: its own coordinates
        options: list[tuple[CoordsConfig, str | None]] = [(CoordsConfig(lat=lot.coords.lat, lng=lot.coords.lng), None)]
    elif config.entrances:
        options = [(e.coords, e.name) for e in config.entrances]
    else:
        options = [(config.coords, None)]
    return min(
        ((walk_m(c.lat, c.lng, dest.lat, dest.lng), c, name) for c, name in options),
        key=lambda t: t[0],
    )


def _judge_lot(
    site: SiteConfig,
    lot: models.ParkingLot,
    dest: Destination,
    arrive_in_min: float | None,
    forecast_change: ForecastChange | None,
) -> _Judged:
    metres, coords, entrance_name = _nearest_entrance(site, lot, dest)
    metres = round(metres, 1)
    entrance = models.GuidanceEntrance(name=entrance_name, coords=models.Coords(lat=coords.lat, lng=coords.lng))
    config = site.lot(lot.id)
    reserve = config.reserve(lot.total) if config is not None else 1
    spaces = lot.free - reserve + 1
    reason: models.ParkingUnavailableReason | None
    if lot.state == "closed":
        reason = "closed"
    elif not lot.fresh:
        reason = "stale" if lot.observed_at is not None else "nodata"
    elif lot.state == "nodata":
        reason = "nodata"
    elif lot.state != "open" or spaces < 1:
        reason = "full"
    elif metres > MAX_WALK_M:
        reason = "too_far"
    else:
        reason = None
    where = f"from {entrance_name}" if entrance_name else "from the lot"
    w = walk_min(metres)
    walk = f"{w:.1f} min walk ({_distance(metres)} {where})"
    if reason is not None:
        sentence = _unavailable_sentence(lot, reason, reserve, metres)
        return _Judged(lot, entrance, metres, reserve, spaces, reason, None, None, None, None, [sentence, walk])

    reasons = [f"{walk}: +{w:.2f}"]
    risk = space_risk_min(spaces)
    held = f"beyond the reserve of {reserve}" if reserve > 1 else "free (no reserve)"
    reasons.append(f"{spaces} {_plural(spaces, 'space')} {held}: full-lot risk +{risk:.2f}")

    trend = lot.trend
    at_arrival: float | None = None
    basis: models.ArrivalBasis | None = None
    usable = trend.free_change is not None and trend.window_s >= MIN_TREND_WINDOW_S and trend.direction != "unknown"
    change = ""
    if trend.free_change is not None:
        bays = _plural(abs(trend.free_change), "bay")
        change = f"{trend.free_change:+d} {bays} in {trend.window_s / 60:.0f} min"
    expected: float | None = None  # the forecast's change of free bays from now to the arrival
    if arrive_in_min is not None and forecast_change is not None:
        expected = forecast_change(lot.id, arrive_in_min)
    if arrive_in_min is not None and (expected is not None or usable):
        if expected is not None:
            basis, moved = "forecast", expected
        else:
            assert trend.free_change is not None
            basis, moved = "trend", trend.free_change / trend.window_s * arrive_in_min * 60.0
        at_arrival = max(0.0, min(float(lot.total), spaces + moved))
        trend_min = _zero(space_risk_min(at_arrival) - risk)
        left = f"about {at_arrival:.0f} {_plural(round(at_arrival), 'space')} left on arrival in {arrive_in_min:g} min"
        if basis == "trend":
            reasons.append(f"{trend.direction} ({change}): {left}: {trend_min:+.2f}")
        else:
            reasons.append(
                f"forecast {moved:+.0f} {_plural(round(abs(moved)), 'free bay')} by then: {left}: {trend_min:+.2f}"
            )
    elif trend.direction == "filling":
        trend_min = FILLING_MIN
        reasons.append(f"filling ({change}): +{trend_min:.2f}")
    elif trend.direction == "unknown":
        trend_min = 0.0
        reasons.append("trend unknown (under a minute of live changes): +0.00")
    else:
        trend_min = 0.0
        reasons.append(f"{trend.direction} ({change}): +0.00")

    age = lot.age_s
    share = 1.0 if age is None else min(1.0, age / max(lot.stale_after_s, 1e-9))
    fresh_min = STALENESS_MIN * share
    age_text = "age unknown" if age is None else f"{age:.0f} s old of {lot.stale_after_s:.0f} s allowed"
    reasons.append(f"data {age_text}: +{fresh_min:.2f}")

    parts = models.GuidanceScoreParts(
        walk_min=round(w, 3),
        space_risk_min=round(risk, 3),
        trend_min=round(trend_min, 3),
        freshness_min=round(fresh_min, 3),
    )
    # The score shown is the score sorted on: equal shown scores tie-break on distance, then id.
    score = round(parts.walk_min + parts.space_risk_min + parts.trend_min + parts.freshness_min, 3)
    return _Judged(lot, entrance, metres, reserve, spaces, None, score, parts, at_arrival, basis, reasons)


def _unavailable_sentence(
    lot: models.ParkingLot, reason: models.ParkingUnavailableReason, reserve: int, metres: float
) -> str:
    if reason == "closed":
        return f"{lot.name} is closed."
    if reason == "stale":
        return (
            f"{lot.name}: no bay heard for {lot.age_s or 0:.0f} s (limit {lot.stale_after_s:.0f} s),"
            " so its free count cannot be trusted."
        )
    if reason == "nodata":
        if lot.observed_at is None:
            return f"{lot.name}: no bay reading heard yet."
        return f"{lot.name}: no bay reports free or occupied."
    if reason == "full":
        if reserve > 1:
            return f"{lot.name} is full: {lot.free} free, fewer than its reserve of {reserve}."
        return f"{lot.name} is full: no free bay."
    return f"{lot.name} is a {_distance(metres)} walk, beyond the {MAX_WALK_M:.0f} m limit."


def _parking_entry(j: _Judged, rank: int | None) -> models.ParkingGuidanceEntry:
    lot = j.lot
    metres = j.walk_m
    if j.reason is None:
        assert j.score is not None
        extra = (
            f" (about {j.at_arrival:.0f} on arrival)"
            if j.at_arrival is not None
            else (", filling" if lot.trend.direction == "filling" else "")
        )
        summary = (
            f"{rank}. {lot.name}: {walk_min(metres):.0f} min walk, {j.spaces} {_plural(j.spaces, 'space')}"
            f" to spare{extra}, data {lot.age_s or 0:.0f} s old; score {j.score:.1f}."
        )
    else:
        summary = j.reasons[0]
    return models.ParkingGuidanceEntry(
        rank=rank,
        available=j.reason is None,
        reason=j.reason,
        lot_id=lot.id,
        name=lot.name,
        coords=lot.coords,
        entrance=j.entrance,
        walk_m=metres,
        walk_min=round(walk_min(metres), 2),
        state=lot.state,
        total=lot.total,
        free=lot.free,
        reserve=j.reserve,
        spaces_beyond_reserve=j.spaces,
        spaces_at_arrival=None if j.at_arrival is None else round(j.at_arrival, 1),
        arrival_basis=j.basis,
        trend=lot.trend,
        fresh=lot.fresh,
        data_age_s=lot.age_s,
        stale_after_s=lot.stale_after_s,
        score=j.score,
        score_parts=j.parts,
        reasons=j.reasons,
        summary=summary,
    )


# -- lockers -----------------------------------------------------------------------


def fitting_sizes(size: CompartmentSize) -> tuple[CompartmentSize, ...]:
    """``size`` and every larger one: a parcel that fits one fits every later one."""
    return COMPARTMENT_SIZES[COMPARTMENT_SIZES.index(size) :]


def rank_lockers(
    banks: Sequence[models.LockerBank],
    destination: Destination,
    size: CompartmentSize,
    *,
    limit: int = 5,
    include_unavailable: bool = False,
) -> models.LockerGuidance:
    """Banks with fresh data and a free compartment of ``size`` or larger, nearest walk first (then id)."""
    fits = fitting_sizes(size)
    judged: list[tuple[float, models.LockerBank, models.LockerUnavailableReason | None, list[models.GuidanceSizeFree]]]
    judged = []
    for bank in banks:
        metres = round(walk_m(bank.coords.lat, bank.coords.lng, destination.lat, destination.lng), 1)
        free = [models.GuidanceSizeFree(size=s.size, free=s.free) for s in bank.sizes if s.size in fits]
        reason: models.LockerUnavailableReason | None
        if not free:
            reason = "no_size"
        elif not bank.fresh:
            reason = "stale" if bank.observed_at is not None else "nodata"
        elif bank.state == "nodata":
            reason = "nodata"
        elif not any(f.free > 0 for f in free):
            reason = "none_free"
        elif metres > MAX_WALK_M:
            reason = "too_far"
        else:
            reason = None
        judged.append((metres, bank, reason, free))
    outside = bool(judged) and min(j[0] for j in judged) > MAX_WALK_M
    ok = sorted((j for j in judged if j[2] is None), key=lambda j: (j[0], j[1].id))
    not_ok = sorted((j for j in judged if j[2] is not None), key=lambda j: (j[0], j[1].id))
    entries = [_locker_entry(j, size, rank) for rank, j in enumerate(ok[:limit], start=1)]
    if include_unavailable:
        entries += [_locker_entry(j, size, None) for j in not_ok[:limit]]
    note = None
    if not judged:
        note = "the site has no locker banks"
    elif outside:
        nearest = min(judged, key=lambda j: j[0])
        note = (
            f"the destination is outside the site: the nearest bank ({nearest[1].name}) is a"
            f" {_distance(nearest[0])} walk, beyond the {MAX_WALK_M:.0f} m limit"
        )
    elif not ok:
        counts = Counter(j[2] for j in not_ok)
        why = ", ".join(f"{counts[r]} {r}" for r in LOCKER_REASONS if counts[r])
        note = f"no bank with a free {size} or larger compartment: {why}" + (
            "" if include_unavailable else " (include_unavailable=true lists them)"
        )
    return models.LockerGuidance(
        destination=destination.out(),
        size=size,
        outside_site=outside,
        max_walk_m=MAX_WALK_M,
        available=len(ok),
        unavailable=len(not_ok),
        banks=entries,
        note=note,
    )


def _bank_sentence(
    bank: models.LockerBank, reason: models.LockerUnavailableReason, size: CompartmentSize, metres: float
) -> str:
    if reason == "no_size":
        return f"{bank.name} has no compartment of size {size} or larger."
    if reason == "stale":
        return f"{bank.name}: no compartment heard for {bank.age_s or 0:.0f} s (limit {bank.stale_after_s:.0f} s)."
    if reason == "nodata":
        if bank.observed_at is None:
            return f"{bank.name}: no compartment reading heard yet."
        return f"{bank.name}: no compartment reports its state."
    if reason == "none_free":
        return f"{bank.name}: no free compartment of size {size} or larger."
    return f"{bank.name} is a {_distance(metres)} walk, beyond the {MAX_WALK_M:.0f} m limit."


def _locker_entry(
    judged: tuple[float, models.LockerBank, models.LockerUnavailableReason | None, list[models.GuidanceSizeFree]],
    size: CompartmentSize,
    rank: int | None,
) -> models.LockerGuidanceEntry:
    metres, bank, reason, free = judged
    offered = next((f for f in free if f.free > 0), None) if reason is None else None
    minutes = walk_min(metres)
    walk = f"{minutes:.1f} min walk ({metres:.0f} m)"
    if reason is None:
        assert offered is not None
        larger = "" if offered.size == size else f" (no {size} free; {offered.size} is the smallest larger one)"
        reasons = [walk, f"{offered.free} free {offered.size}{larger}"]
        summary = f"{rank}. {bank.name}: {minutes:.0f} min walk, {offered.free} free {offered.size}."
    else:
        why = _bank_sentence(bank, reason, size, metres)
        reasons = [why, walk]
        summary = why
    return models.LockerGuidanceEntry(
        rank=rank,
        available=reason is None,
        reason=reason,
        bank_id=bank.id,
        name=bank.name,
        coords=bank.coords,
        walk_m=metres,
        walk_min=round(minutes, 2),
        size_offered=None if offered is None else offered.size,
        free_of_size=0 if offered is None else offered.free,
        free_fitting=free,
        state=bank.state,
        fresh=bank.fresh,
        data_age_s=bank.age_s,
        reasons=reasons,
        summary=summary,
    )
