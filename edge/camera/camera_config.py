"""Configuration of one camera process: source, lines and their zones, engine, health.

Config models reject unknown keys. A camera's YAML looks like::

    id: cam-altmarkt-north
    source: {url: "rtsp://user:secret@10.0.0.12/stream1"}   # or {path: ...} or {device: 0}
    lines_file: /etc/district/cam-altmarkt-north.lines.json  # E1's lines.json format
    line_zones: {north-gate: altmarkt}                       # every line -> the zone its "in" side leads into
    privacy: {polygons: [[[0.0, 0.0], [0.3, 0.0], [0.3, 0.2]]]}
    interval_s: 60
    occupancy_reset: "04:00"
    timezone: Europe/Berlin
    engine:                                                  # optional; docs/footfall.md
      detector: {type: hybrid}        # default; or detector (+ stride: 2), or motion for elevated views

Lines can also be given inline (``lines:`` with ``name, A, B, in_side_point, zone``,
plus ``image_size`` if they are in pixels of another resolution). The line names
are the ``line_id`` of the published counts, so they must be valid identifiers
and should equal the site file's ``cameras[].lines[].id``.
"""

from __future__ import annotations

import json
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from contracts.configfile import StrictModel
from contracts.messages import Ident
from contracts.site import SiteConfig
from edge.camera.config import EngineConfig, PrivacyConfig
from edge.camera.lines import CountingLine, lines_from_dict

Point = tuple[float, float]


_STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_DEVICE_PATH = re.compile(r"^/dev/video\d+$")


