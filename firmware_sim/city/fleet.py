"""The city fleet: every device of a site as a direct MQTT publisher, driven by one demand loop.

``CityFleet(site, broker=..., work_dir=..., ledger_path=...)``; ``start()``
starts one :class:`~firmware_sim.city.device.SimDevice` per ``devices:``
entry of the site (bay controllers, locker controllers, camera nodes) and the
demand thread; ``stop()`` stops them (each publishes ``offline``/``shutdown``
like an edge agent) and closes the ledger.

Every ``tick_s`` real seconds the demand thread advances the simulated clock
(``speed`` x real time) and, per device:

* parking: :class:`firmware_sim.demand.LotDemand` (ParkAPI curve of the lot's
  type, :func:`firmware_sim.city.sitegen.lot_curve_ids`) parks and removes
  cars; each change is a truth row and, if the device is on, a
  ``parking_bay`` reading;
* lockers: :class:`firmware_sim.demand.LockerDemand` delivers parcels in the
  morning and has them picked up after a log-normal dwell (median 4 h), the
  door open a moment each time; each change a truth row and a ``locker``
  reading;
* cameras: every ``footfall_interval_s`` real seconds a ``footfall`` reading
  with the crossings of the simulated span just gone
  (:class:`firmware_sim.city.footfall.CameraFootfall`);
* every ``refresh_s`` real seconds (staggered) the full state of every bay
  and compartment again, as the edge's Modbus driver does
  (``refresh_interval_s``), so a quiet bay stays fresh.

Readings are stamped with the *device's* clock (real time plus its clock
error), not the simulated one: the gateway refuses readings from the future,
and freshness is judged on real time. The simulated clock only drives demand.
Faults: :meth:`inject` (or ``faults=`` at construction, run on schedule),
see :mod:`firmware_sim.city.faults`.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from contracts.messages import FootfallCount, LineCount, LockerCompartmentState, ParkingBayState, new_reading_id
from contracts.site import SiteConfig
from firmware_sim.city.device import SimDevice, device_config
from firmware_sim.city.faults import FaultSpec, select
from firmware_sim.city.footfall import CameraFootfall, PedestrianProfile, sensor_for
from firmware_sim.city.ledger import Ledger
from firmware_sim.city.sitegen import lot_curve_ids
from firmware_sim.demand import LockerDemand, LotDemand, SimClock, load_targets

log = logging.getLogger(__name__)

GARBAGE: tuple[tuple[str, bytes], ...] = (
    ("parking_bay", b"\x00\xffnot json at all"),
    ("parking_bay", b'{"kind": "parking_bay", "device_id": 17}'),
    ("locker", b'{"kind": "locker", "observed_at": "yesterday"}'),
    ("footfall", b'{"kind": "footfall", "lines": [{"towards": NaN}]}'),
    ("status", b"[1, 2, 3]"),
)


@dataclass(frozen=True)
class BrokerTarget:
    """Where the devices connect: host, port, topic prefix, and the provisioned identities (None: anonymous)."""

    host: str
    port: int
    prefix: str = "district"
    identities: Path | None = None
    #: More keys for every device's ``mqtt:`` section (e.g. ``reconnect_max_s``).
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, device_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "port": self.port, "topic_prefix": self.prefix}
        if self.identities is not None:
            # district provision's layout (docs/security.md): identities/NAME/{password,ca.crt,client.crt,client.key}
            folder = self.identities / device_id
            if not (folder / "password").is_file():
                raise FileNotFoundError(f"no broker identity for {device_id} in {self.identities} (district provision)")
            out |= {"username": device_id, "password_file": str(folder / "password")}
            tls: dict[str, str] = {"ca_file": str(folder / "ca.crt")}
            if (folder / "client.crt").is_file():
                tls |= {"cert_file": str(folder / "client.crt"), "key_file": str(folder / "client.key")}
            out["tls"] = tls
        return out | self.extra


@dataclass
class _Lot:
    id: str
    device: str
    bay_ids: list[str]
    demand: LotDemand
    occupied: bytearray


@dataclass
class _Bank:
    id: str
    device: str
    comp_ids: list[str]
    demand: LockerDemand
    state: list[tuple[bool, bool]]  # (occupied, door open)


@dataclass
class _Camera:
    id: str
    device: str
    zone_lines: dict[str, list[str]]  # zone -> its line ids
    line_zone: dict[str, str]
    footfall: CameraFootfall
    last_real: float = 0.0
    last_sim: datetime | None = None
    next_at: float = 0.0


@dataclass
class _Active:
    spec: FaultSpec
    devices: list[str]
    ledger_ids: list[int]
    until: float
    extra: dict[str, Any] = field(default_factory=dict)


class CityFleet:
    def __init__(
        self,
        site: SiteConfig,
        *,
        broker: BrokerTarget,
        work_dir: Path,
        ledger_path: Path | None = None,
        speed: float = 60.0,
        seed: int | None = None,
        data_dir: Path | None = None,
        start_at: datetime | None = None,
        tick_s: float = 0.5,
        refresh_s: float = 60.0,
        footfall_interval_s: float = 60.0,
        status_interval_s: float = 30.0,
        flap_period_s: float = 2.0,
        faults: Sequence[FaultSpec] = (),
        stats_path: Path | None = None,
        footfall_year: int = 2024,
        only: Sequence[str] | None = None,
        t0: float | None = None,
    ) -> None:
        if not site.devices:
            raise ValueError("the site lists no devices: every simulated device needs a broker identity")
        self.site = site
        self.broker = broker
        self.work_dir = Path(work_dir)
        self.speed = speed
        self.tick_s = tick_s
        self.refresh_s = refresh_s
        self.footfall_interval_s = footfall_interval_s
        self.status_interval_s = status_interval_s
        self.flap_period_s = flap_period_s
        self.stats_path = stats_path
        self.seed = seed
        self.data_dir = data_dir
        self.footfall_year = footfall_year
        self.tz = ZoneInfo(site.site.timezone)
        #: Real POSIX time the fleet (all its shards) started: fault times count from it.
        self.t0 = t0
        if start_at is not None and t0 is not None:
            if start_at.tzinfo is None:
                start_at = start_at.replace(tzinfo=self.tz)
            start_at = start_at + timedelta(seconds=(time.time() - t0) * speed)
        self.clock = SimClock(speed, self.tz, start_at)
        self.rng = random.Random(f"{seed}/faults") if seed is not None else random.Random()
        self.ledger = Ledger(ledger_path or self.work_dir / "ledger.sqlite")
        self.devices: dict[str, SimDevice] = {}
        self.kinds: dict[str, str] = {
            d.id: d.kind for d in site.devices if d.kind != "gateway" and (only is None or d.id in only)
        }
        self.lots: list[_Lot] = []
        self.banks: list[_Bank] = []
        self.cameras: list[_Camera] = []
        self._next_refresh: dict[str, float] = {}
        self._schedule = sorted(faults, key=lambda f: f.at)
        self._active: list[_Active] = []
        #: (lot id, bay index) -> (reported occupied, next toggle at) for bays whose sensor flaps.
        self._flapping: dict[tuple[str, int], list[float]] = {}
        self._battery_rate: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._last_sim: datetime | None = None
        self._paused = False
        self.steps = 0
        self.step_errors = 0
        self.garbage_sent = 0

    # -- set-up ----------------------------------------------------------------------------------
    def _rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}") if self.seed is not None else random.Random()

    def _build(self) -> None:
        site = self.site
        outboxes = self.work_dir / "outboxes"
        outboxes.mkdir(parents=True, exist_ok=True)
        for dev_id, kind in self.kinds.items():
            cfg = device_config(
                dev_id,
                site.site.id,
                mqtt_section=self.broker.section(dev_id),
                outbox_dir=outboxes,
                status_interval_s=self.status_interval_s,
            )
            self.devices[dev_id] = SimDevice(cfg, kind)
        lot_owner = {lot_id: d.id for d in site.devices for lot_id in d.lots}
        bank_owner = {bank_id: d.id for d in site.devices for bank_id in d.lockers}
        curves = lot_curve_ids(site) if site.parking else {}
        targets = load_targets(self.data_dir, sorted(set(curves.values()))) if curves else {}
        for lot in site.parking:
            owner = lot_owner.get(lot.id)
            if owner is not None and owner not in self.kinds:
                continue  # another shard's
            if owner is None or lot.closed:
                log.warning("lot %s: %s; not simulated", lot.id, "closed" if lot.closed else "no device owns it")
                continue
            fn, _source = targets[curves[lot.id]]
            demand = LotDemand(lot.id, lot.total, fn, self._rng(lot.id))
            self.lots.append(_Lot(lot.id, owner, lot.bay_ids(), demand, bytearray(lot.total)))
        for bank in site.lockers:
            owner = bank_owner.get(bank.id)
            if owner is not None and owner not in self.kinds:
                continue
            if owner is None:
                log.warning("locker bank %s: no device owns it; not simulated", bank.id)
                continue
            comps = bank.compartment_list()
            lockers = LockerDemand(bank.id, [c.size for c in comps], self._rng(bank.id), self.tz)
            self.banks.append(_Bank(bank.id, owner, [c.id for c in comps], lockers, [(False, False)] * len(comps)))
        if any(cam.device in self.kinds for cam in site.cameras):
            profile = PedestrianProfile.load(self.footfall_year)
            for i, cam in enumerate(site.cameras):
                if cam.device not in self.kinds:
                    continue
                zone_lines: dict[str, list[str]] = {}
                for line in cam.lines:
                    zone_lines.setdefault(line.zone, []).append(line.id)
                seed = None if self.seed is None else zlib.crc32(f"{self.seed}/{cam.id}".encode())
                rng = np.random.default_rng(seed)
                ff = CameraFootfall(cam.id, sensor_for(i), [ln.id for ln in cam.lines], profile, rng)
                self.cameras.append(_Camera(cam.id, cam.device, zone_lines, {ln.id: ln.zone for ln in cam.lines}, ff))

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._build()
        now_sim = self.clock.now()
        t = time.time()
        self._t0 = self.t0 if self.t0 is not None else t
        self.ledger.meta(
            site=self.site.site.id, speed=self.speed, sim_start=now_sim.isoformat(), started_at=t, pid=os.getpid()
        )
        for lot in self.lots:
            for index, occ in lot.demand.fill(now_sim):
                lot.occupied[index] = occ
                self.ledger.bay(t, now_sim.timestamp(), lot.id, lot.bay_ids[index], occ)
            for index, bay in enumerate(lot.bay_ids):
                if not lot.occupied[index]:
                    self.ledger.bay(t, now_sim.timestamp(), lot.id, bay, False)
        for bank in self.banks:
            for comp in bank.comp_ids:
                self.ledger.compartment(t, now_sim.timestamp(), bank.id, comp, False, False)
        for cam in self.cameras:
            cam.last_real, cam.last_sim = t, now_sim
            cam.next_at = t + self.footfall_interval_s * self.rng.uniform(0.5, 1.0)
        for dev_id in self.devices:
            self._next_refresh[dev_id] = 0.0  # everything at once on start, like an edge agent
        self.ledger.flush()
        self._last_sim = now_sim
        for dev in self.devices.values():
            dev.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="city-demand", daemon=True)
        self._thread.start()
        log.info(
            "city fleet up: %d devices (%d lots / %d bays, %d banks / %d compartments, %d cameras), speed %g, "
            "simulated time %s",
            len(self.devices),
            len(self.lots),
            sum(len(lot.bay_ids) for lot in self.lots),
            len(self.banks),
            sum(len(b.comp_ids) for b in self.banks),
            len(self.cameras),
            self.speed,
            now_sim.isoformat(timespec="seconds"),
        )

    def pause(self) -> None:
        """Stop the demand (no new readings, no more faults); the devices keep sending their outboxes and
        ``--stats`` keeps being written."""
        self._paused = True
        with self._lock:  # the step under way ends first
            self.ledger.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            t = time.time()
            for active in self._active:
                self.ledger.fault_end(active.ledger_ids, t)
            self._active.clear()
        for dev in self.devices.values():
            dev.publisher.unblock()
            dev.signal_stop()
        for dev in self.devices.values():
            dev.join(10)
        self._write_stats()
        self.ledger.close()
        log.info("city fleet stopped")

    def __enter__(self) -> CityFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the demand loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_stats = 0.0
        while not self._stop.wait(self.tick_s):
            try:
                if not self._paused:
                    self.step()
            except Exception:
                self.step_errors += 1
                log.exception("demand step failed (%d so far)", self.step_errors)
            if self.stats_path is not None and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 1.0
                self._write_stats()

    def step(self) -> None:
        with self._lock:
            self._step_locked()

    def _step_locked(self) -> None:
        t = time.time()
        now_sim = self.clock.now()
        dt = (now_sim - self._last_sim).total_seconds() if self._last_sim else 0.0
        self._last_sim = now_sim
        self.steps += 1
        sim_ts = now_sim.timestamp()
        self._run_schedule(t)
        out: dict[str, list[Any]] = {}
        refresh = {d for d, at in self._next_refresh.items() if t >= at and self.devices[d].powered}
        for d in refresh:
            first = self._next_refresh[d] == 0  # spread the devices' refreshes after their first
            self._next_refresh[d] = t + self.refresh_s * (self.rng.uniform(0.5, 1.5) if first else 1.0)
        for lot in self.lots:
            dev = self.devices[lot.device]
            changed: list[int] = []
            for index, occ in lot.demand.step(now_sim, dt):
                lot.occupied[index] = occ
                self.ledger.bay(t, sim_ts, lot.id, lot.bay_ids[index], occ)
                changed.append(index)
            if not dev.powered:
                continue
            for key, state in self._flapping.items():
                if key[0] == lot.id and t >= state[1]:
                    state[0] = 1.0 - state[0]
                    state[1] = t + self.flap_period_s
                    changed.append(key[1])
            indices = range(len(lot.bay_ids)) if lot.device in refresh else sorted(set(changed))
            if indices:
                stamp = dev.now()
                out.setdefault(lot.device, []).extend(
                    ParkingBayState(
                        device_id=lot.device,
                        observed_at=stamp,
                        reading_id=new_reading_id(),
                        lot_id=lot.id,
                        bay_id=lot.bay_ids[i],
                        status="occupied" if self._reported(lot, i) else "free",
                    )
                    for i in indices
                )
        for bank in self.banks:
            dev = self.devices[bank.device]
            changed = []
            for index, occ, door in bank.demand.step(now_sim):
                bank.state[index] = (occ, door)
                self.ledger.compartment(t, sim_ts, bank.id, bank.comp_ids[index], occ, door)
                changed.append(index)
            if not dev.powered:
                continue
            indices = range(len(bank.comp_ids)) if bank.device in refresh else sorted(set(changed))
            if indices:
                stamp = dev.now()
                out.setdefault(bank.device, []).extend(
                    LockerCompartmentState(
                        device_id=bank.device,
                        observed_at=stamp,
                        reading_id=new_reading_id(),
                        bank_id=bank.id,
                        compartment_id=bank.comp_ids[i],
                        status="occupied" if bank.state[i][0] else "free",
                        door="open" if bank.state[i][1] else "closed",
                    )
                    for i in indices
                )
        for cam in self.cameras:
            if t < cam.next_at:
                continue
            self._footfall(cam, t, now_sim, out)
        for dev_id, messages in out.items():
            dev = self.devices[dev_id]
            n = dev.emit(messages)
            if n:
                by_kind: dict[str, int] = {}
                for m in messages:
                    by_kind[m.kind] = by_kind.get(m.kind, 0) + 1
                for kind, k in by_kind.items():
                    self.ledger.produced(dev_id, kind, k)
        for dev_id, rate in self._battery_rate.items():
            pub = self.devices[dev_id].publisher
            pub.battery_pct = max(0.0, (pub.battery_pct or 100.0) - rate * dt / 3600.0)
        self.ledger.flush()

    def _reported(self, lot: _Lot, index: int) -> bool:
        flap = self._flapping.get((lot.id, index))
        return bool(flap[0]) if flap is not None else bool(lot.occupied[index])

    def _footfall(self, cam: _Camera, t: float, now_sim: datetime, out: dict[str, list[Any]]) -> None:
        dev = self.devices[cam.device]
        start_sim = cam.last_sim or now_sim
        start_real = cam.last_real
        cam.last_sim, cam.last_real = now_sim, t
        cam.next_at = t + self.footfall_interval_s
        counts = cam.footfall.interval(start_sim, now_sim)
        if not dev.powered:
            return  # the camera was off: the people went by uncounted
        for line, towards, away in counts:
            self.ledger.footfall(
                (start_real, t), (start_sim.timestamp(), now_sim.timestamp()), cam.id, cam.line_zone[line], line,
                towards, away,
            )  # fmt: skip
        by_line = {line: (towards, away) for line, towards, away in counts}
        end = dev.now()
        begin = datetime.fromtimestamp(start_real + dev.clock_offset_s, end.tzinfo)
        if begin >= end:
            return
        for zone, lines in cam.zone_lines.items():
            out.setdefault(cam.device, []).append(
                FootfallCount(
                    device_id=cam.device,
                    observed_at=end,
                    reading_id=new_reading_id(),
                    zone_id=zone,
                    camera_id=cam.id,
                    interval_start=begin,
                    lines=[LineCount(line_id=ln, towards=by_line[ln][0], away=by_line[ln][1]) for ln in lines],
                )
            )

    # -- faults ------------------------------------------------------------------------------------
    def _run_schedule(self, t: float) -> None:
        elapsed = t - self._t0
        while self._schedule and self._schedule[0].at <= elapsed:
            self._apply(self._schedule.pop(0), t)
        for active in [a for a in self._active if a.until <= t]:
            self._end(active, t)

    def inject(self, spec: FaultSpec) -> list[str]:
        """Apply ``spec`` now (its ``at`` is ignored); returns the devices it hit."""
        with self._lock:
            return self._apply(spec, time.time())

    def _apply(self, spec: FaultSpec, t: float) -> list[str]:
        chosen = select(spec.devices, self.kinds)
        if not chosen:
            log.warning("fault %s: no device matches %r", spec.kind, spec.devices)
            return []
        until = t + spec.duration if spec.duration is not None else float("inf")
        kind = spec.kind
        detail = ""
        extra: dict[str, Any] = {}
        if kind in ("dropout", "power_cut"):
            for d in chosen:
                self.devices[d].powered = False
                self.devices[d].publisher.block()
        elif kind == "partition":
            for d in chosen:
                self.devices[d].publisher.block()
        elif kind == "reconnect":
            for d in chosen:
                self.devices[d].publisher.block()
            for d in chosen:
                self.devices[d].publisher.unblock()
            until = t
        elif kind == "garbage":
            n = spec.n or 3
            for d in chosen:
                for k in range(n):
                    topic_kind, payload = GARBAGE[k % len(GARBAGE)]
                    if self.devices[d].publisher.publish_raw(topic_kind, payload):
                        self.garbage_sent += 1
            detail, until = f"n={n}", t
        elif kind in ("skew", "step"):
            assert spec.s is not None
            for d in chosen:
                pub = self.devices[d].publisher
                pub.clock_offset_s = spec.s if kind == "skew" else pub.clock_offset_s + spec.s
            detail, until = f"s={spec.s:g}", t
        elif kind == "flap":
            n = spec.n or 1
            bays: list[tuple[str, int]] = []
            for lot in self.lots:
                if lot.device in chosen:
                    for i in self.rng.sample(range(len(lot.bay_ids)), min(n, len(lot.bay_ids))):
                        self._flapping[(lot.id, i)] = [float(lot.occupied[i]), t]
                        bays.append((lot.id, i))
            extra["bays"] = bays
            detail = " ".join(f"{lot_id}/{self._bay_id(lot_id, i)}" for lot_id, i in bays)
        elif kind == "battery":
            rate = spec.rate if spec.rate is not None else 2.0
            for d in chosen:
                self._battery_rate[d] = rate
                if self.devices[d].publisher.battery_pct is None:
                    self.devices[d].publisher.battery_pct = 100.0
            detail, until = f"rate={rate:g}%/h", t
        ids = self.ledger.faults([(t, d, kind, detail) for d in chosen])
        if until <= t:
            self.ledger.fault_end(ids, t)
        else:
            self._active.append(_Active(spec, chosen, ids, until, extra))
        log.warning("fault %s on %d device(s)%s%s", kind, len(chosen), f" ({detail})" if detail else "",
                    f" for {spec.duration:g} s" if spec.duration else "")  # fmt: skip
        return chosen

    def _bay_id(self, lot_id: str, index: int) -> str:
        return next(lot.bay_ids[index] for lot in self.lots if lot.id == lot_id)

    def _end(self, active: _Active, t: float) -> None:
        self._active.remove(active)
        kind = active.spec.kind
        if kind in ("dropout", "power_cut"):
            for d in active.devices:
                self.devices[d].powered = True
                self._next_refresh[d] = 0.0  # it boots and reads everything
            for d in active.devices:  # all at the same instant: the burst
                self.devices[d].publisher.unblock()
        elif kind == "partition":
            for d in active.devices:
                self.devices[d].publisher.unblock()
        elif kind == "flap":
            for key in active.extra.get("bays", []):
                self._flapping.pop(tuple(key), None)
            for d in active.devices:
                self._next_refresh[d] = 0.0  # the sensor is right again: say so
        self.ledger.fault_end(active.ledger_ids, t)
        log.warning("fault %s over on %d device(s)", kind, len(active.devices))

    # -- reporting ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters over all devices (for ``--stats`` and the bench)."""
        totals: dict[str, int] = {}
        pending = connected = blocked = 0
        for dev in self.devices.values():
            pending += dev.outbox.pending
            connected += dev.publisher.connected.is_set()
            blocked += dev.publisher.blocked
            for k, v in dev.publisher.stats.items():
                totals[k] = totals.get(k, 0) + v
        return {
            "t": time.time(),
            "sim_time": self.clock.now().isoformat(timespec="seconds"),
            "devices": len(self.devices),
            "connected": connected,
            "blocked": blocked,
            "pending": pending,
            "steps": self.steps,
            "step_errors": self.step_errors,
            "garbage_sent": self.garbage_sent,
            "emit_errors": sum(d.emit_errors for d in self.devices.values()),
            **totals,
        }

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        try:
            tmp = self.stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.stats()))
            os.replace(tmp, self.stats_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.stats_path, exc)
