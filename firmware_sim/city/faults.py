"""Fault specifications for the city fleet: ``kind=partition,devices=dev-bank-0*,at=60,for=300``.

A spec is comma-separated ``key=value`` pairs:

==========  =================================================================
key         meaning
==========  =================================================================
kind        one of :data:`KINDS` (below)
devices     which devices: ``all``, ``lots``, ``lockers``, ``cameras`` or
            fnmatch patterns of device ids, several joined by ``|``
            (default ``all``)
at          real seconds after the fleet started (default 0: at once)
for         real seconds the fault lasts (kinds with a duration; default:
            until the fleet stops)
n           ``garbage``: payloads per device (default 3); ``flap``: bays per
            device (default 1)
s           ``skew``: the clock error in seconds; ``step``: the jump
rate        ``battery``: percentage points lost per simulated hour (default 2)
==========  =================================================================

Kinds: ``dropout`` (the device is off: no readings, no connection; back
after ``for``), ``partition`` (network cut: readings pile up in the outbox,
sent when it heals), ``power_cut`` (every selected device off, then all back
at the same instant: the burst reconnect), ``reconnect`` (every selected
connection cut and re-made at once, outboxes intact), ``garbage`` (malformed
payloads on the device's topics), ``skew`` (the clock is off by ``s``),
``step`` (the clock jumps by ``s``), ``flap`` (``n`` bay sensors report
alternating states while the truth stays), ``battery`` (the battery level
falls in the status heartbeat).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

KINDS = ("dropout", "partition", "power_cut", "reconnect", "garbage", "skew", "step", "flap", "battery")
DURATION_KINDS = ("dropout", "partition", "power_cut", "flap")
GROUPS = {"lots": "bay_controller", "lockers": "locker_controller", "cameras": "camera_node"}


class FaultSpecError(ValueError):
    """A fault specification that cannot be parsed."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    devices: str = "all"
    at: float = 0.0
    duration: float | None = None
    n: int | None = None
    s: float | None = None
    rate: float | None = None

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse ``kind=...,devices=...,...``; raise :class:`FaultSpecError` naming what is wrong."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or not key:
                raise FaultSpecError(f"bad fault {text!r}: {part!r} is not key=value")
            if key in fields:
                raise FaultSpecError(f"bad fault {text!r}: {key!r} given twice")
            fields[key] = value.strip()
        kind = fields.pop("kind", "")
        if kind not in KINDS:
            raise FaultSpecError(f"bad fault {text!r}: kind must be one of {', '.join(KINDS)}")
        unknown = set(fields) - {"devices", "at", "for", "n", "s", "rate"}
        if unknown:
            raise FaultSpecError(f"bad fault {text!r}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            spec = cls(
                kind=kind,
                devices=fields.get("devices", "all") or "all",
                at=float(fields.get("at", "0")),
                duration=float(fields["for"]) if "for" in fields else None,
                n=int(fields["n"]) if "n" in fields else None,
                s=float(fields["s"]) if "s" in fields else None,
                rate=float(fields["rate"]) if "rate" in fields else None,
            )
        except ValueError as exc:
            raise FaultSpecError(f"bad fault {text!r}: {exc}") from None
        if spec.at < 0 or (spec.duration is not None and spec.duration <= 0):
            raise FaultSpecError(f"bad fault {text!r}: at must be >= 0 and for > 0")
        if spec.duration is not None and kind not in DURATION_KINDS:
            raise FaultSpecError(f"bad fault {text!r}: {kind} takes no 'for'")
        if kind in ("skew", "step") and spec.s is None:
            raise FaultSpecError(f"bad fault {text!r}: {kind} needs s=SECONDS")
        if spec.n is not None and spec.n < 1:
            raise FaultSpecError(f"bad fault {text!r}: n must be >= 1")
        return spec


def select(pattern: str, devices: dict[str, str]) -> list[str]:
    """Device ids (of ``devices``: id -> kind) that ``pattern`` names, in id order; [] if none."""
    chosen: set[str] = set()
    for part in pattern.split("|"):
        part = part.strip()
        if part == "all":
            chosen.update(devices)
        elif part in GROUPS:
            chosen.update(d for d, k in devices.items() if k == GROUPS[part])
        else:
            chosen.update(fnmatch.filter(devices, part))
    return sorted(chosen)
