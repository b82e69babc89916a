"""Which device may report on which bay, compartment and camera: the site's ownership.

The broker's ACL already binds a topic to an identity: a device may publish
only on ``{prefix}/v1/{site}/{its username}/...`` (``docs/security.md``), and
:func:`contracts.receive` rejects a payload whose ``device_id`` is not the
topic's (``device_mismatch``). What the broker cannot know is which bays a
device is wired to. The site configuration says it:

* ``devices[].lots``: the device reports every bay of these lots;
* ``devices[].levels``: ... every bay of these lot levels (``{lot, level}``);
* ``devices[].lockers``: ... every compartment of these locker banks;
* ``cameras[].device``: the device that runs the camera, and so reports the
  footfall of its lines' zones.

A reading about an entity from a device that does not own it is rejected
with the reason ``not_owner`` (counted like every other reason). So a stolen
bay controller can still lie about its own lot (nothing on the wire can tell),
but not about any other lot, locker bank or camera.

Ownership is enforced per kind of entity once the site declares it for that
kind: bays as soon as any device lists ``lots`` or ``levels``, compartments as
soon as any lists ``lockers``, footfall as soon as the site has ``cameras``.
Within an enforced kind an entity that nobody owns is rejected too (``district
check-config`` reports such a lot or bank). A site that declares none of it
(an old file, a test site) is not checked, and says so once, as a warning,
when its first reading is validated (``SiteConfig.ownership``).

Status messages are about the device itself (its topic is its identity) and
are never checked here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from contracts.messages import FootfallCount, LockerCompartmentState, Message, MessageRejected, ParkingBayState
from contracts.site import SiteConfig

#: The rejection reason of a reading about an entity its device does not own.
NOT_OWNER = "not_owner"


def _names(devices: Iterable[str]) -> str:
    found = sorted(devices)
    return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "") if found else "none"


@dataclass(frozen=True, slots=True)
class Ownership:
    """The owners of a site's entities, indexed for one dict lookup per reading.

    Build it with :meth:`of` (``SiteConfig.ownership`` caches one per site);
    :meth:`check` raises :class:`~contracts.messages.MessageRejected` with
    reason :data:`NOT_OWNER` or returns None.
    """

    #: (lot id, bay id) -> devices that own the bay; None: bays are not checked.
    bays: dict[tuple[str, str], frozenset[str]] | None
    #: locker bank id -> devices that own its compartments; None: compartments are not checked.
    banks: dict[str, frozenset[str]] | None
    #: camera id -> its device; None: footfall is not checked.
    cameras: dict[str, str] | None
    #: zone id -> devices with a camera whose line leads into it (footfall without ``camera_id``).
    zones: dict[str, frozenset[str]]

    @classmethod
    def of(cls, site: SiteConfig) -> Ownership:
        """The ownership the site declares (see the module doc for when a kind is enforced)."""
        bays: dict[tuple[str, str], set[str]] | None = None
        if any(d.lots or d.levels for d in site.devices):
            bays = {(lot.id, bay): set() for lot in site.parking for bay in lot.bay_ids()}
            for device in site.devices:
                for lot_id in device.lots:
                    for bay in site.bays_by_lot.get(lot_id, ()):
                        bays[(lot_id, bay)].add(device.id)
                for ref in device.levels:
                    lot = site.lot(ref.lot)
                    level = lot.level(ref.level) if lot is not None else None
                    for bay in level.bay_ids() if level is not None else ():
                        bays[(ref.lot, bay)].add(device.id)
        banks: dict[str, set[str]] | None = None
        if any(d.lockers for d in site.devices):
            banks = {bank.id: set() for bank in site.lockers}
            for device in site.devices:
                for bank_id in device.lockers:
                    banks.setdefault(bank_id, set()).add(device.id)
        cameras = {cam.id: cam.device for cam in site.cameras} if site.cameras else None
        zones: dict[str, set[str]] = {}
        for cam in site.cameras:
            for line in cam.lines:
                zones.setdefault(line.zone, set()).add(cam.device)
        return cls(
            bays=None if bays is None else {k: frozenset(v) for k, v in bays.items()},
            banks=None if banks is None else {k: frozenset(v) for k, v in banks.items()},
            cameras=cameras,
            zones={k: frozenset(v) for k, v in zones.items()},
        )

    @property
    def enforced(self) -> tuple[str, ...]:
        """The kinds of entity checked: some of ``bays``, ``compartments``, ``footfall``."""
        kinds = (("bays", self.bays), ("compartments", self.banks), ("footfall", self.cameras))
        return tuple(name for name, table in kinds if table is not None)

    def check(self, message: Message) -> None:
        """Reject ``message`` (reason ``not_owner``) if its device does not own what it reports on.

        Call it after the entity checks (:func:`contracts.receive` does): an
        entity the site does not have is ``unknown_entity``, not this.
        """
        device = message.device_id
        if isinstance(message, ParkingBayState) and self.bays is not None:
            owners = self.bays.get((message.lot_id, message.bay_id), frozenset())
            if device not in owners:
                raise MessageRejected(
                    NOT_OWNER,
                    f"device {device!r} does not own bay {message.bay_id!r} of lot {message.lot_id!r}"
                    f" (owners: {_names(owners)})",
                )
        elif isinstance(message, LockerCompartmentState) and self.banks is not None:
            owners = self.banks.get(message.bank_id, frozenset())
            if device not in owners:
                raise MessageRejected(
                    NOT_OWNER,
                    f"device {device!r} does not own locker bank {message.bank_id!r} (owners: {_names(owners)})",
                )
        elif isinstance(message, FootfallCount) and self.cameras is not None:
            if message.camera_id is not None:
                owner = self.cameras.get(message.camera_id)
                if owner != device:
                    raise MessageRejected(
                        NOT_OWNER,
                        f"device {device!r} does not run camera {message.camera_id!r}"
                        + (f" (it is {owner!r}'s)" if owner else " (the site has no such camera)"),
                    )
            owners = self.zones.get(message.zone_id, frozenset())
            if device not in owners:
                raise MessageRejected(
                    NOT_OWNER,
                    f"device {device!r} runs no camera counting zone {message.zone_id!r}"
                    f" (cameras of: {_names(owners)})",
                )
