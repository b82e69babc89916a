"""History: the derived points the gateway adds, and the rollups InfluxDB keeps of them (the third contract).

Raw readings (:mod:`contracts.storage`) say what one bay or compartment did;
history asks what a *lot* or a *bank* did, which is not an aggregate of the
raw points: bays report on change plus a refresh, each at its own rate, so a
mean of per-point ``occupied`` values weighs a bay by how often it spoke. A
lot's occupancy at time t is the sum over its bays of each bay's last state
at t. The gateway knows every bay's last state, so it writes that sum:

* :data:`M_LOT_OCCUPANCY` (tags ``site``, ``lot``): ``free``, ``occupied``,
  ``unknown`` bays, one point per lot at each snapshot boundary (every
  minute, in device time). ``unknown`` counts bays with no fresh
  free/occupied reading (never heard, older than the lot's
  ``stale_after_s``, ``closed`` or ``unknown``), so the three add up to the
  lot's configured bays, as in the live API; and ``arrivals``: the bays
  that went free -> occupied (a vehicle parked) among the readings applied
  since the previous snapshot (footfall analytics, ``docs/analytics.md``;
  absent from points written before it existed).
* :data:`M_LOCKER_OCCUPANCY` (tags ``site``, ``bank``): ``free``,
  ``occupied``, ``out_of_service``, ``unknown`` compartments, the same way.
* :data:`M_LOCKER_TRANSITION` (tags ``site``, ``bank``, ``compartment``): one
  point per state change the gateway saw, at the reading that showed it:
  ``deposits`` 1 when a compartment went free -> occupied, ``pickups`` 1 when
  it went occupied -> free, with ``dwell_s`` (seconds since the deposit) when
  the deposit was seen too.

Footfall (``footfall``, one point per line and interval) and zone occupancy
(``zone_occupancy``) are rolled up as stored.

Rollups: for each :class:`RollupSpec` and each :data:`ROLLUPS` interval, a
continuous query writes one point per group and interval into the retention
policy named by the interval (:data:`RP_5M`, :data:`RP_1H`), under the same
measurement name. Every rollup field is a sum, a count, a minimum or a
maximum, never a mean: those combine exactly into coarser buckets and across
a rollup/raw seam (a mean is ``*_sum / samples`` at read time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from contracts import storage
from contracts.storage import FieldValue, StoredPoint

#: Derived points (written by the gateway next to the raw readings, in the same retention policy).
M_LOT_OCCUPANCY = "lot_occupancy"
M_LOCKER_OCCUPANCY = "locker_occupancy"
M_LOCKER_TRANSITION = "locker_transition"

#: Fields of the derived points.
F_FREE = "free"
F_OCCUPIED = "occupied"
F_UNKNOWN = "unknown"
F_OUT_OF_SERVICE = "out_of_service"
F_DEPOSITS = "deposits"
F_PICKUPS = "pickups"
F_DWELL_S = "dwell_s"
F_ARRIVALS = "arrivals"

#: Retention policies of the rollups (the raw readings stay in the database's default policy).
RP_5M = "rollup_5m"
RP_1H = "rollup_1h"

#: The count every rollup of a snapshot measurement carries: how many snapshots its bucket holds.
SAMPLES = "samples"


@dataclass(frozen=True, slots=True)
class Rollup:
    """One rollup resolution: its name (``5m``, ``1h``), bucket length in seconds and retention policy."""

    name: str
    seconds: int
    rp: str

    @property
    def influx_duration(self) -> str:
        """The bucket length as an InfluxQL duration literal (``5m``, ``1h``)."""
        return self.name


ROLLUP_5M = Rollup("5m", 300, RP_5M)
ROLLUP_1H = Rollup("1h", 3600, RP_1H)
#: Finest first.
ROLLUPS = (ROLLUP_5M, ROLLUP_1H)

AggregateFunc = Literal["sum", "count", "min", "max"]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``func(field) AS alias`` over raw points; :attr:`again` combines aliases of finer buckets."""

    func: AggregateFunc
    field: str
    alias: str

    @property
    def again(self) -> AggregateFunc:
        """How rolled-up values combine into a coarser bucket: sums and counts add up, min/max stay."""
        return "sum" if self.func in ("sum", "count") else self.func


@dataclass(frozen=True, slots=True)
class RollupSpec:
    """What is rolled up of one raw measurement: grouped by ``tags``, one field per aggregate."""

    measurement: str
    tags: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(a.alias for a in self.aggregates)


