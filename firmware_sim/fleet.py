"""The simulated fleet in-process: one bus per parking lot and per locker bank, driven by the demand model.

``Fleet(site, bus_dir, speed=60, seed=1).start()`` creates the buses and their
symlinks, writes ``{bus_dir}/buses.json`` and starts one demand thread;
``stop()`` undoes all of it. Tests use ``set_bay``/``set_compartment`` (which
pin a point so the demand model leaves it alone), ``inject`` for faults, and
``power_off``/``power_on`` to stop a controller and restart it (``last_answer``
tells when it last answered).

``displays=["vms-1", ...]`` adds one simulated LED count display per name, each
on its own bus ``{bus_dir}/{name}`` (unit ``unit``), for a display bridge to
write to (:mod:`firmware_sim.count_display`); ``buses.json`` lists them under
``displays`` (not ``buses``: no edge agent reads them).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from contracts.fieldbus import BAY_CLOSED, LOCKER_OUT_OF_SERVICE, REGISTER_MAX, encode_bay, encode_locker
from contracts.site import LockerBank, LotConfig, SiteConfig
from firmware_sim.bus import BusDevice, SerialBus
from firmware_sim.controllers import BayController, Controller, LockerController
from firmware_sim.count_display import DEFAULT_COMMS_TIMEOUT_S, CountDisplay
from firmware_sim.demand import LockerDemand, LotDemand, SimClock, load_targets

log = logging.getLogger(__name__)

BUSES_FILE = "buses.json"
BusKind = Literal["bay_controller", "locker_controller"]
FAULT_KINDS = ("silent", "wiring", "noise", "stuck", "flap", "garbage", "closed")


class FaultError(ValueError):
    """A fault specification that cannot be parsed or applied."""


@dataclass(frozen=True)
class Fault:
    """``BUS:KIND[:ARG]``: silent, wiring, noise:P, stuck:I[=CODE], flap:I, garbage:I[=VALUE], closed:I."""

    bus: str
    kind: str
    index: int | None = None
    value: int | None = None
    probability: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Fault:
        parts = spec.split(":")
        if len(parts) < 2 or parts[1] not in FAULT_KINDS:
            raise FaultError(f"bad fault {spec!r}: expected BUS:KIND[:ARG], KIND one of {', '.join(FAULT_KINDS)}")
        bus, kind, arg = parts[0], parts[1], ":".join(parts[2:])
        try:
            if kind in ("silent", "wiring"):
                if arg:
                    raise ValueError(f"{kind} takes no argument")
                return cls(bus, kind)
            if kind == "noise":
                p = float(arg)
                if not 0.0 <= p <= 1.0:
                    raise ValueError("probability must be within 0..1")
                return cls(bus, kind, probability=p)
            idx, _, val = arg.partition("=")
            if kind in ("flap", "closed") and val:
                raise ValueError(f"{kind} takes no value")
            return cls(bus, kind, index=int(idx), value=int(val, 0) if val else None)
        except ValueError as exc:
            raise FaultError(f"bad fault {spec!r}: {exc}") from None


@dataclass
class SimBus:
    """One field bus of the fleet and what drives it."""

    name: str
    kind: BusKind
    controller: Controller
    bus: SerialBus
    points: Any  # the edge's point-id configuration (list or range), in register order
    lot: LotDemand | None = None
    lockers: LockerDemand | None = None
    closed: bool = False

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.bus.path),
            "tty": self.bus.tty,
            "unit": self.controller.unit,
            "baudrate": self.bus.baudrate,
            "count": self.controller.count,
            "points": self.points,
        }


@dataclass
class SimDisplay:
    """One simulated count display and the bus it hangs on."""

    name: str
    display: CountDisplay
    bus: SerialBus

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "count_display",
            "path": str(self.bus.path),
            "tty": self.bus.tty,
            "unit": self.display.unit,
            "baudrate": self.bus.baudrate,
            "comms_timeout_s": self.display.comms_timeout_s,
        }


def _rng(seed: int | None, name: str) -> random.Random:
    """An independent stream per bus; string seeds hash deterministically."""
    return random.Random(f"{seed}/{name}") if seed is not None else random.Random()


class Fleet:
    def __init__(
        self,
        site: SiteConfig,
        bus_dir: Path,
        *,
        speed: float = 60.0,
        seed: int | None = None,
        data_dir: Path | None = None,
        tick_s: float = 0.5,
        line_timing: bool = True,
        baudrate: int = 19200,
        unit: int = 1,
        demand: bool = True,
        start_at: datetime | None = None,
        summary_s: float = 30.0,
        displays: Sequence[str] = (),
        display_timeout_s: float = DEFAULT_COMMS_TIMEOUT_S,
    ) -> None:
        self.site = site
        self.bus_dir = Path(bus_dir)
        self.speed = speed
        self.seed = seed
        self.data_dir = data_dir
        self.tick_s = tick_s
        self.line_timing = line_timing
        self.baudrate = baudrate
        self.unit = unit
        self.demand = demand
        self.summary_s = summary_s
        self.tz = ZoneInfo(site.site.timezone)
        self.clock = SimClock(speed, self.tz, start_at)
        self.buses: dict[str, SimBus] = {}
        self.display_names = list(displays)
        self.display_timeout_s = display_timeout_s
        self.displays: dict[str, SimDisplay] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step: datetime | None = None
        self._lock = threading.Lock()  # one demand step at a time
        self.step_errors = 0
        self.steps = 0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        targets = load_targets(self.data_dir, [lot.id for lot in self.site.parking]) if self.site.parking else {}
        try:
            for lot in self.site.parking:
                self._add_lot(lot, *targets[lot.id])
            for bank in self.site.lockers:
                self._add_bank(bank)
            for name in self.display_names:
                self._add_display(name)
            for sb in self.buses.values():
                sb.bus.start()
            for sd in self.displays.values():
                sd.bus.start()
        except Exception:
            self._stop_buses()
            raise
        now = self.clock.now()
        if self.demand:
            with self._lock:
                for sb in self.buses.values():
                    if sb.lot is not None and not sb.closed:
                        for index, occ in sb.lot.fill(now):
                            sb.controller.set(index, encode_bay(occ))
                self._last_step = now
                self._step_locked(now, 0.0)
        self._write_buses_json()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-demand", daemon=True)
        self._thread.start()
        log.info(
            "fleet up: %d bus(es), %d display(s) in %s, speed %g, simulated time %s",
            len(self.buses),
            len(self.displays),
            self.bus_dir,
            self.speed,
            now.isoformat(timespec="seconds"),
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._stop_buses()
        try:
            path = self.bus_dir / BUSES_FILE
            if path.exists() and json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError) as exc:
            log.warning("cannot remove %s: %s", self.bus_dir / BUSES_FILE, exc)

    def _stop_buses(self) -> None:
        for name, bus in [(sb.name, sb.bus) for sb in self.buses.values()] + [
            (sd.name, sd.bus) for sd in self.displays.values()
        ]:
            try:
                bus.stop()
            except Exception:
                log.exception("bus %s: stop failed", name)

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add_lot(self, lot: LotConfig, target: Any, source: str) -> None:
        ctrl = BayController(lot.id, lot.total, unit=self.unit)
        bus = self._bus(lot.id, ctrl)
        points = lot.bays.model_dump(mode="json") if not isinstance(lot.bays, list) else list(lot.bays)
        demand = LotDemand(lot.id, lot.total, target, _rng(self.seed, lot.id))
        sb = SimBus(lot.id, "bay_controller", ctrl, bus, points, lot=demand, closed=lot.closed)
        if lot.closed:
            for i in range(lot.total):
                ctrl.pin(i, BAY_CLOSED)
        self.buses[lot.id] = sb
        log.info("lot %s: %d bays, demand from %s", lot.id, lot.total, source)

    def _add_bank(self, bank: LockerBank) -> None:
        comps = bank.compartment_list()
        ctrl = LockerController(bank.id, len(comps), unit=self.unit)
        bus = self._bus(bank.id, ctrl)
        points = [c.model_dump(mode="json") for c in bank.compartments]
        demand = LockerDemand(bank.id, [c.size for c in comps], _rng(self.seed, bank.id), self.tz)
        self.buses[bank.id] = SimBus(bank.id, "locker_controller", ctrl, bus, points, lockers=demand)
        log.info("locker bank %s: %d compartments", bank.id, len(comps))

    def _add_display(self, name: str) -> None:
        display = CountDisplay(name, unit=self.unit, comms_timeout_s=self.display_timeout_s)
        self.displays[name] = SimDisplay(name, display, self._bus(name, display))
        log.info("count display %s: unit %d, comms-loss timeout %g s", name, self.unit, self.display_timeout_s)

    def _bus(self, name: str, ctrl: BusDevice) -> SerialBus:
        if name in self.buses or name in self.displays:
            raise ValueError(f"two buses named {name!r}")
        return SerialBus(
            name,
            self.bus_dir / name,
            [ctrl],
            baudrate=self.baudrate,
            line_timing=self.line_timing,
            seed=None if self.seed is None else zlib.crc32(f"{self.seed}/{name}/noise".encode()),
        )

    def _write_buses_json(self) -> None:
        doc = {
            "version": 1,
            "site": self.site.site.id,
            "pid": os.getpid(),
            "buses": [sb.info() for sb in self.buses.values()],
            "displays": [sd.info() for sd in self.displays.values()],
        }
        self.bus_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.bus_dir / f".{BUSES_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self.bus_dir / BUSES_FILE)

    # -- demand loop --------------------------------------------------------------
    def _run(self) -> None:
        last_summary = time.monotonic()
        while not self._stop.wait(self.tick_s):
            try:
                self.step()
            except Exception:
                self.step_errors += 1
                log.exception("demand step failed (%d so far)", self.step_errors)
            for sd in self.displays.values():
                try:
                    sd.display.check()
                except Exception:
                    self.step_errors += 1
                    log.exception("display %s: watchdog check failed", sd.name)
            if self.summary_s > 0 and time.monotonic() - last_summary >= self.summary_s:
                last_summary = time.monotonic()
                self.log_summary()

    def step(self) -> None:
        """One demand step at the clock's current simulated time."""
        with self._lock:
            now = self.clock.now()
            dt = (now - self._last_step).total_seconds() if self._last_step else 0.0
            self._last_step = now
            self._step_locked(now, dt)

    def _step_locked(self, now: datetime, dt: float) -> None:
        self.steps += 1
        for sb in self.buses.values():
            try:
                sb.controller.tick()
                if not self.demand:
                    continue
                pinned = sb.controller.pinned()
                usable = lambda i, p=pinned: i not in p  # noqa: E731
                if sb.lot is not None and not sb.closed:
                    for index, occ in sb.lot.step(now, dt, usable):
                        sb.controller.set(index, encode_bay(occ))
                elif sb.lockers is not None:
                    for index, occ, door in sb.lockers.step(now, usable):
                        sb.controller.set(index, encode_locker(occ, door))
            except Exception:
                self.step_errors += 1
                log.exception("bus %s: demand step failed", sb.name)

    # -- control (tests, fault injection) -------------------------------------------
    def get(self, name: str) -> SimBus:
        try:
            return self.buses[name]
        except KeyError:
            raise KeyError(f"no bus named {name!r} (have: {', '.join(self.buses)})") from None

    def controller(self, name: str) -> Controller:
        return self.get(name).controller

    def display(self, name: str) -> CountDisplay:
        """The simulated count display ``name`` (``displays=`` at construction)."""
        try:
            return self.displays[name].display
        except KeyError:
            raise KeyError(f"no count display named {name!r} (have: {', '.join(self.displays)})") from None

    def set_bay(self, lot_id: str, index: int, code: int, *, pin: bool = True) -> None:
        """Set bay ``index`` (register order) of ``lot_id``; pinned, the demand model leaves it alone."""
        sb = self.get(lot_id)
        if sb.kind != "bay_controller":
            raise ValueError(f"{lot_id} is a {sb.kind}")
        self._set(sb, index, code, pin)

    def set_compartment(self, bank_id: str, index: int, code: int, *, pin: bool = True) -> None:
        sb = self.get(bank_id)
        if sb.kind != "locker_controller":
            raise ValueError(f"{bank_id} is a {sb.kind}")
        self._set(sb, index, code, pin)

    def _set(self, sb: SimBus, index: int, code: int, pin: bool) -> None:
        with self._lock:
            if pin:
                sb.controller.pin(index, code)
                if sb.lot is not None:
                    sb.lot.forget(index)
            else:
                sb.controller.set(index, code, force=True)

    def release(self, name: str, index: int) -> None:
        """Hand a pinned/stuck/flapping point back to the demand model."""
        self.controller(name).release(index)

    def power_off(self, name: str) -> None:
        """Switch the controller on bus ``name`` off: it stops answering (the edge's reads time out)."""
        self.controller(name).power_off()
        log.warning("controller %s: switched off", name)

    def power_on(self, name: str) -> None:
        """Switch it on again: it answers again, as after a reboot (uptime from zero, points as they are)."""
        self.controller(name).power_on()
        log.warning("controller %s: switched on", name)

    def last_answer(self, name: str) -> float | None:
        """``time.monotonic()`` when the controller on bus ``name`` last answered a request; None if never."""
        sb = self.get(name)
        return sb.bus.last_answer(sb.controller.unit)

    def inject(self, fault: Fault) -> None:
        sb = self.get(fault.bus)
        ctrl = sb.controller
        if fault.index is not None and not 0 <= fault.index < ctrl.count:
            raise FaultError(f"{fault.bus}: point {fault.index} outside 0..{ctrl.count - 1}")
        with self._lock:
            if fault.kind == "silent":
                ctrl.silent = True
            elif fault.kind == "wiring":
                ctrl.wiring_fault = True
            elif fault.kind == "noise":
                ctrl.noise = fault.probability or 0.0
            elif fault.kind == "stuck":
                assert fault.index is not None
                ctrl.stick(fault.index, fault.value)
            elif fault.kind == "flap":
                assert fault.index is not None
                ctrl.flap(fault.index)
            elif fault.kind == "garbage":
                assert fault.index is not None
                ctrl.set_garbage(fault.index, REGISTER_MAX if fault.value is None else fault.value)
            elif fault.kind == "closed":
                assert fault.index is not None
                ctrl.pin(fault.index, BAY_CLOSED if sb.kind == "bay_controller" else LOCKER_OUT_OF_SERVICE)
            if fault.index is not None and sb.lot is not None:
                sb.lot.forget(fault.index)
        log.warning("fault injected: %s", fault)

    # -- reporting ---------------------------------------------------------------
    def summary(self) -> dict[str, tuple[int, int]]:
        """Per bus: (occupied points, total points)."""
        out: dict[str, tuple[int, int]] = {}
        for sb in self.buses.values():
            ctrl = sb.controller
            occupied = ctrl.occupied() if isinstance(ctrl, BayController | LockerController) else 0
            out[sb.name] = (occupied, ctrl.count)
        return out

    def log_summary(self) -> None:
        now = self.clock.now()
        for name, (occupied, total) in self.summary().items():
            sb = self.buses[name]
            target = f" target {sb.lot.target_count(now) / total:.0%}" if sb.lot is not None and total else ""
            log.info(
                "%s %s: %d/%d occupied%s, client %s, answered %d, silenced %d",
                now.strftime("%a %H:%M"),
                name,
                occupied,
                total,
                target,
                "open" if sb.bus.client_connected else "closed",
                sb.bus.frames_answered,
                sb.bus.frames_silenced,
            )
        for sd in self.displays.values():
            shown = sd.display.shown()
            log.info(
                "display %s: shows %r%s, %d write(s), client %s",
                sd.name,
                shown.face,
                " (comms lost)" if shown.comms_lost else "",
                shown.writes,
                "open" if sd.bus.client_connected else "closed",
            )
