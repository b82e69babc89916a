"""Response models of the analytics API (``docs/analytics.md``): cells with their interval, counts and k-rule state."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from server.analytics.privacy import CellState
from server.models import HistoryWindow
from server.models import Privacy as Privacy  # re-exported: analytics and history share it


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Cell(_Out):
    """One published figure: the interval it covers, the counts it stands on, and its k-rule state."""

    start: datetime = Field(description="Start of the interval the figure covers (local time with offset).")
    end: datetime = Field(description="End, exclusive. A `coarsened` cell spans several buckets.")
    label: str | None = Field(
        description="For a slice of the window rather than an interval of it: the local hour (`00`-`23`), the"
        " weekday (`monday`...), the lag in hours, or the comparison (`week_on_week`)."
    )
    state: CellState = Field(
        description="`ok`: rests on at least k people; `coarsened`: merged with neighbouring buckets into a wider"
        " interval to reach k; `suppressed`: fewer than k people even so, value and counts withheld (never 0);"
        " `nodata`: nothing was counted in the interval."
    )
    value: float | None = Field(description="The figure, in the unit its series names; null unless ok/coarsened.")
    counts: dict[str, float] | None = Field(
        description="The counts the figure is computed from (people, person-seconds, days...); null when withheld."
    )


class ZonePeakProfile(_Out):
    """Hour-of-day and day-of-week profiles of a zone's entries, and the peak hour and day."""

    zone_id: str
    name: str
    window: HistoryWindow
    privacy: Privacy
    unit: str = Field(description="Unit of every `value`.")
    hours: list[Cell] = Field(description="24 cells, label `00`..`23` (local hour): mean entries per day in it.")
    days: list[Cell] = Field(description="7 cells, Monday first: mean entries per day on that weekday.")
    peak_hour: str | None = Field(description="The published hour with the highest value (earliest on a tie).")
    peak_day: str | None = Field(description="The published weekday with the highest value.")


class LotPeakProfile(_Out):
    """Hour-of-day and day-of-week profiles of a lot's occupied bays, and the peak hour and day."""

    lot_id: str
    name: str
    total: int = Field(description="Bays in the site configuration.")
    window: HistoryWindow
    privacy: Privacy
    unit: str
    hours: list[Cell]
    days: list[Cell]
    peak_hour: str | None
    peak_day: str | None


class Change(_Out):
    """A week against the week before and against the same week 52 weeks (364 days) earlier."""

    id: str
    name: str
    measure: str = Field(description="What is compared: `entries` (zone) or `occupied_mean` (lot).")
    privacy: Privacy
    timezone: str
    periods: list[Cell] = Field(description="`current`, `previous_week`, `previous_year`: the measure in each.")
    changes: list[Cell] = Field(
        description="`week_on_week`, `year_on_year`: percent change of the current week against each."
    )


class CaptureRate(_Out):
    """A zone's capture rate per bucket and over the window: entries / passers-by on its street line."""

    zone_id: str
    name: str
    street_line: dict[str, str] = Field(description="The `camera` and `line` counting the passers-by.")
    window: HistoryWindow
    privacy: Privacy
    unit: str
    buckets: list[Cell]
    total: Cell


class DwellTime(_Out):
    """A zone's mean dwell time by Little's law per bucket and over the window."""

    zone_id: str
    name: str
    window: HistoryWindow
    privacy: Privacy
    unit: str
    assumptions: list[str]
    buckets: list[Cell]
    total: Cell


class Flow(_Out):
    """People crossing from one zone into a neighbour on the lines the two share."""

    from_zone: str
    to_zone: str
    lines: list[str] = Field(description="`camera/line` of each boundary line counted.")
    buckets: list[Cell]
    total: Cell


class Flows(_Out):
    window: HistoryWindow
    privacy: Privacy
    unit: str
    flows: list[Flow] = Field(description="Both directions of every pair of zones that share a counted line.")


class LagOut(_Out):
    lag_h: int
    r: float


class ParkingFootfall(_Out):
    """Arrivals at an area's lots against entries into its zones, hour by hour, and the lag that relates them best."""

    area_id: str
    name: str | None
    lots: list[str]
    zones: list[str]
    window: HistoryWindow
    privacy: Privacy
    arrivals: Cell = Field(description="Vehicles: arrivals at the lots over the window.")
    arrivals_method: Literal["counted", "net_rise", "mixed"] | None = Field(
        description="`counted`: bays gone free -> occupied, counted by the gateway; `net_rise`: rises of occupied"
        " bays between 5-minute snapshots (older data without the count; a lower bound, biased where cars turn"
        " over fast); `mixed`: some lots each way; null: no lot data."
    )
    entries: Cell = Field(description="People: entries into the zones over the window.")
    lags: list[Cell] = Field(
        description="label = lag in hours; value = Pearson's r of arrivals at hour t and entries at t + lag."
    )
    best: LagOut | None = Field(description="The published lag with the highest r; null if none.")


class AreaOut(_Out):
    id: str
    name: str | None
    lots: list[str]
    zones: list[str]


class ZoneOut(_Out):
    id: str
    name: str
    street_line: dict[str, str] | None


class LotOut(_Out):
    id: str
    name: str


class BoundaryOut(_Out):
    from_zone: str
    to_zone: str
    lines: list[str]


class AnalyticsIndex(_Out):
    """What the site's analytics cover: its zones, lots, boundary lines and areas, and k."""

    privacy: Privacy
    timezone: str
    zones: list[ZoneOut]
    lots: list[LotOut]
    boundaries: list[BoundaryOut]
    areas: list[AreaOut]
