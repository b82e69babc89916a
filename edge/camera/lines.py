"""Counting lines: a named segment A-B plus a point telling which side is "in".

Lines are stored in image pixels of a reference image size (``image_size`` in
lines.json); :func:`load_lines` rescales them to the actual frame size so the
same file works for a downscaled or upscaled stream.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Point = tuple[float, float]


@dataclass(frozen=True)
class CountingLine:
    """A directed counting segment.

    ``side(p)`` is the signed distance (px) of ``p`` from the infinite line through A-B,
    positive on the side of ``in_side_point``; a move from negative to positive is "in".
    """

    name: str
    a: Point
    b: Point
    in_side_point: Point

    def __post_init__(self) -> None:
        if self.length <= 0:
            raise ValueError(f"line {self.name!r}: A and B coincide")
        if self._raw_side(self.in_side_point) == 0:
            raise ValueError(f"line {self.name!r}: in_side_point lies on the line")

    @property
    def length(self) -> float:
        return math.hypot(self.b[0] - self.a[0], self.b[1] - self.a[1])

    def _raw_side(self, p: Point) -> float:
        (ax, ay), (bx, by) = self.a, self.b
        return ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) / self.length

    @property
    def _orientation(self) -> float:
        return 1.0 if self._raw_side(self.in_side_point) > 0 else -1.0

    def side(self, p: Point) -> float:
        """Signed distance of p from the line, positive on the "in" side."""
        return self._orientation * self._raw_side(p)

    def along(self, p: Point) -> float:
        """Position of p's projection on A-B: 0 at A, 1 at B."""
        (ax, ay), (bx, by) = self.a, self.b
        dx, dy = bx - ax, by - ay
        return ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)

    def scaled(self, sx: float, sy: float) -> CountingLine:
        """The same line for an image scaled by (sx, sy)."""

        def s(p: Point) -> Point:
            return (p[0] * sx, p[1] * sy)

        return CountingLine(self.name, s(self.a), s(self.b), s(self.in_side_point))


def _pt(v: Any, what: str) -> Point:
    if not (isinstance(v, list | tuple) and len(v) == 2):
        raise ValueError(f"{what} must be [x, y], got {v!r}")
    return (float(v[0]), float(v[1]))


_REQUIRED = ("name", "A", "B", "in_side_point")
_OPTIONAL = ("in_means", "zone")  # notes for people; the camera config maps lines to zones


def _line(i: int, d: Any) -> CountingLine:
    """One entry of ``lines``; ``ValueError`` naming the entry for a missing, unknown or malformed key."""
    where = f"lines[{i}]" + (f" ({d.get('name')!r})" if isinstance(d, dict) and "name" in d else "")
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping with {', '.join(_REQUIRED)}, got {d!r}")
    missing = [k for k in _REQUIRED if k not in d]
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown key(s) {', '.join(unknown)}"] if unknown else []
        )
        raise ValueError(f"{where}: {'; '.join(parts)} (keys: {', '.join(_REQUIRED + _OPTIONAL)})")
    try:
        return CountingLine(
            str(d["name"]), _pt(d["A"], "A"), _pt(d["B"], "B"), _pt(d["in_side_point"], "in_side_point")
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def lines_from_dict(doc: dict[str, Any], frame_size: tuple[int, int] | None = None) -> list[CountingLine]:
    """Parse the lines.json structure; rescale from ``image_size`` to ``frame_size`` (w, h) if both are known."""
    raw = doc.get("lines")
    if not isinstance(raw, list) or not raw:
        raise ValueError("lines.json: 'lines' must be a non-empty list")
    lines = [_line(i, d) for i, d in enumerate(raw)]
    names = [ln.name for ln in lines]
    if len(set(names)) != len(names):
        raise ValueError(f"lines.json: duplicate line names in {names}")
    ref = doc.get("image_size")
    if frame_size is not None and ref is not None:
        sx, sy = frame_size[0] / float(ref[0]), frame_size[1] / float(ref[1])
        if abs(sx - 1) > 1e-9 or abs(sy - 1) > 1e-9:
            log.info("rescaling lines from %sx%s to %sx%s", ref[0], ref[1], frame_size[0], frame_size[1])
            lines = [ln.scaled(sx, sy) for ln in lines]
    return lines


def load_lines(path: str | Path, frame_size: tuple[int, int] | None = None) -> list[CountingLine]:
    """Load counting lines from a lines.json file (see module docstring for rescaling)."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return lines_from_dict(doc, frame_size)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
