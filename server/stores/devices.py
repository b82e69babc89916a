"""Devices: each one's last status message, when it was last heard, and the health judged from both.

Status messages are ordered by arrival, not by ``observed_at``: a last will
carries its connect time, older than the heartbeat it replaces. The broker's
retained status of every device is this store's bootstrap (delivered on every
subscribe), so it reads nothing from history.

Last heard, on the server's clock: any live message from the device (a
reading or a status) moves it to the message's heard time (``observed_at``
corrected by the device's clock offset, never later than its arrival). A
*retained* status is judged by its own time, ``observed_at`` (corrected by
the offset when one is known), never by when the broker handed it over: a
heartbeat the broker kept for 13 days is 13 days old
(``../shared/bugcases/02``).

State, judged when asked (first rule that applies): ``offline`` when the last
status says so (a last will, or a clean stop); ``silent`` when nothing was
heard for ``silent_after_heartbeats`` × ``heartbeat_s`` (site configuration;
3 × 60 s by default); ``unknown`` for a configured device never heard;
otherwise what the device reports (``online``, ``degraded``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from contracts import DeviceStatus
from contracts.site import DEFAULT_HEARTBEAT_S, DEFAULT_SILENT_AFTER_HEARTBEATS, SiteConfig
from server import models

if TYPE_CHECKING:
    from server.influx import InfluxClient


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's last status message and when it reached us.

    ``retained``: a copy the broker kept, delivered when we subscribed (so
    ``received_at`` says nothing about when it was sent).
    """

    status: DeviceStatus
    received_at: datetime
    retained: bool = False


class DeviceStore:
    name = "devices"

    def __init__(self, site: SiteConfig | None = None) -> None:
        self.site = site
        self._devices: dict[str, DeviceRecord] = {}
        #: Device id -> last heard (POSIX s, our clock).
        self._heard: dict[str, float] = {}
        self._lock = threading.Lock()

    def apply(self, record: DeviceRecord, heard: float) -> None:
        with self._lock:
            self._devices[record.status.device_id] = record
            self._heard_locked(record.status.device_id, heard)

    def heard_from(self, device_id: str, heard: float) -> None:
        """A live message from the device was heard at ``heard`` (POSIX s, our clock)."""
        with self._lock:
            self._heard_locked(device_id, heard)

    def _heard_locked(self, device_id: str, heard: float) -> None:
        if heard > self._heard.get(device_id, float("-inf")):
            self._heard[device_id] = heard

    def clear(self, device_id: str) -> bool:
        """Forget the device (its retained status was cleared: decommissioned), also when it was last heard."""
        with self._lock:
            self._heard.pop(device_id, None)
            return self._devices.pop(device_id, None) is not None

    def all(self) -> dict[str, DeviceRecord]:
        with self._lock:
            return dict(self._devices)

    def camera_states(self) -> dict[str, str]:
        """Each camera's last reported health state (``ok``, ``frozen``, ``black``, ...); offline devices'
        cameras are ``disconnected``."""
        out: dict[str, str] = {}
        with self._lock:
            for record in self._devices.values():
                for cam in record.status.cameras:
                    out[cam.camera_id] = "disconnected" if record.status.state == "offline" else cam.state
        return out

    # -- health ----------------------------------------------------------------

    def health(self, now: datetime, offsets: dict[str, float]) -> list[models.DeviceOut]:
        """Every configured device (site order), then every other device heard, by id."""
        now_ts = now.timestamp()
        with self._lock:
            configured = [d.id for d in self.site.devices] if self.site else []
            others = sorted((set(self._devices) | set(self._heard)) - set(configured))
            return [self._judge(d, now_ts, offsets.get(d)) for d in [*configured, *others]]

    def one(self, device_id: str, now: datetime, offsets: dict[str, float]) -> models.DeviceOut | None:
        with self._lock:
            known = self.site is not None and self.site.device(device_id) is not None
            if not known and device_id not in self._devices and device_id not in self._heard:
                return None
            return self._judge(device_id, now.timestamp(), offsets.get(device_id))

    def _judge(self, device_id: str, now_ts: float, offset: float | None) -> models.DeviceOut:
        config = self.site.device(device_id) if self.site else None
        heartbeat = config.heartbeat_s if config else DEFAULT_HEARTBEAT_S
        silent_after = config.silent_after_s if config else heartbeat * DEFAULT_SILENT_AFTER_HEARTBEATS
        record = self._devices.get(device_id)
        heard = self._heard.get(device_id)
        status = record.status if record else None
        state: models.DeviceState
        if status is not None and status.state == "offline":
            state = "offline"
        elif heard is None:
            state = "unknown"
        elif now_ts - heard > silent_after:
            state = "silent"
        else:
            state = status.state if status is not None else "online"
        return models.DeviceOut(
            id=device_id,
            kind=config.kind if config else None,
            description=config.description if config else None,
            configured=config is not None,
            state=state,
            reported_state=None if status is None else status.state,
            reason=None if status is None else status.reason,
            last_heard_at=None if heard is None else datetime.fromtimestamp(heard, UTC),
            last_heard_age_s=None if heard is None else round(max(0.0, now_ts - heard), 3),
            heartbeat_s=heartbeat,
            silent_after_s=silent_after,
            status_observed_at=None if status is None else status.observed_at,
            status_retained=None if record is None else record.retained,
            battery_pct=None if status is None else status.battery_pct,
            signal_dbm=None if status is None else status.signal_dbm,
            outbox_pending=None if status is None else status.outbox_pending,
            firmware=None if status is None else status.firmware,
            uptime_s=None if status is None else status.uptime_s,
            clock_offset_s=None if offset is None else round(offset, 3),
            cameras=[
                models.CameraOut(
                    camera_id=c.camera_id,
                    state=c.state,
                    fps=c.fps,
                    dropped_frames=c.dropped_frames,
                    last_frame_age_s=c.last_frame_age_s,
                )
                for c in (status.cameras if status else [])
            ],
        )

    def missing(self) -> int:
        return 0

    async def load_history(self, client: InfluxClient, site_id: str, window_s: float) -> tuple[int, int]:
        return 0, 0
