"""Line-crossing logic with hysteresis.

Per track and line we keep a *committed* side. A side change is committed only
once the foot point is more than a dead band (a fraction of the person's height)
beyond the line, so a person jittering on the line or standing on it is counted
at most once. The event is dated to the first frame the foot was on the new side
(interpolated across frames where the person was not seen), which is what the
ground truth uses. Events of a track not yet confirmed are held back and released
on confirmation, or dropped if the track dies first (noise).

A committed side change is itself *held* until the person has cleared the line: the
foot point is ``clearance`` person heights past it, or the track ends on the new side.
If the foot comes back beyond the dead band on the old side first, the side change is
taken back and nothing is counted. This is the rule against the family of phantom
crossings: someone shuffling on the line and turning back, a foot point that drifts
while a person stands still (motion) or jumps when two people's boxes merge, a group
box that flickers, a track that dies on one side and is reborn on the other (the held
crossing travels with the lost track and is decided by its successor, see
:meth:`snapshot` / :meth:`inherit`). The price is latency: an event is published when
the person is about 0.5 m past the line, still dated to the crossing frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edge.camera.config import CountConfig
from edge.camera.lines import CountingLine, Point

log = logging.getLogger(__name__)

Direction = Literal["in", "out"]


@dataclass(frozen=True)
class CrossingEvent:
    """One person crossing one line. ``frame`` is 1-based: the first frame on the new side."""

    line: str
    direction: Direction
    frame: int
    t: float
    track_id: int


@dataclass
class _Obs:
    p: Point
    frame: int
    t: float
    d: float  # signed distance to the line, + on the in side


@dataclass
class _State:
    side: int = 0  # committed side: +1 in, -1 out, 0 not yet known
    anchor: _Obs | None = None  # latest observation on the committed side
    first_other: _Obs | None = None  # first observation past the line since the anchor
    held: CrossingEvent | None = None  # the side change into ``side``, until the line is cleared


class LineCrossingCounter:
    """Turns per-track foot-point observations into crossing events and running counts."""

    def __init__(self, lines: Sequence[CountingLine], cfg: CountConfig | None = None) -> None:
        self.lines = list(lines)
        self.cfg = cfg or CountConfig()
        self.counts: dict[str, dict[str, int]] = {ln.name: {"in": 0, "out": 0} for ln in self.lines}
        self._state: dict[tuple[int, str], _State] = {}
        self._pending: dict[int, list[CrossingEvent]] = {}
        self.birth_side = False  # trust the side a track is born on, within the dead band (person detectors)

    def update(
        self, track_id: int, foot: Point, frame: int, t: float, height_px: float, confirmed: bool
    ) -> list[CrossingEvent]:
        """Feed one measured foot point; returns events to publish now (possibly dated a little earlier)."""
        band = self.cfg.hysteresis * height_px
        clear = max(self.cfg.clearance * height_px, band)
        found = [ev for ln in self.lines if (ev := self._update_line(ln, track_id, foot, frame, t, band, clear))]
        if not confirmed:
            self._pending.setdefault(track_id, []).extend(found)
            return []
        return self.release(self._pending.pop(track_id, []) + found)

    def release(self, events: Sequence[CrossingEvent]) -> list[CrossingEvent]:
        """Count events decided elsewhere (held crossings of a finished track); returns them to publish."""
        for ev in events:
            self.counts[ev.line][ev.direction] += 1
            log.debug("crossing %s %s frame %d track %d", ev.line, ev.direction, ev.frame, ev.track_id)
        return list(events)

    def drop(self, track_id: int) -> None:
        """Forget a finished track; its unconfirmed events are discarded.

        Its held crossings are discarded too: take them with :meth:`snapshot` first (and hand them to
        :meth:`release_held` or a successor's :meth:`inherit`).
        """
        if self._pending.pop(track_id, None):
            log.debug("dropping unconfirmed events of track %d", track_id)
        for ln in self.lines:
            self._state.pop((track_id, ln.name), None)

    def snapshot(self, track_id: int) -> dict[str, _State]:
        """The per-line sides of a track, held crossings included, to hand over to its successor."""
        return {ln.name: self._state[(track_id, ln.name)] for ln in self.lines if (track_id, ln.name) in self._state}

    def release_held(self, states: dict[str, _State]) -> list[CrossingEvent]:
        """Count the held crossings in a :meth:`snapshot` (a track that ended on the new side completed them)."""
        return self.release([st.held for st in states.values() if st.held is not None])

    def inherit(
        self, track_id: int, states: dict[str, _State], frame: int | None = None, t: float | None = None
    ) -> None:
        """Start a new track with the committed sides of a lost one (same person found again).

        Without this a person lost while standing on a line (faded into the background) and
        found again on the far side would never be counted; with it, never twice.
        A person is lost that way because they stood still, so a crossing completed by the new
        track happened when they moved again: the anchor is re-dated to just before ``frame`` /
        ``t`` (the new track's first frame) instead of interpolating over the whole gap.
        """
        for name, st in states.items():
            if st.side != 0:
                anchor = st.anchor
                if anchor is not None and frame is not None and t is not None and frame > anchor.frame + 1:
                    anchor = _Obs(anchor.p, frame - 1, t, anchor.d)
                self._state[(track_id, name)] = _State(st.side, anchor, None, st.held)

    def _update_line(
        self, ln: CountingLine, track_id: int, foot: Point, frame: int, t: float, band: float, clear: float
    ) -> CrossingEvent | None:
        st = self._state.setdefault((track_id, ln.name), _State())
        obs = _Obs(foot, frame, t, ln.side(foot))
        if st.side == 0:
            # With a person detector, a track born within the dead band starts on the side its foot is on:
            # a person stepping out from behind someone just before the line has not crossed it yet, and is
            # counted when they do. A motion track born there is as often a fragment split off a blob, so it
            # needs a whole band first.
            if obs.d != 0 and (abs(obs.d) >= band or self.birth_side):
                st.side, st.anchor = (1 if obs.d > 0 else -1), obs
            return None
        if st.held is not None:
            if obs.d * st.side >= clear:
                cleared, st.held = st.held, None
                return cleared
            if -obs.d * st.side >= band:
                # Back beyond the band on the side it came from before clearing: nobody crossed.
                log.debug("track %d turned back on line %s; side change taken back", track_id, ln.name)
                st.side, st.anchor, st.first_other, st.held = -st.side, obs, None, None
                return None
        if obs.d * st.side > 0:
            st.anchor, st.first_other = obs, None
            return None
        if st.first_other is None:
            st.first_other = obs
        if -obs.d * st.side < band:
            return None  # on or just past the line: not committed yet
        ev = self._commit(ln, st, track_id)
        st.side, st.anchor, st.first_other = -st.side, obs, None
        if ev is not None and obs.d * st.side < clear:  # not yet clear of the line on the new side
            st.held = ev
            return None
        return ev

    @staticmethod
    def _commit(ln: CountingLine, st: _State, track_id: int) -> CrossingEvent | None:
        a, b = st.anchor, st.first_other
        assert a is not None and b is not None
        frac = a.d / (a.d - b.d) if a.d != b.d else 1.0
        cross = (a.p[0] + frac * (b.p[0] - a.p[0]), a.p[1] + frac * (b.p[1] - a.p[1]))
        if not 0.0 <= ln.along(cross) <= 1.0:
            return None  # went round the end of the segment
        # If the person was unseen between a and b, date the crossing by interpolation.
        frame = a.frame + max(1, math.ceil(frac * (b.frame - a.frame) - 1e-9))
        frame = min(frame, b.frame)
        t = a.t + (b.t - a.t) * (frame - a.frame) / max(b.frame - a.frame, 1)
        direction: Direction = "in" if st.side < 0 else "out"
        return CrossingEvent(ln.name, direction, frame, t, track_id)
