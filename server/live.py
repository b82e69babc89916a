"""In-memory live state of one site: the stores of :mod:`server.stores`, behind one door.

Displays ask "how many bays are free now" many times a second; InfluxDB
answers ``last()`` over thousands of series in about half a second, so the
answer is kept here, fed by the MQTT stream (:mod:`server.stream`, through
:meth:`LiveState.apply`) and bootstrapped from InfluxDB at start
(:mod:`server.dbmonitor`, through each store's ``load_history``).

One store per resource: bays (:mod:`server.stores.bays`), locker compartments
(:mod:`server.stores.lockers`), zones from footfall (:mod:`server.stores.zones`)
and devices (:mod:`server.stores.devices`). The ordering and freshness rules
they share are in :mod:`server.stores.base`: readings ordered in the device's
own order, freshness judged on our clock (device time corrected by its
estimated clock offset), staleness judged when asked.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from contracts import DeviceStatus, FootfallCount, LockerCompartmentState, Message, ParkingBayState, storage, utcnow
from contracts.site import SiteConfig
from server import models
from server.stores.base import MAX_FUTURE_S, MAX_SAME_TIME_IDS, Clock, ClockOffsets, HistoryFed, Reading
from server.stores.bays import BayStore, Tally, render_lot, summarize_lot, tally
from server.stores.devices import DeviceRecord, DeviceStore
from server.stores.lockers import LockerStore
from server.stores.zones import ZoneStore

log = logging.getLogger(__name__)

#: The first name of a bay's reading; every entity store holds :class:`Reading`.
BayReading = Reading
ns_to_datetime = storage.from_ns

__all__ = [
    "MAX_FUTURE_S",
    "MAX_SAME_TIME_IDS",
    "BayReading",
    "Clock",
    "ClockOffsets",
    "DeviceRecord",
    "LiveState",
    "Reading",
    "Tally",
    "ns_to_datetime",
    "render_lot",
    "summarize_lot",
    "tally",
]


class LiveState:
    """Every live store of one site; thread-safe (each store has its lock)."""

    def __init__(self, site: SiteConfig, clock: Clock = utcnow, *, max_future_s: float = MAX_FUTURE_S) -> None:
        self.site = site
        self.clock = clock
        self.max_future_s = max_future_s
        self.clocks = ClockOffsets()
        self.bays = BayStore(site, clock, max_future_s=max_future_s)
        self.lockers = LockerStore(site, clock, max_future_s=max_future_s)
        self.zones = ZoneStore(site)
        self.device_store = DeviceStore(site)
        #: The stores :mod:`server.dbmonitor` bootstraps, gap-fills and catches up, in this order.
        self.stores: tuple[HistoryFed, ...] = (self.bays, self.lockers, self.zones, self.device_store)
        #: Called (from the MQTT thread) after any reading changed a store: displays recompute.
        self.listeners: list[Callable[[str], None]] = []

    # -- writes ------------------------------------------------------------

    def apply(self, message: Message, received_at: datetime | None = None, *, retained: bool = False) -> bool:
        """Apply one validated live message (arrived at ``received_at``, our clock; default now)."""
        received_at = received_at or self.clock()
        if isinstance(message, DeviceStatus):
            self.apply_device_status(message, received_at, retained=retained)
            return True
        heard = self.heard(message.device_id, message.observed_at, received_at)
        self.device_store.heard_from(message.device_id, heard)
        if isinstance(message, ParkingBayState):
            changed, resource = self.bays.apply_message(message, heard), "bays"
        elif isinstance(message, LockerCompartmentState):
            changed, resource = self.lockers.apply_message(message, heard), "lockers"
        elif isinstance(message, FootfallCount):
            changed, resource = self.zones.apply_message(message, heard), "zones"
        else:  # pragma: no cover - every contract kind is handled above
            return False
        if changed:
            self.notify(resource)
        return changed

    def notify(self, resource: str) -> None:
        for listener in self.listeners:
            try:
                listener(resource)
            except Exception:
                log.exception("live-state listener failed")

    def apply_bay(self, lot_id: str, bay_id: str, reading: Reading) -> bool:
        """Offer a bay reading; return True if it became the bay's state."""
        changed = self.bays.apply(lot_id, bay_id, reading)
        if changed:
            self.notify("bays")
        return changed

    def apply_message(self, message: ParkingBayState, received_at: datetime | None = None) -> bool:
        """Apply a bay reading that arrived live at ``received_at`` (our clock; default now)."""
        return self.apply(message, received_at)

    def heard(self, device_id: str, observed_at: datetime, received_at: datetime) -> float:
        """When a live reading was observed, on our clock (POSIX s)."""
        return self.clocks.heard(device_id, observed_at, received_at)

    def apply_device_status(
        self, status: DeviceStatus, received_at: datetime | None = None, *, retained: bool = False
    ) -> None:
        received_at = received_at or self.clock()
        received_ts = received_at.timestamp()
        observed_ts = status.observed_at.timestamp()
        if status.state == "offline":
            # A will carries its connect time, and says the device is gone, not that it was heard.
            heard = float("-inf")
        elif retained:
            # Judged by its own time, not by when the broker handed it over (bugcase 02).
            heard = min(received_ts, observed_ts + self.clocks.all().get(status.device_id, 0.0))
        else:
            # A live heartbeat is a clean clock sample.
            heard = self.clocks.heard(status.device_id, status.observed_at, received_at)
        self.device_store.apply(DeviceRecord(status, received_at, retained), heard)
        self.notify("devices")

    def clear_device_status(self, device_id: str) -> bool:
        """Forget a device's status (its retained status was cleared); True if there was one."""
        cleared = self.device_store.clear(device_id)
        if cleared:
            self.notify("devices")
        return cleared

    # -- reads -------------------------------------------------------------

    @property
    def counts(self) -> Counter[str]:
        """What happened to offered bay readings: applied, superseded, unknown_bay, future."""
        return self.bays.counts

    def clock_offsets(self) -> dict[str, float]:
        """Each device's estimated clock offset in seconds (our clock minus the device's)."""
        return self.clocks.all()

    def bay(self, lot_id: str, bay_id: str) -> Reading | None:
        return self.bays.get(lot_id, bay_id)

    def bay_count(self) -> int:
        return self.bays.count()

    def devices(self) -> dict[str, DeviceRecord]:
        return self.device_store.all()

    def device_health(self, now: datetime | None = None) -> list[models.DeviceOut]:
        """Every device's judged health (:mod:`server.stores.devices`): configured ones first."""
        return self.device_store.health(now or self.clock(), self.clocks.all())

    def device(self, device_id: str, now: datetime | None = None) -> models.DeviceOut | None:
        return self.device_store.one(device_id, now or self.clock(), self.clocks.all())

    def lot(self, lot_id: str, now: datetime | None = None) -> models.ParkingLot | None:
        return self.bays.lot(lot_id, now or self.clock())

    def lots(self, now: datetime | None = None) -> list[models.ParkingLot]:
        """Every lot, in site-configuration order, all judged at one instant."""
        return self.bays.lots(now or self.clock())

    def locker_banks(self, now: datetime | None = None) -> list[models.LockerBank]:
        return self.lockers.banks(now or self.clock())

    def locker_bank(self, bank_id: str, now: datetime | None = None) -> models.LockerBank | None:
        return self.lockers.bank(bank_id, now or self.clock())

    def crowd(self, now: datetime | None = None) -> list[models.ZoneCrowd]:
        return self.zones.zones(now or self.clock(), self.device_store.camera_states())

    def zone(self, zone_id: str, now: datetime | None = None) -> models.ZoneCrowd | None:
        return self.zones.zone(zone_id, now or self.clock(), self.device_store.camera_states())
