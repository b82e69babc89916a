"""``district check-config FILE``: validate a site or device configuration.

The file's top-level key says what it is: ``site:`` for a site configuration,
``device:`` for an edge device configuration, ``display_bridge:`` for a
display bridge (``district display-bridge --config``). Every error is printed with its
file, line, column and path; the exit status is 1 when there is any.

Stricter than the services, which start on a file with *findings* and only log
them (:mod:`contracts.configfile`): here those are errors too. They are: a
number that is not finite (``.inf``, ``.nan``) anywhere in the file, and a
parking lot's ``full_below`` that does not fit its bays. ``full_below`` is a
reserve: the lot shows ``full`` while fewer than ``full_below`` bays are free
(and always when none is), so it must be less than the lot's bay count, or
the lot would show full with every bay free; 1 (the default) is always allowed.

Given a site file together with device files (``district check-config
site.yaml edge-*.yaml``), each device is also checked against the site whose
id is its ``site_id``: the device is one the site lists (when it lists
devices), each of its cameras is in the site, on this device, with every
counting line leading into the zone the site says, and the site gives it the
bays and compartments its sensors read (``devices[].lots``, ``levels``,
``lockers``; otherwise the gateway refuses their readings as ``not_owner``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import yaml
from pydantic import BaseModel

from contracts.configfile import ConfigError, load_model
from contracts.site import SiteConfig

if TYPE_CHECKING:
    from edge.config import DeviceConfig


def _model_for(path: Path) -> type[BaseModel]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return SiteConfig  # load_model reports the read or syntax error with its location
    if isinstance(data, dict) and "device" in data and "site" not in data:
        from edge.config import DeviceConfig

        return cast(type[BaseModel], DeviceConfig)
    if isinstance(data, dict) and "display_bridge" in data and "site" not in data:
        from edge.displays.config import BridgeFile

        return BridgeFile
    return SiteConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="district check-config", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    failed = 0
    sites: list[SiteConfig] = []
    devices: list[tuple[Path, DeviceConfig]] = []
    for path in args.files:
        model = _model_for(path)
        try:
            loaded = load_model(path, model, strict=True)
        except ConfigError as exc:
            failed += 1
            for line in exc.errors:
                print(line, file=sys.stderr)
            continue
        if isinstance(loaded, SiteConfig):
            sites.append(loaded)
        elif model.__name__ == "DeviceConfig":
            device = cast("DeviceConfig", loaded)
            problems = camera_problems(device)
            if problems:
                failed += 1
                for problem in problems:
                    print(f"{path}: {problem}", file=sys.stderr)
                continue
            devices.append((path, device))
        print(f"{path}: ok ({model.__name__})")
    if sites:
        for path, device in devices:
            problems = against_site(device, sites)
            if problems:
                failed += 1
                for problem in problems:
                    print(f"{path}: {problem}", file=sys.stderr)
    return 1 if failed else 0


def camera_problems(device: DeviceConfig) -> list[str]:
    """What would stop a camera of this device file at start: unreadable counting lines, a missing model file."""
    problems: list[str] = []
    for i, camera in enumerate(device.cameras):
        try:
            camera.resolve_lines()
        except (OSError, ValueError) as exc:
            problems.append(f"cameras[{i}]: camera {camera.id}: counting lines: {exc}")
        model_path = getattr(camera.engine.detector, "model_path", None)
        if model_path is not None and not Path(model_path).is_file():
            problems.append(f"cameras[{i}]: camera {camera.id}: engine.detector.model_path {model_path} not found")
    return problems


def against_site(device: DeviceConfig, sites: list[SiteConfig]) -> list[str]:
    """What a valid device file says that its (valid) site file contradicts (module doc)."""
    site = next((s for s in sites if s.site.id == device.device.site_id), None)
    if site is None:
        given = ", ".join(sorted(s.site.id for s in sites))
        return [f"device.site_id: site {device.device.site_id!r} is not among the site files given ({given})"]
    device_id = device.device.id
    problems: list[str] = []
    if site.devices and device_id not in {d.id for d in site.devices}:
        problems.append(f"device.id: device {device_id!r} is not in site {site.site.id!r}")
    for i, camera in enumerate(device.cameras):
        try:
            found = camera.check_site(site, device_id)
        except (OSError, ValueError) as exc:
            found = [f"camera {camera.id}: cannot read its counting lines: {exc}"]
        problems += [f"cameras[{i}]: {p}" for p in found]
    problems += _refresh_problems(device, site)
    problems += _ownership_problems(device, site)
    return problems


def _ownership_problems(device: DeviceConfig, site: SiteConfig) -> list[str]:
    """Sensors reading bays or compartments the site gives to another device (their readings would be
    refused as ``not_owner``, :mod:`contracts.ownership`)."""
    own = site.ownership
    problems: list[str] = []
    for i, sensor in enumerate(device.sensors):
        lot, bank = getattr(sensor, "lot_id", None), getattr(sensor, "bank_id", None)
        if lot is not None and own.bays is not None:
            strays = [b for b in sensor.point_ids() if device.device.id not in own.bays.get((lot, b), frozenset())]
            if strays:
                problems.append(
                    f"sensors[{i}]: the site does not give device {device.device.id} {len(strays)} of these bays of "
                    f"lot {lot} (e.g. {strays[0]}): list the lot or level on the device (devices[].lots, levels)"
                )
        if bank is not None and own.banks is not None and device.device.id not in own.banks.get(bank, frozenset()):
            problems.append(
                f"sensors[{i}]: the site does not give device {device.device.id} locker bank {bank} (devices[].lockers)"
            )
    return problems


def _refresh_problems(device: DeviceConfig, site: SiteConfig) -> list[str]:
    """A sensor that re-publishes unchanged states less often than half of what its readers call stale.

    Freshness is judged from the sensors' readings: a quiet lot is heard only
    through the controller's full refresh, so a refresh as long as a garage
    sign's 120 s blanks the sign between refreshes. Half leaves room for one
    lost refresh.
    """
    problems: list[str] = []
    for i, sensor in enumerate(device.sensors):
        group = getattr(sensor, "lot_id", None) or getattr(sensor, "bank_id", None)
        refresh = getattr(sensor, "refresh_interval_s", None)
        if group is None or refresh is None:
            continue
        limits: list[tuple[float, str]] = []
        lot = site.lot(group)
        if lot is not None:
            limits.append((lot.stale_after_s, f"lot {lot.id}'s stale_after_s"))
            for d in site.displays:
                if group in d.lots or any(ref.lot == group for ref in d.levels):
                    limits.append((d.stale_limit_s, f"display {d.id}'s stale limit"))
        bank = site.bank(group)
        if bank is not None:
            limits.append((bank.stale_after_s, f"locker bank {bank.id}'s stale_after_s"))
        if not limits:
            continue
        limit, what = min(limits)
        if refresh > limit / 2:
            problems.append(
                f"sensors[{i}].refresh_interval_s: {refresh:g} s is more than half of {what} ({limit:g} s): "
                "a quiet group would turn stale between two refreshes"
            )
    return problems