def _stats(*fields: str) -> tuple[Aggregate, ...]:
    """sum/min/max of each field and the snapshot count: means, minima and maxima per bucket."""
    out: list[Aggregate] = []
    for name in fields:
        out += [Aggregate("sum", name, f"{name}_sum"), Aggregate("min", name, f"{name}_min")]
        out.append(Aggregate("max", name, f"{name}_max"))
    out.append(Aggregate("count", fields[0], SAMPLES))
    return tuple(out)


LOT_OCCUPANCY = RollupSpec(
    M_LOT_OCCUPANCY,
    (storage.TAG_SITE, storage.TAG_LOT),
    (*_stats(F_FREE, F_OCCUPIED, F_UNKNOWN), Aggregate("sum", F_ARRIVALS, F_ARRIVALS)),
)
LOCKER_OCCUPANCY = RollupSpec(
    M_LOCKER_OCCUPANCY, (storage.TAG_SITE, storage.TAG_BANK), _stats(F_OCCUPIED, F_FREE, F_OUT_OF_SERVICE, F_UNKNOWN)
)
LOCKER_TRANSITIONS = RollupSpec(
    M_LOCKER_TRANSITION,
    (storage.TAG_SITE, storage.TAG_BANK),
    (
        Aggregate("sum", F_DEPOSITS, F_DEPOSITS),
        Aggregate("sum", F_PICKUPS, F_PICKUPS),
        Aggregate("sum", F_DWELL_S, "dwell_sum"),
        Aggregate("count", F_DWELL_S, "dwell_count"),
    ),
)
FOOTFALL = RollupSpec(
    storage.M_FOOTFALL,
    (storage.TAG_SITE, storage.TAG_ZONE, storage.TAG_CAMERA, storage.TAG_LINE),
    (Aggregate("sum", storage.F_TOWARDS, storage.F_TOWARDS), Aggregate("sum", storage.F_AWAY, storage.F_AWAY)),
)
ZONE_OCCUPANCY = RollupSpec(
    storage.M_ZONE_OCCUPANCY, (storage.TAG_SITE, storage.TAG_ZONE, storage.TAG_CAMERA), _stats(storage.F_OCCUPANCY)
)
#: Everything rolled up, in the order the continuous queries are created.
ROLLUP_SPECS = (LOT_OCCUPANCY, LOCKER_OCCUPANCY, LOCKER_TRANSITIONS, FOOTFALL, ZONE_OCCUPANCY)


def lot_occupancy_point(
    *, site_id: str, lot_id: str, free: int, occupied: int, unknown: int, time_ns: int, arrivals: int | None = None
) -> StoredPoint:
    """One lot snapshot (see the module docstring); ``time_ns`` is the snapshot boundary.

    ``arrivals``: bays gone free -> occupied since the previous snapshot (None: not counted, no field).
    """
    fields: dict[str, FieldValue] = {F_FREE: free, F_OCCUPIED: occupied, F_UNKNOWN: unknown}
    if arrivals is not None:
        fields[F_ARRIVALS] = arrivals
    return StoredPoint(M_LOT_OCCUPANCY, {storage.TAG_SITE: site_id, storage.TAG_LOT: lot_id}, fields, time_ns)


def locker_occupancy_point(
    *, site_id: str, bank_id: str, free: int, occupied: int, out_of_service: int, unknown: int, time_ns: int
) -> StoredPoint:
    """One locker bank snapshot; ``time_ns`` is the snapshot boundary."""
    fields: dict[str, FieldValue] = {
        F_FREE: free,
        F_OCCUPIED: occupied,
        F_OUT_OF_SERVICE: out_of_service,
        F_UNKNOWN: unknown,
    }
    return StoredPoint(M_LOCKER_OCCUPANCY, {storage.TAG_SITE: site_id, storage.TAG_BANK: bank_id}, fields, time_ns)


def locker_transition_point(
    *, site_id: str, bank_id: str, compartment_id: str, deposit: bool, dwell_s: float | None, time_ns: int
) -> StoredPoint:
    """A deposit (``deposit``) or a pickup (with its ``dwell_s`` when known) at the reading's ``time_ns``."""
    fields: dict[str, FieldValue] = {F_DEPOSITS: int(deposit), F_PICKUPS: int(not deposit)}
    if dwell_s is not None and not deposit:
        fields[F_DWELL_S] = float(dwell_s)
    tags = {storage.TAG_SITE: site_id, storage.TAG_BANK: bank_id, storage.TAG_COMPARTMENT: compartment_id}
    return StoredPoint(M_LOCKER_TRANSITION, tags, fields, time_ns)
