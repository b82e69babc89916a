"""Privacy masks: polygons blanked out of every frame before any analysis.

:meth:`PrivacyMask.apply` blanks the full-resolution frame (what a generic detector
sees). The motion detector instead blanks its reduced work image with
:meth:`PrivacyMask.reduced_keep_mask`, which is conservative: a work pixel is kept
only if no masked full-resolution pixel can have contributed to it through the
resize, so nothing masked leaks even through interpolation at the mask border, at a
fraction of the cost of masking every full-resolution frame.
Polygons are given in normalised (0..1) image coordinates so they survive a
change of stream resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)


class PrivacyMask:
    """Blanks (sets to 0) every pixel inside any of the polygons."""

    def __init__(self, polygons: Sequence[Sequence[tuple[float, float]]]) -> None:
        for poly in polygons:
            if len(poly) < 3:
                raise ValueError(f"privacy polygon needs at least 3 points, got {len(poly)}")
        self._polygons = [np.asarray(p, dtype=np.float64) for p in polygons]
        self._keep: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._reduced: dict[tuple[int, int, int, int], np.ndarray] = {}

    @property
    def active(self) -> bool:
        return bool(self._polygons)

    def keep_mask(self, width: int, height: int) -> np.ndarray:
        """uint8 mask, 255 where pixels may be analysed, 0 inside privacy polygons (cached per size)."""
        if self._keep is None or self._shape != (height, width):
            keep = np.full((height, width), 255, np.uint8)
            scale = np.array([width, height], dtype=np.float64)
            pts = [np.round(p * scale).astype(np.int32) for p in self._polygons]
            if pts:
                cv2.fillPoly(keep, pts, 0)
            self._keep, self._shape = keep, (height, width)
            log.debug("privacy mask built for %dx%d: %d px blanked", width, height, int((keep == 0).sum()))
        return self._keep

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Return a copy of frame with masked pixels set to 0 (the input itself when no polygons)."""
        if not self._polygons:
            return frame
        keep = self.keep_mask(frame.shape[1], frame.shape[0])
        return cv2.bitwise_and(frame, frame, mask=keep)

    def reduced_keep_mask(self, width: int, height: int, work_w: int, work_h: int) -> np.ndarray:
        """Keep-mask for a (work_w, work_h) reduction of a (width, height) frame: 255 only where no masked
        pixel can contribute (the area footprint plus one work pixel of margin for a second resize step)."""
        key = (width, height, work_w, work_h)
        if key not in self._reduced:
            small = cv2.resize(self.keep_mask(width, height), (work_w, work_h), interpolation=cv2.INTER_AREA)
            keep = np.where(small == 255, 255, 0).astype(np.uint8)
            self._reduced[key] = cv2.erode(keep, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
        return self._reduced[key]

    def apply_reduced(self, small: np.ndarray, width: int, height: int) -> np.ndarray:
        """Blank, in a reduced copy ``small`` of a (width, height) frame, every pixel a masked one touches."""
        if not self._polygons:
            return small
        keep = self.reduced_keep_mask(width, height, small.shape[1], small.shape[0])
        return cv2.bitwise_and(small, small, mask=keep)
