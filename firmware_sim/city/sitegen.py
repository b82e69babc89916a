"""A scaled site file: N lots, locker banks and cameras, each with its own device.

``city_site(CityShape())`` builds the site configuration as a plain dict (what
``yaml.safe_dump`` writes and :class:`contracts.site.SiteConfig` validates);
``write_site`` writes it. The default shape is the city of issue 13: 10,000
bays in 50 lots, 500 locker banks of 20 compartments (10,000), 50 cameras with
two counting lines each, one zone per camera; 600 devices in all (one bay
controller per lot, one locker controller per bank, one camera node per camera).

Lot types cycle through ParkAPI's kinds so each lot gets the demand curve of a
real lot of its type (:data:`CURVES_BY_TYPE`); each camera replays one of the
21 Auckland pedestrian sensors (:mod:`firmware_sim.city.footfall`), named in
the camera's ``name``. Ids are ``lot-000``, ``bank-000``, ``cam-00``, ``zone-00``;
devices are ``dev-lot-000``, ``dev-bank-000``, ``dev-cam-00`` (a device id is
its broker username, so ``district provision --site city.yaml`` issues one
identity each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contracts.site import SiteConfig

#: ParkAPI Dresden curves (``forecast_data/<id>.csv``) standing in for each lot type: the garage is
#: Centrum-Galerie (a shopping-centre garage), the underground lots the old-town garages, the surface
#: and street lots the two with the flattest weekday shape. Lot ``i`` of a type takes curve ``i % n``.
CURVES_BY_TYPE: dict[str, tuple[str, ...]] = {
    "garage": ("dresdencentrumgalerie",),
    "underground": ("dresdenaltmarkt", "dresdenwoehrlflorentinum"),
    "surface": ("dresdencitycenter",),
    "street": ("dresdenkarstadt",),
}
LOT_TYPES = ("garage", "underground", "surface", "street")
#: Compartment sizes of one bank, in order, as shares of its compartments.
SIZE_SHARES = (("S", 0.4), ("M", 0.4), ("L", 0.2))
CENTRE = (51.05, 13.74)  # Dresden's old town: the demand curves are Dresden's


@dataclass(frozen=True)
class CityShape:
    """How big a city to generate. Defaults: issue 13's city."""

    site_id: str = "city"
    bays: int = 10_000
    lots: int = 50
    banks: int = 500
    compartments_per_bank: int = 20
    cameras: int = 50
    lines_per_camera: int = 2
    #: Seconds after which a lot's / bank's bay counts as unknown (contracts.site ``stale_after_s``).
    lot_stale_after_s: float = 600.0
    bank_stale_after_s: float = 600.0
    zone_stale_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.lots < 1 or self.bays < self.lots:
            raise ValueError("need at least one lot and one bay per lot")
        if self.banks < 0 or self.cameras < 0 or self.compartments_per_bank < 1 or self.lines_per_camera < 1:
            raise ValueError("banks and cameras must be >= 0; compartments and lines >= 1")


def curve_for(lot_type: str, index: int) -> str:
    """The ParkAPI curve id lot number ``index`` of ``lot_type`` follows (:data:`CURVES_BY_TYPE`)."""
    curves = CURVES_BY_TYPE[lot_type]
    return curves[index % len(curves)]


def lot_curve_ids(site: SiteConfig) -> dict[str, str]:
    """Per lot of ``site``: the ParkAPI curve id its demand follows (by type, counted in file order)."""
    seen: dict[str, int] = {}
    out: dict[str, str] = {}
    for lot in site.parking:
        n = seen.get(lot.lot_type, 0)
        seen[lot.lot_type] = n + 1
        out[lot.id] = curve_for(lot.lot_type, n)
    return out


