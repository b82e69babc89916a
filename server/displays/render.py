"""What a sign shows, from its sources' live state: pure rules, no I/O.

:func:`gather` reads a display's sources from :class:`~server.live.LiveState`
into :class:`SourceView` values; :func:`render` turns them (and an operator
:class:`Override`, if one is in force) into a :class:`Rendered` sign. The
order of the rules is the documentation (docs/displays.md, "Rendering"):

1. an override in force: ``blank`` (nothing), ``text`` (its text), ``test``
   (:data:`TEST_PATTERN`), ``full`` (``full_text``, 0), ``closed``
   (``closed_text``, 0);
2. ``closed`` in the display's configuration, or every source lot closed:
   ``closed_text`` and 0;
3. stale (some source's newest reading older than ``stale_after_s``, or never
   heard) or untrusted (fewer than ``trust_share`` of the sources' bays
   reporting, or a zone without data): the fallback, never a number. A bay
   reports for a sign only while heard within the shorter of its lot's and the
   sign's limits, and only such bays are summed;
4. the sum of free spaces (people), plus ``offset``, clamped to
   [``min_value``, ``max_value``];
5. spaces: at or below ``full_threshold`` ``full_text``, at or below
   ``low_threshold`` ``low_text``, else the number; people: the crowd level of
   the most crowded zone (``LOW`` … ``VERY HIGH``), the number without one.

People and the k rule (issue 14; docs/displays.md): a zone's occupancy under
k people is not published (:mod:`server.stores.zones`), so it reaches the
sign as ``suppressed``, not as a missing reading; a published one is rounded
to a multiple of k. A people sign's value is the sum only when every zone's
occupancy is published (each at least k, so the sum is too, and no zone's
hidden count can be had by subtracting the others from it); otherwise the
value is null and the sign shows the level text, or, with no level to show,
its fallback: never 0 for a hidden count. The sum is of the *published*
occupancies, not the exact sum rounded: a sum of multiples of k is one
itself, so two values of a sign differ by 0 or at least k people, and the
sign tells nothing the zones' published figures do not (the exact sum,
rounded, would: beside two zones shown as 10 and 10, i.e. 10-14 each, a
sum shown as 30 would say they hold 25-28 together).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from contracts.site import Display, SiteConfig
from server import models
from server.live import LiveState

#: What a ``test`` override shows: every segment of a four-digit count display lit.
TEST_PATTERN = 8888
#: A people sign's text for a crowd level.
LEVEL_TEXT: dict[str, str] = {"low": "LOW", "moderate": "MODERATE", "high": "HIGH", "very_high": "VERY HIGH"}
_LEVEL_ORDER = ("low", "moderate", "high", "very_high")


@dataclass(frozen=True, slots=True)
class Override:
    """An operator mode in force until ``until`` (POSIX s)."""

    mode: models.OverrideMode
    text: str | None
    until: float
    by: str
    reason: str | None
    set_at: float


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source of a sign at one instant."""

    id: str
    kind: Literal["lot", "level", "zone"]
    #: Free spaces or people; None when a zone has no data.
    value: int | None
    #: Bays (lot, level) or the zone's capacity (0 when it has none).
    capacity: int
    #: Trust: ``reporting`` of ``weight`` report fresh data (bays; 1 of 1 for a zone with data).
    reporting: int
    weight: int
    #: Seconds since its newest reading was heard (our clock), None if never.
    age_s: float | None
    closed: bool = False
    level: models.CrowdLevel | None = None
    #: A zone whose occupancy is under k people: value None, yet the zone has data.
    suppressed: bool = False


@dataclass(frozen=True, slots=True)
class Rendered:
    """A sign at one instant. ``key`` is what the sign shows: a change of it is an event."""

    value: int | None
    text: str
    mode: models.DisplayMode
    state: models.DisplaySignState
    stale: bool
    trusted: bool
    trust: float
    data_age_s: int | None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.value, self.text, self.mode, self.state, self.stale, self.trusted)


def whole_seconds(age_s: float | None) -> int | None:
    return None if age_s is None else int(max(0.0, age_s))


