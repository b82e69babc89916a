"""Alerts for operators, computed continuously from the live state; each clears itself when its cause goes.

Every ``interval_s`` (5 s) the engine evaluates the rules below against the
live stores and the stream's counters. An alert is identified by
``{kind}:{subject type}:{subject id}``; it keeps its ``since`` while the
condition holds, changes its text/severity in place, and disappears when the
condition is gone. Each raise, change and clear is published to MQTT,
retained, on ``{prefix}/v1/{site}/alerts/{kind}/{subject type}/{subject id}``
(JSON of :class:`server.models.Alert`; an empty retained payload clears it),
so other systems can react (:func:`contracts.topics.alert_topic`). Those topics
are deeper than any reading's, so no reading subscription
(``{prefix}/v1/{site}/+/{kind}``) matches them, and the gateway, which
listens to everything under the prefix, takes them for control traffic.

Rules (constants below; the thresholds are ours, stated so they can be tuned):

- ``device_offline`` / ``device_silent`` (critical): a device's judged state
  (:mod:`server.stores.devices`); a configured device never heard is silent
  once the server has waited its ``silent_after_s``.
- ``camera_frozen`` / ``camera_black`` / ``camera_disconnected`` (critical):
  a camera's health in its device's status.
- ``battery_low``: below :data:`BATTERY_WARN_PCT` (warning),
  :data:`BATTERY_CRIT_PCT` (critical).
- ``clock_offset``: the device clock off by more than :data:`CLOCK_WARN_S`
  (warning) / :data:`CLOCK_CRIT_S` (critical). Live freshness is immune
  (judged on our clock), but history is stored in device time.
- ``outbox_growing`` (warning): the outbox grew over the device's last
  :data:`OUTBOX_SAMPLES` statuses and holds at least :data:`OUTBOX_MIN`
  readings, or holds at least :data:`OUTBOX_HIGH` (the device cannot deliver).
- ``lot_underreported``: fewer than :data:`REPORTING_SHARE` of a lot's bays
  report fresh (warning), none does (critical). Closed lots are exempt.
- ``bays_stuck`` (warning, one per lot): bays whose status has not changed for
  :data:`STUCK_CHURN_FACTOR` times the lot's mean interval between changes
  per bay (from its live churn) and at least :data:`STUCK_MIN_S`. A lot that
  barely changes (night) has no meaningful churn and raises nothing.
- ``bay_flapping`` (warning): :data:`FLAP_CHANGES` or more status changes of
  one bay within :data:`FLAP_WINDOW_S` (a failing sensor, a car on the line);
  both are the server's settings ``alert_flap_changes`` and
  ``alert_flap_window_s``, these constants their defaults.
- ``reject_rate`` (warning): the server's stream rejected at least
  :data:`REJECT_RATE` of the messages of the last :data:`REJECT_WINDOW_S`
  (and :data:`REJECT_MIN` messages): it validates with the same contract as
  the gateway, so a spike here is a spike there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from contracts import topics
from server import models
from server.live import LiveState

log = logging.getLogger(__name__)

BATTERY_WARN_PCT = 20.0
BATTERY_CRIT_PCT = 10.0
CLOCK_WARN_S = 60.0
CLOCK_CRIT_S = 3600.0
OUTBOX_SAMPLES = 3
OUTBOX_MIN = 100
OUTBOX_HIGH = 10_000
REPORTING_SHARE = 0.75
STUCK_CHURN_FACTOR = 20.0
STUCK_MIN_S = 6 * 3600.0
#: Live changes a lot needs in its trend window before its churn says anything about a stuck bay.
STUCK_MIN_CHANGES = 10
FLAP_CHANGES = 6
FLAP_WINDOW_S = 600.0
REJECT_RATE = 0.05
REJECT_WINDOW_S = 300.0
REJECT_MIN = 20
#: Listed bays per alert text at most.
TEXT_ITEMS = 5

#: Counter source for the reject-rate rule: () -> (messages seen, messages rejected), cumulative.
StreamCounts = Callable[[], tuple[int, int]]
Publish = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: models.AlertSeverity
    subject_type: str
    subject_id: str
    text: str
    value: float | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.subject_type}:{self.subject_id}"


def _age(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


class AlertEngine:
    """The current alerts of one site; evaluates on a timer and on request."""

    def __init__(
        self,
        live: LiveState,
        *,
        interval_s: float = 5.0,
        stream_counts: StreamCounts | None = None,
        topic_prefix: str = "district",
        flap_changes: int = FLAP_CHANGES,
        flap_window_s: float = FLAP_WINDOW_S,
    ) -> None:
        self.live = live
        self.flap_changes = flap_changes
        self.flap_window_s = flap_window_s
        self.interval_s = interval_s
        self.stream_counts = stream_counts
        self.publish: Publish | None = None
        self.topic_prefix = topic_prefix
        self._active: dict[str, models.Alert] = {}
        self._outbox: dict[str, deque[int]] = {}
        self._outbox_seen: dict[str, datetime] = {}
        self._rejects: deque[tuple[float, int, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._started: datetime | None = None
        self.evaluations = 0

    # -- lifetime ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AlertEngine]:
        self._task = asyncio.create_task(self._run(), name="alerts")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                self.evaluate()
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(self.interval_s)

    # -- evaluation ----------------------------------------------------------------

    def alerts(self) -> list[models.Alert]:
        """The current alerts, most severe first, then oldest first (evaluated now)."""
        self.evaluate()
        order = {"critical": 0, "warning": 1, "info": 2}
        return sorted(self._active.values(), key=lambda a: (order[a.severity], a.since, a.id))

    def evaluate(self, now: datetime | None = None) -> None:
        now = now or self.live.clock()
        if self._started is None:
            self._started = now
        found = {f.id: f for f in self._findings(now)}
        for alert_id, f in found.items():
            held = self._active.get(alert_id)
            alert = models.Alert(
                id=alert_id,
                kind=f.kind,
                severity=f.severity,
                subject=models.AlertSubject(type=f.subject_type, id=f.subject_id),
                since=held.since if held else now,
                text=f.text,
                value=f.value,
            )
            if held is None or (held.severity, held.text) != (alert.severity, alert.text):
                if held is None:
                    log.warning("alert raised: %s (%s): %s", alert_id, f.severity, f.text)
                self._active[alert_id] = alert
                self._send(alert, cleared=False)
        for alert_id in [a for a in self._active if a not in found]:
            alert = self._active.pop(alert_id)
            log.info("alert cleared: %s", alert_id)
            self._send(alert, cleared=True)
        self.evaluations += 1

    def _send(self, alert: models.Alert, *, cleared: bool) -> None:
        if self.publish is None:
            return
        topic = topics.alert_topic(
            self.topic_prefix, self.live.site.site.id, alert.kind, alert.subject.type, alert.subject.id
        )
        payload = b"" if cleared else json.dumps(alert.model_dump(mode="json")).encode()
        try:
            self.publish(topic, payload)
        except Exception:
            log.exception("cannot publish alert %s", alert.id)

    def _findings(self, now: datetime) -> list[Finding]:
        out: list[Finding] = []
        out += self._device_findings(now)
        out += self._lot_findings(now)
        out += self._reject_findings()
        return out

    def _device_findings(self, now: datetime) -> list[Finding]:
        out: list[Finding] = []
        for d in self.live.device_health(now):
            if d.state == "offline":
                why = f" ({d.reason})" if d.reason else ""
                out.append(Finding("device_offline", "critical", "device", d.id, f"device {d.id} is offline{why}"))
            elif d.state == "silent":
                age = _age(d.last_heard_age_s or 0.0)
                out.append(
                    Finding(
                        "device_silent", "critical", "device", d.id,
                        f"device {d.id} silent for {age} (heartbeat every {d.heartbeat_s:g} s)",
                        d.last_heard_age_s,
                    )
                )  # fmt: skip
            elif d.state == "unknown" and self._started is not None:
                waited = (now - self._started).total_seconds()
                if waited > d.silent_after_s:
                    out.append(
                        Finding(
                            "device_silent", "critical", "device", d.id,
                            f"device {d.id} not heard since the server started {_age(waited)} ago", waited,
                        )
                    )  # fmt: skip
            if d.state in ("offline", "unknown"):
                continue
            for cam in d.cameras:
                if cam.state in ("frozen", "black", "disconnected"):
                    out.append(
                        Finding(
                            f"camera_{cam.state}", "critical", "camera", cam.camera_id,
                            f"camera {cam.camera_id} on {d.id} is {cam.state}",
                        )
                    )  # fmt: skip
            if d.battery_pct is not None and d.battery_pct < BATTERY_WARN_PCT:
                sev: models.AlertSeverity = "critical" if d.battery_pct < BATTERY_CRIT_PCT else "warning"
                out.append(
                    Finding("battery_low", sev, "device", d.id, f"device {d.id} battery at {d.battery_pct:g} %",
                            d.battery_pct)
                )  # fmt: skip
            if d.clock_offset_s is not None and abs(d.clock_offset_s) > CLOCK_WARN_S:
                sev = "critical" if abs(d.clock_offset_s) > CLOCK_CRIT_S else "warning"
                where = "behind" if d.clock_offset_s > 0 else "ahead of"
                out.append(
                    Finding(
                        "clock_offset", sev, "device", d.id,
                        f"device {d.id} clock {_age(abs(d.clock_offset_s))} {where} the server's",
                        d.clock_offset_s,
                    )
                )  # fmt: skip
            out += self._outbox_findings(d)
        return out

    def _outbox_findings(self, d: models.DeviceOut) -> list[Finding]:
        if d.outbox_pending is None or d.status_observed_at is None:
            return []
        samples = self._outbox.setdefault(d.id, deque(maxlen=OUTBOX_SAMPLES))
        if self._outbox_seen.get(d.id) != d.status_observed_at:  # one sample per status message
            self._outbox_seen[d.id] = d.status_observed_at
            samples.append(d.outbox_pending)
        growing = (
            len(samples) == OUTBOX_SAMPLES
            and all(a < b for a, b in zip(samples, list(samples)[1:], strict=False))
            and samples[-1] >= OUTBOX_MIN
        )
        if growing or d.outbox_pending >= OUTBOX_HIGH:
            return [
                Finding(
                    "outbox_growing", "warning", "device", d.id,
                    f"device {d.id} has {d.outbox_pending} readings waiting to be delivered"
                    + (" and the number is growing" if growing else ""),
                    float(d.outbox_pending),
                )
            ]  # fmt: skip
        return []

    def _lot_findings(self, now: datetime) -> list[Finding]:
        out: list[Finding] = []
        for lot in self.live.lots(now):
            if lot.state == "closed" or lot.total == 0:
                continue
            known = lot.free + lot.occupied
            if known == 0:
                out.append(Finding("lot_underreported", "critical", "lot", lot.id, f"lot {lot.id}: no bay reports"))
            elif known / lot.total < REPORTING_SHARE:
                out.append(
                    Finding(
                        "lot_underreported", "warning", "lot", lot.id,
                        f"lot {lot.id}: only {known} of {lot.total} bays report ({100 * known / lot.total:.0f} %)",
                        known / lot.total,
                    )
                )  # fmt: skip
            changes, window = self.live.bays.churn(lot.id, now)
            if changes >= STUCK_MIN_CHANGES and window > 0:
                mean_interval = window * lot.total / changes
                threshold = max(STUCK_MIN_S, STUCK_CHURN_FACTOR * mean_interval)
                stuck = self.live.bays.unchanged_since(lot.id, now, threshold)
                if stuck:
                    stuck.sort(key=lambda s: s[2])
                    now_ts = now.timestamp()
                    listed = ", ".join(f"{b} ({st} {_age(now_ts - since)})" for b, st, since in stuck[:TEXT_ITEMS])
                    more = f" and {len(stuck) - TEXT_ITEMS} more" if len(stuck) > TEXT_ITEMS else ""
                    out.append(
                        Finding(
                            "bays_stuck", "warning", "lot", lot.id,
                            f"lot {lot.id}: {len(stuck)} bay(s) unchanged for over {_age(threshold)} while the lot"
                            f" changes every {_age(mean_interval)} per bay: {listed}{more}",
                            float(len(stuck)),
                        )
                    )  # fmt: skip
        for lot_id, bay, n in self.live.bays.flapping(now, self.flap_window_s, self.flap_changes):
            out.append(
                Finding(
                    "bay_flapping", "warning", "bay", f"{lot_id}.{bay}",
                    f"bay {bay} of lot {lot_id} changed {n} times in {_age(self.flap_window_s)}", float(n),
                )
            )  # fmt: skip
        return out

    def _reject_findings(self) -> list[Finding]:
        if self.stream_counts is None:
            return []
        messages, rejected = self.stream_counts()
        t = time.monotonic()
        self._rejects.append((t, messages, rejected))
        while len(self._rejects) > 1 and self._rejects[0][0] < t - REJECT_WINDOW_S:
            self._rejects.popleft()
        _, m0, r0 = self._rejects[0]
        dm, dr = messages - m0, rejected - r0
        if dr >= REJECT_MIN and dm > 0 and dr / dm >= REJECT_RATE:
            return [
                Finding(
                    "reject_rate", "warning", "site", self.live.site.site.id,
                    f"{dr} of {dm} messages rejected in the last {_age(REJECT_WINDOW_S)} ({100 * dr / dm:.0f} %)",
                    dr / dm,
                )
            ]  # fmt: skip
        return []


def stream_counts_of(health: Callable[[], models.BrokerHealth]) -> StreamCounts:
    def counts() -> tuple[int, int]:
        h = health()
        return h.messages, sum(h.rejected.values())

    return counts