def _coords(i: int, n: int, spread_deg: float = 0.04) -> dict[str, float]:
    """Point ``i`` of ``n`` on a square grid around :data:`CENTRE`."""
    side = max(1, math.ceil(math.sqrt(n)))
    row, col = divmod(i, side)
    step = spread_deg / side
    return {"lat": round(CENTRE[0] + (row - side / 2) * step, 6), "lng": round(CENTRE[1] + (col - side / 2) * step, 6)}


def city_site(shape: CityShape = CityShape()) -> dict[str, Any]:
    """The site configuration of ``shape`` as a dict (validated: raises ``pydantic.ValidationError`` if not)."""
    from firmware_sim.city.footfall import SENSOR_NAMES

    zone_count = max(1, shape.cameras)
    zones = [
        {
            "id": f"zone-{z:02d}",
            "name": f"Zone {z}",
            "coords": _coords(z, zone_count),
            "stale_after_s": shape.zone_stale_after_s,
        }
        for z in range(zone_count)
    ]
    base, extra = divmod(shape.bays, shape.lots)
    parking = []
    devices = []
    for i in range(shape.lots):
        count = base + (1 if i < extra else 0)
        lot_id = f"lot-{i:03d}"
        parking.append({
            "id": lot_id,
            "name": f"Lot {i}",
            "lot_type": LOT_TYPES[i % len(LOT_TYPES)],
            "zone": zones[i % zone_count]["id"],
            "coords": _coords(i, shape.lots),
            "bays": {"prefix": f"L{i:03d}-", "count": count, "width": 4},
            "stale_after_s": shape.lot_stale_after_s,
        })  # fmt: skip
        devices.append({"id": f"dev-{lot_id}", "kind": "bay_controller", "lots": [lot_id]})
    lockers = []
    for b in range(shape.banks):
        bank_id = f"bank-{b:03d}"
        comps: list[dict[str, Any]] = []
        left = shape.compartments_per_bank
        start = 1
        for k, (size, share) in enumerate(SIZE_SHARES):
            n = left if k == len(SIZE_SHARES) - 1 else min(left, round(shape.compartments_per_bank * share))
            if n > 0:
                comps.append({"size": size, "count": n, "start": start, "width": 2})
                start += n
                left -= n
        lockers.append({
            "id": bank_id,
            "name": f"Locker bank {b}",
            "zone": zones[b % zone_count]["id"],
            "coords": _coords(b, max(1, shape.banks)),
            "compartments": comps,
            "stale_after_s": shape.bank_stale_after_s,
        })  # fmt: skip
        devices.append({"id": f"dev-{bank_id}", "kind": "locker_controller", "lockers": [bank_id]})
    cameras = []
    for c in range(shape.cameras):
        cam_id = f"cam-{c:02d}"
        lines = [{"id": f"line-{k}", "zone": zones[c % zone_count]["id"]} for k in range(shape.lines_per_camera)]
        sensor = SENSOR_NAMES[c % len(SENSOR_NAMES)]
        name = f"Camera {c} (Auckland: {sensor})"
        cameras.append({"id": cam_id, "device": f"dev-{cam_id}", "name": name, "lines": lines})
        devices.append({"id": f"dev-{cam_id}", "kind": "camera_node"})
    doc: dict[str, Any] = {
        "site": {"id": shape.site_id, "name": f"Simulated city ({shape.bays} bays)", "timezone": "Europe/Berlin"},
        "zones": zones,
        "parking": parking,
        "lockers": lockers,
        "cameras": cameras,
        "devices": devices,
    }
    SiteConfig.model_validate(doc)
    return doc


def write_site(path: Path, shape: CityShape = CityShape()) -> SiteConfig:
    """Write the site of ``shape`` to ``path`` (YAML) and return it validated."""
    doc = city_site(shape)
    header = (
        "# Generated by `district sim --scale --generate` (firmware_sim/city/sitegen.py): a simulated city.\n"
        "# Demand: ParkAPI Dresden curves by lot type; footfall: Auckland pedestrian counts (CC BY 4.0).\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=120), encoding="utf-8")
    return SiteConfig.model_validate(doc)