def render(display: Display, sources: Sequence[SourceView], override: Override | None = None) -> Rendered:
    """The sign ``display`` shows given ``sources`` and ``override`` (already known to be in force)."""
    ages = [s.age_s for s in sources]
    age = None if not ages or any(a is None for a in ages) else max(a for a in ages if a is not None)
    stale = age is None or age > display.stale_limit_s
    weight = sum(s.weight for s in sources)
    reporting = sum(s.reporting for s in sources)
    trust = round(reporting / weight, 4) if weight else 0.0
    # Exact in integers: reporting / weight >= trust_share, without float rounding at the boundary.
    trusted = weight > 0 and reporting >= math.ceil(display.trust_share * weight - 1e-9)
    if any(s.value is None and not s.suppressed for s in sources):
        trusted = False  # a zone without data: the sum would leave it out
    data_age_s = whole_seconds(age)

    def sign(value: int | None, text: str, mode: models.DisplayMode, state: models.DisplaySignState) -> Rendered:
        return Rendered(value, text, mode, state, stale, trusted, trust, data_age_s)

    if override is not None:
        mode = override.mode
        if mode == "blank":
            return sign(None, "", mode, "blank")
        if mode == "text":
            return sign(None, override.text or "", mode, "text")
        if mode == "test":
            return sign(TEST_PATTERN, str(TEST_PATTERN), mode, "test")
        if mode == "full":
            return sign(0, display.full_text, mode, "full")
        return sign(0, display.closed_text, mode, "closed")

    lots = [s for s in sources if s.kind in ("lot", "level")]
    if display.closed or (lots and all(s.closed for s in lots)):
        return sign(0, display.closed_text, "auto", "closed")
    if stale or not trusted:
        text = display.fallback_text if display.fallback == "text" else ""
        return sign(None, text, "auto", "fallback")
    total = sum(s.value for s in sources if s.value is not None)
    value = min(max(total + display.offset, display.min_value), display.max_value)
    if display.shows == "people":
        shown = None if any(s.suppressed for s in sources) else value
        levels = [s.level for s in sources if s.level in LEVEL_TEXT]
        if levels:
            worst = max(levels, key=_LEVEL_ORDER.index)
            return sign(shown, LEVEL_TEXT[worst], "auto", "open")
        if shown is None:  # under k people and no level to show: the fallback, never 0
            return sign(None, display.fallback_text if display.fallback == "text" else "", "auto", "fallback")
        return sign(value, str(value), "auto", "open")
    if value <= display.full_threshold:
        return sign(value, display.full_text, "auto", "full")
    if display.low_threshold is not None and value <= display.low_threshold:
        return sign(value, display.low_text, "auto", "low")
    return sign(value, str(value), "auto", "open")


def gather(site: SiteConfig, live: LiveState, display: Display, now: datetime) -> list[SourceView]:
    """The display's sources at ``now``: each lot, each level (of a lot not summed whole), each zone."""
    now_ts = now.timestamp()
    out: list[SourceView] = []
    for lot_id in display.lots:
        lot = site.lot(lot_id)
        if lot is None:
            continue
        # A bay reports for the sign only while heard within the shorter of the lot's and the sign's
        # limits: one fresh reading must not make the sign trust bays it has not heard for minutes.
        t = live.bays.lot_tally(lot_id, now, min(lot.stale_after_s, display.stale_limit_s))
        if t is None:
            continue
        total = len(site.bays_by_lot[lot_id])
        age = None if t.newest is None else max(0.0, now_ts - t.newest.heard)
        out.append(SourceView(lot_id, "lot", t.free, total, t.known, total, age, lot.closed))
    for ref in display.levels:
        if ref.lot in display.lots:
            continue  # its bays are summed with the whole lot already
        lot = site.lot(ref.lot)
        level = lot.level(ref.level) if lot else None
        if lot is None or level is None:
            continue
        t = live.bays.level_tally(ref.lot, ref.level, now, min(lot.stale_after_s, display.stale_limit_s))
        if t is None:
            continue
        total = len(set(level.bay_ids()))
        age = None if t.newest is None else max(0.0, now_ts - t.newest.heard)
        out.append(SourceView(f"{ref.lot}/{ref.level}", "level", t.free, total, t.known, total, age, lot.closed))
    for zone_id in display.zones:
        crowd = live.zone(zone_id, now)
        if crowd is None:
            continue
        suppressed = crowd.state == "ok" and crowd.occupancy_state == "suppressed"
        ok = crowd.state == "ok" and (crowd.occupancy is not None or suppressed)
        out.append(
            SourceView(
                zone_id,
                "zone",
                crowd.occupancy if ok else None,
                crowd.capacity or 0,
                1 if ok else 0,
                1,
                crowd.age_s,
                level=crowd.level if ok else None,
                suppressed=suppressed,
            )
        )
    return out