class SourceConfig(StrictModel):
    """Where frames come from: exactly one of ``url``, ``path`` or ``device``."""

    #: A network stream (RTSP, HTTP MJPEG/HLS, ...) opened through FFmpeg.
    url: Annotated[str, Field(min_length=1)] | None = None
    #: A video file (anything FFmpeg decodes); timestamps are frame_index / fps.
    path: Path | None = None
    #: A USB camera: V4L2 index (0) or device path (/dev/video0).
    device: Annotated[int, Field(ge=0)] | str | None = None

    #: Files only: start again at the end (demos) instead of ending the camera process.
    loop: bool = False
    #: Files only: pace frames to the file's frame rate, as if the file were a live camera.
    realtime: bool = False
    #: Frame rate to assume when the source reports none (files) / to request (devices).
    fps: Annotated[float, Field(gt=0, le=240)] | None = None
    #: Devices only: resolution to request from the driver.
    width: Annotated[int, Field(gt=0)] | None = None
    height: Annotated[int, Field(gt=0)] | None = None
    #: Streams only: RTSP over TCP survives lossy Wi-Fi far better than UDP.
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    #: FFmpeg open / read timeouts: a dead camera must not block the loop longer than this.
    open_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    #: Decoder threads (one camera per Pi core: keep 1).
    decoder_threads: Annotated[int, Field(ge=1, le=16)] = 1
    #: Reconnect backoff: first wait, doubled after each failed attempt up to the maximum.
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    #: Live sources: when processing falls behind, skip buffered frames (counted as dropped).
    skip_to_live: bool = True

    @field_validator("device")
    @classmethod
    def _device_ok(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not _DEVICE_PATH.match(value):
            raise ValueError("device must be a V4L2 index (0) or a path like /dev/video0")
        return value

    @field_validator("url")
    @classmethod
    def _url_ok(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(_STREAM_SCHEMES):
            raise ValueError(f"url must start with one of {', '.join(_STREAM_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceConfig:
        given = [n for n in ("url", "path", "device") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, path, device (got {', '.join(given) or 'none'})")
        if self.kind != "file" and (self.loop or self.realtime):
            raise ValueError("loop and realtime apply to file sources only")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self

    @property
    def kind(self) -> Literal["file", "device", "stream"]:
        if self.path is not None:
            return "file"
        if self.device is not None:
            return "device"
        return "stream"

    @property
    def live(self) -> bool:
        """Frames arrive in real time (a camera, or a file replayed with ``realtime``)."""
        return self.kind != "file" or self.realtime

    def describe(self) -> str:
        """The source for logs, with any password in a URL replaced by ``***``."""
        if self.url is not None:
            return redact_url(self.url)
        return str(self.path if self.path is not None else self.device)


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/x`` -> ``rtsp://user:***@host/x`` (never log a camera password)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)


class HealthConfig(StrictModel):
    """When a camera counts as frozen, black or disconnected. All times in seconds."""

    #: Time constant of the frame-rate EWMA.
    fps_window_s: Annotated[float, Field(gt=0)] = 3.0
    #: Picture unchanged (see ``frozen_mad``) for this long: ``frozen``.
    frozen_after_s: Annotated[float, Field(gt=0)] = 20.0
    #: Mean absolute difference (0..255 grey levels) of an 80x60 grey thumbnail against the
    #: first frame of the unchanged run, below which two frames count as identical. A frozen
    #: feed repeats the identical frame (difference 0); sensor noise on a static scene stays
    #: above this (measured: >= 0.06 at noise sigma 0.5, >= 0.15 at sigma 2, 768x576 and 1080p).
    frozen_mad: Annotated[float, Field(ge=0)] = 0.02
    #: Mean luminance (0..255) below this for ``black_after_s``: ``black`` (covered lens, IR failure).
    black_luma: Annotated[float, Field(ge=0, le=255)] = 16.0
    black_after_s: Annotated[float, Field(gt=0)] = 10.0
    #: No frame for this long (or reconnecting): ``disconnected``.
    disconnected_after_s: Annotated[float, Field(gt=0)] = 5.0
    #: A CameraHealth snapshot is sent this often, and at once on a state change.
    report_interval_s: Annotated[float, Field(gt=0)] = 5.0
    #: Look at the picture (luminance, sameness) at most this often: the probe costs 0.9 ms
    #: at 768x576 but 8.6 ms at 1080p, more than counting, and frozen/black take seconds.
    probe_interval_s: Annotated[float, Field(ge=0, le=5)] = 0.2


class InlineLine(StrictModel):
    """A counting line written into the camera config (same keys as lines.json, plus its zone)."""

    model_config = ConfigDict(populate_by_name=True)  # merged with StrictModel's

    name: Ident
    a: Point = Field(alias="A")
    b: Point = Field(alias="B")
    in_side_point: Point
    #: The zone a person enters when crossing in the "in" direction.
    zone: Ident
    in_means: str | None = None


class CameraConfig(StrictModel):
    """One camera: everything its process needs."""

    id: Ident
    source: SourceConfig
    #: Counting lines from a lines.json file (E1's format) ...
    lines_file: Path | None = None
    #: ... or inline.
    lines: list[InlineLine] = Field(default_factory=list)
    #: Reference image size (w, h) of inline lines; they are rescaled to the stream's frame size.
    image_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = None
    #: Line name -> zone id, for lines from ``lines_file`` (overrides an inline line's zone).
    line_zones: dict[str, Ident] = Field(default_factory=dict)
    #: Detector, person size, tracker and counting parameters (the footfall engine's config).
    engine: EngineConfig = Field(default_factory=EngineConfig)
    #: Polygons (normalised 0..1) blanked before any analysis, including health checks.
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    #: Length of a counting interval; intervals are aligned to multiples of it since midnight UTC.
    interval_s: Annotated[int, Field(ge=1, le=86_400)] = 60
    #: Local time at which zone occupancy is reset to 0 each day (None: never).
    occupancy_reset: time | None = time(4, 0)
    #: IANA time zone of ``occupancy_reset`` (use the site's ``site.timezone``).
    timezone: str = "UTC"
    health: HealthConfig = Field(default_factory=HealthConfig)
    #: OpenCV worker threads inside the camera process.
    cv_threads: Annotated[int, Field(ge=1, le=16)] = 1

    @field_validator("interval_s")
    @classmethod
    def _divides_day(cls, value: int) -> int:
        if 86_400 % value:
            raise ValueError("interval_s must divide a day (86400 s), e.g. 10, 60, 300, 900, 3600")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz_ok(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name like Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _lines_ok(self) -> CameraConfig:
        if (self.lines_file is None) == (not self.lines):
            raise ValueError("give exactly one of lines_file and lines")
        if self.lines:
            names = [ln.name for ln in self.lines]
            dups = sorted({n for n in names if names.count(n) > 1})
            if dups:
                raise ValueError(f"duplicate line name(s): {', '.join(dups)}")
            unknown = sorted(set(self.line_zones) - set(names))
            if unknown:
                raise ValueError(f"line_zones names unknown line(s): {', '.join(unknown)}")
        elif self.image_size is not None:
            raise ValueError("image_size is for inline lines; lines.json carries its own")
        return self

    @model_validator(mode="after")
    def _privacy_in_one_place(self) -> CameraConfig:
        if self.engine.privacy.polygons:
            raise ValueError(
                "privacy polygons belong under the camera's privacy: (one place, blanked before health checks "
                "and detection alike); engine.privacy is only for `district count` runs"
            )
        return self

    @property
    def privacy_polygons(self) -> list[list[Point]]:
        """The camera's privacy polygons (normalised 0..1): its one home is ``privacy``."""
        return [list(p) for p in self.privacy.polygons]

    def lines_doc(self) -> dict[str, Any]:
        """The lines in lines.json form (reads ``lines_file``; raises OSError / ValueError)."""
        if self.lines_file is not None:
            with open(self.lines_file, encoding="utf-8") as f:
                loaded: Any = json.load(f)
            if not isinstance(loaded, dict):
                raise ValueError(f"{self.lines_file}: not a lines.json object")
            return dict(loaded)
        doc: dict[str, Any] = {
            "lines": [{"name": ln.name, "A": ln.a, "B": ln.b, "in_side_point": ln.in_side_point} for ln in self.lines]
        }
        if self.image_size is not None:
            doc["image_size"] = list(self.image_size)
        return doc

    def resolve_lines(self, frame_size: tuple[int, int] | None = None) -> tuple[list[CountingLine], dict[str, str]]:
        """Counting lines scaled to ``frame_size`` (w, h), and line name -> zone id.

        Raises ValueError when a line has no zone or a name is not a valid id.
        """
        lines = lines_from_dict(self.lines_doc(), frame_size)
        zones = {ln.name: ln.zone for ln in self.lines}
        zones.update(self.line_zones)
        missing = [ln.name for ln in lines if ln.name not in zones]
        if missing:
            raise ValueError(f"camera {self.id}: no zone for line(s) {', '.join(missing)} (set line_zones)")
        bad = [ln.name for ln in lines if not _IDENT.match(ln.name)]
        if bad:
            raise ValueError(f"camera {self.id}: line name(s) {', '.join(bad)} are not valid ids")
        unused = sorted(set(zones) - {ln.name for ln in lines})
        if unused:
            raise ValueError(f"camera {self.id}: line_zones names unknown line(s): {', '.join(unused)}")
        return lines, {ln.name: zones[ln.name] for ln in lines}

    def check_site(self, site: SiteConfig, device_id: str | None = None) -> list[str]:
        """Disagreements with the site file: the camera is known (on ``device_id``, when given),
        and each line leads into the zone the site says. ``district check-config`` runs this
        when given a device file together with its site file.

        Reads ``lines_file``; raises OSError / ValueError when it cannot (see :meth:`resolve_lines`).
        """
        cam = next((c for c in site.cameras if c.id == self.id), None)
        if cam is None:
            return [f"camera {self.id}: not in the site configuration"]
        problems = []
        if device_id is not None and cam.device != device_id:
            problems.append(f"camera {self.id}: the site puts it on device {cam.device!r}, not {device_id!r}")
        _, zones = self.resolve_lines()
        site_zones = {ln.id: ln.zone for ln in cam.lines}
        for line, zone in zones.items():
            if line not in site_zones:
                problems.append(f"camera {self.id}: line {line!r} is not in the site configuration")
            elif site_zones[line] != zone:
                problems.append(f"camera {self.id}: line {line!r} leads into {zone!r}, site says {site_zones[line]!r}")
        return problems


_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
