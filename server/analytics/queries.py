"""The reads of footfall analytics: aggregate counts per bucket, from the rollups wherever they reach.

Everything here goes through :func:`server.history.read_buckets` (rollups up
to their newest bucket, raw points after; local buckets in the site's time
zone; ``docs/history.md``), so analytics read exactly what history shows and
stay fast on long spans (hourly rollups for hours and days). Only aggregate
measurements are read: ``footfall`` (crossings per line and interval,
FIWARE CrowdFlowObserved ``peopleCountTowards``/``Away``) and
``lot_occupancy`` (the gateway's per-minute lot snapshots). Never a track.

Each function returns per-bucket numbers keyed by the bucket's start
(ns since the epoch, UTC) for the buckets that have data, plus the sources
read. Raises :class:`common.influxdb.InfluxError` when InfluxDB fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts import history as names
from contracts import storage
from contracts.site import SiteConfig
from server import history
from server.history import Window
from server.influx import InfluxClient


@dataclass(slots=True)
class Series:
    """Bucket start (ns) -> values; ``sources`` the history sources read (``rollup_1h``, ``rollup_5m``, ``raw``)."""

    values: dict[int, tuple[float, float]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def add_sources(self, more: list[str]) -> None:
        self.sources += [s for s in more if s not in self.sources]


def _pairs(found: Mapping[int, Mapping[str, float | int | None]], a: str, b: str) -> dict[int, tuple[float, float]]:
    return {at: (float(history.as_int(v.get(a))), float(history.as_int(v.get(b)))) for at, v in found.items()}


async def line_counts(client: InfluxClient, site_id: str, camera: str, line: str, window: Window) -> Series:
    """(towards, away) crossings of one camera line per bucket (people)."""
    tags = {storage.TAG_SITE: site_id, storage.TAG_CAMERA: camera, storage.TAG_LINE: line}
    found = await history.read_buckets(client, names.FOOTFALL, window, tags)
    out = Series(_pairs(found.of(), storage.F_TOWARDS, storage.F_AWAY))
    out.add_sources(found.sources)
    return out


async def zone_counts(client: InfluxClient, site: SiteConfig, zone_id: str, window: Window) -> Series:
    """(entries, exits) of a zone per bucket (people), over every line that is one of its doors.

    Entries: ``towards`` on the lines leading into the zone, plus ``away`` on
    the boundary lines leading out of it into a neighbour (``from_zone`` is
    this zone); exits the other way round. A bucket where none of these lines
    reported is absent (no data), not 0.
    """
    tags = {storage.TAG_SITE: site.site.id, storage.TAG_ZONE: zone_id}
    found = await history.read_buckets(client, names.FOOTFALL, window, tags)
    out = Series(_pairs(found.of(), storage.F_TOWARDS, storage.F_AWAY))
    out.add_sources(found.sources)
    for (source, _), lines in site.boundaries.items():
        if source != zone_id:
            continue
        for camera, line in lines:
            other = await line_counts(client, site.site.id, camera, line, window)
            out.add_sources(other.sources)
            for at, (towards, away) in other.values.items():
                n, x = out.values.get(at, (0.0, 0.0))
                out.values[at] = (n + away, x + towards)
    return out


async def lot_occupied(client: InfluxClient, site_id: str, lot_id: str, window: Window) -> Series:
    """(mean, max) occupied bays of a lot per bucket (vehicles), from the gateway's lot snapshots."""
    tags = {storage.TAG_SITE: site_id, storage.TAG_LOT: lot_id}
    found = await history.read_buckets(client, names.LOT_OCCUPANCY, window, tags)
    out = Series()
    for at, v in found.of().items():
        m = history.mean(v, f"{names.F_OCCUPIED}_sum", names.SAMPLES)
        top = v.get(f"{names.F_OCCUPIED}_max")
        if m is not None and isinstance(top, int | float):
            out.values[at] = (float(m), float(top))
    out.add_sources(found.sources)
    return out


async def lot_arrivals(client: InfluxClient, site_id: str, lot_id: str, window: Window) -> Series:
    """(arrivals, 0) per bucket (vehicles): bays gone free -> occupied, as the gateway counted them in its
    lot snapshots; buckets whose snapshots carry no count (written before it existed) are absent."""
    tags = {storage.TAG_SITE: site_id, storage.TAG_LOT: lot_id}
    found = await history.read_buckets(client, names.LOT_OCCUPANCY, window, tags)
    out = Series()
    for at, v in found.of().items():
        n = v.get(names.F_ARRIVALS)
        if isinstance(n, int | float):
            out.values[at] = (float(n), 0.0)
    out.add_sources(found.sources)
    return out
