"""History in InfluxDB 1.x: retention policies, continuous queries, and rebuilding rollups.

Set up by the gateway at start, in the background (:class:`HistoryMaintainer`):
a failure is logged and retried with backoff, never fatal for ingest, and
every step is idempotent, so each start (and each of several gateway workers)
may run it again.

1. **Retention policies** (:meth:`HistorySetup.ensure_policies`): the raw
   policy (the gateway's ``influx_rp``, else the database's default) keeps
   ``raw_days`` (30); :data:`contracts.history.RP_5M` and ``RP_1H`` keep the
   rollups (730 days). Created when missing, altered when their duration differs.
2. **Continuous queries** (:meth:`HistorySetup.ensure_queries`): one per
   :data:`contracts.history.ROLLUP_SPECS` entry and rollup interval, named
   ``district_<measurement>_<interval>_<hash of its text>``, so a changed
   definition is a new name: the new one is created and every other
   ``district_*`` query on the database dropped. Each runs at the end of
   every bucket and recomputes the last few (``RESAMPLE ... FOR``
   :data:`RESAMPLE_FOR_S`), so points up to that late are still counted.
3. **Catch-up and late data** (:meth:`HistorySetup.catch_up`,
   :meth:`HistorySetup.backfill`): InfluxDB does not run missed continuous
   queries after it was down, and points that arrive later than the resample
   window (an edge's outbox replayed after an outage) are never rolled up by
   them. So at start the gateway rebuilds each rollup from its last bucket
   (within the raw retention), and afterwards, every ``interval_s``, the
   buckets of whatever it wrote too late (:class:`gateway.snapshots.LateMarks`),
   with the *same* ``SELECT ... INTO`` the continuous query runs plus a time range.

The statement text is built here once (:func:`select_into`), for the
continuous queries, the backfills and the benchmark (``bench/history``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.influxdb import InfluxError, quote_ident
from common.retry import Backoff, Jitter
from contracts import history
from contracts.history import Rollup, RollupSpec
from contracts.site import HistoryConfig
from gateway.pipeline import RateLimitedLog
from gateway.snapshots import LateMarks

log = logging.getLogger(__name__)

_NS = 1_000_000_000
#: How far back each continuous query recomputes at every run (seconds, by rollup name).
RESAMPLE_FOR_S = {history.ROLLUP_5M.name: 900, history.ROLLUP_1H.name: 7200}
#: Prefix of the continuous queries the gateway owns (others on the database are left alone).
CQ_PREFIX = "district_"
#: A backfill statement covers at most this much time (seconds), so none holds a month in memory.
BACKFILL_CHUNK_S = 86_400

#: Runs one InfluxQL statement, returning its result's series (``gateway.influx.InfluxWriter.execute``).
Execute = Callable[[str], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What to set up on database ``db``: ``raw_rp`` (None: its default policy) and the days each policy keeps."""

    db: str
    raw_rp: str | None = None
    raw_days: int = 30
    rollup_5m_days: int = 730
    rollup_1h_days: int = 730
    #: ``raw_days`` was configured (site ``history.raw_days`` or the gateway setting), not the default:
    #: only then is an existing raw policy with a finite duration, an operator's choice, altered.
    raw_days_set: bool = field(default=False, compare=False)

    @classmethod
    def of(
        cls,
        db: str,
        *,
        raw_rp: str | None = None,
        config: HistoryConfig | None = None,
        raw_days: int | None = None,
        rollup_days: int | None = None,
    ) -> RetentionPlan:
        """From the site's ``history:`` section, overridden by the gateway's ``history_*_days`` settings."""
        config = config or HistoryConfig()
        rollup = rollup_days if rollup_days is not None else config.rollup_days
        rollup_5m = rollup_days if rollup_days is not None else (config.rollup_5m_days or config.rollup_days)
        return cls(
            db,
            raw_rp,
            raw_days if raw_days is not None else config.raw_days,
            rollup_5m,
            rollup,
            raw_days_set=raw_days is not None or "raw_days" in config.model_fields_set,
        )

    def rollup_days(self, rollup: Rollup) -> int:
        return self.rollup_5m_days if rollup is history.ROLLUP_5M else self.rollup_1h_days


# -- statement text (pure) ------------------------------------------------------------------


def measurement_ref(db: str, rp: str | None, measurement: str) -> str:
    """``"db"."rp"."measurement"`` (``"db".."measurement"``: the default policy)."""
    return f"{quote_ident(db)}.{quote_ident(rp) if rp else ''}.{quote_ident(measurement)}"


def select_into(
    spec: RollupSpec,
    rollup: Rollup,
    db: str,
    raw_rp: str | None,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> str:
    """The rollup's ``SELECT ... INTO``: what its continuous query runs, or (with a time range) a backfill."""
    fields = ", ".join(f"{a.func}({quote_ident(a.field)}) AS {quote_ident(a.alias)}" for a in spec.aggregates)
    where = ""
    if start_ns is not None and end_ns is not None:
        where = f" WHERE time >= {start_ns} AND time < {end_ns}"
    tags = ", ".join(quote_ident(t) for t in spec.tags)
    return (
        f"SELECT {fields} INTO {measurement_ref(db, rollup.rp, spec.measurement)}"
        f" FROM {measurement_ref(db, raw_rp, spec.measurement)}{where}"
        f" GROUP BY time({rollup.influx_duration}), {tags}"
    )


def cq_body(spec: RollupSpec, rollup: Rollup, db: str, raw_rp: str | None) -> str:
    """Everything of the continuous query after its name."""
    every = rollup.influx_duration
    resample = f"RESAMPLE EVERY {every} FOR {RESAMPLE_FOR_S[rollup.name]}s"
    return f"ON {quote_ident(db)} {resample} BEGIN {select_into(spec, rollup, db, raw_rp)} END"


def cq_name(spec: RollupSpec, rollup: Rollup, db: str, raw_rp: str | None) -> str:
    """``district_<measurement>_<interval>_<8 hex of the definition>``: a changed definition is a new name."""
    digest = hashlib.sha256(cq_body(spec, rollup, db, raw_rp).encode()).hexdigest()[:8]
    return f"{CQ_PREFIX}{spec.measurement}_{rollup.name}_{digest}"


def create_cq(spec: RollupSpec, rollup: Rollup, db: str, raw_rp: str | None) -> str:
    name = cq_name(spec, rollup, db, raw_rp)
    return f"CREATE CONTINUOUS QUERY {quote_ident(name)} {cq_body(spec, rollup, db, raw_rp)}"


def backfill_statements(
    spec: RollupSpec,
    rollup: Rollup,
    db: str,
    raw_rp: str | None,
    start_ns: int,
    end_ns: int,
    *,
    chunk_s: int = BACKFILL_CHUNK_S,
) -> list[str]:
    """``SELECT ... INTO`` statements rebuilding the rollup's buckets over [start, end), whole buckets, in chunks."""
    step = rollup.seconds * _NS
    start = start_ns // step * step
    end = -(-end_ns // step) * step
    chunk = max(chunk_s * _NS // step, 1) * step
    return [
        select_into(spec, rollup, db, raw_rp, start_ns=t, end_ns=min(t + chunk, end)) for t in range(start, end, chunk)
    ]


def shard_duration(days: int) -> str:
    """InfluxDB's recommended shard group duration for ``days``: 1h below 2 days, 1d to 6 months, else 7d."""
    if days < 2:
        return "1h"
    return "1d" if days <= 183 else "7d"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float:
    """A Go duration as SHOW RETENTION POLICIES prints it (``720h0m0s``) in seconds; ``0s`` is infinite (0)."""
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text))


def rows(series: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row of ``series`` as a dict (columns to values)."""
    return [dict(zip(s.get("columns") or [], v, strict=False)) for s in series for v in s.get("values") or []]


# -- setting up and rebuilding --------------------------------------------------------------


class HistorySetup:
    """The statements that set up and maintain history on one database; ``execute`` runs each.

    ``now_ns`` is the clock (ns since the epoch) that bounds rebuilt buckets to complete ones.
    """

    def __init__(self, execute: Execute, plan: RetentionPlan, *, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.execute = execute
        self.plan = plan
        self._now_ns = now_ns
        #: The raw policy's name once known (the database's default when the plan names none).
        self.raw_rp: str | None = plan.raw_rp

    def ensure(self) -> None:
        """Retention policies and continuous queries, as planned (idempotent)."""
        self.ensure_policies()
        self.ensure_queries()

    def ensure_policies(self) -> str:
        """Create or alter the raw and rollup policies; the raw policy's name."""
        plan = self.plan
        db = quote_ident(plan.db)
        existing = {str(r["name"]): r for r in rows(self.execute(f"SHOW RETENTION POLICIES ON {db}"))}
        raw = plan.raw_rp or next((name for name, r in existing.items() if r.get("default")), "autogen")
        wanted = [(raw, plan.raw_days), *((r.rp, plan.rollup_days(r)) for r in history.ROLLUPS)]
        for name, days in wanted:
            duration = f"DURATION {days}d REPLICATION 1 SHARD DURATION {shard_duration(days)}"
            held = existing.get(name)
            kept = parse_duration(str(held.get("duration", ""))) if held is not None else 0
            if name == raw and held is not None and kept > 0 and not plan.raw_days_set:
                # A finite raw policy someone set (a 7-day bucket, a small card) stays as it is unless the
                # site or the gateway says how long raw readings are kept; InfluxDB's infinite default
                # (nobody chose) takes the gateway's default.
                if abs(kept - days * 86_400) > 1:
                    log.info("history: raw policy %s keeps its %s (history.raw_days not set)", name, held["duration"])
                continue
            if held is None:
                self.execute(f"CREATE RETENTION POLICY {quote_ident(name)} ON {db} {duration}")
                log.info("history: created retention policy %s (%d days)", name, days)
            elif abs(parse_duration(str(held.get("duration", ""))) - days * 86_400) > 1:
                self.execute(f"ALTER RETENTION POLICY {quote_ident(name)} ON {db} {duration}")
                log.info("history: retention policy %s now keeps %d days (was %s)", name, days, held.get("duration"))
        self.raw_rp = raw
        return raw

    def ensure_queries(self) -> list[str]:
        """Create the continuous queries that are missing, drop the gateway's outdated ones; the names created."""
        db = self.plan.db
        wanted = {
            cq_name(spec, rollup, db, self.raw_rp): create_cq(spec, rollup, db, self.raw_rp)
            for spec in history.ROLLUP_SPECS
            for rollup in history.ROLLUPS
        }
        existing: set[str] = set()
        for series in self.execute("SHOW CONTINUOUS QUERIES"):
            if series.get("name") == db:
                existing |= {str(r["name"]) for r in rows([series])}
        created = []
        for name, statement in wanted.items():
            if name not in existing:
                self.execute(statement)
                created.append(name)
        for name in sorted(existing):
            if name.startswith(CQ_PREFIX) and name not in wanted:
                self.execute(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}")
                log.info("history: dropped outdated continuous query %s", name)
        if created:
            log.info("history: created %d continuous queries", len(created))
        return created

    def catch_up(self) -> int:
        """Rebuild each rollup from its last bucket (or the oldest raw point kept) to now; statements run."""
        now = self._now_ns()
        oldest = now - self.plan.raw_days * 86_400 * _NS
        run = 0
        for spec in history.ROLLUP_SPECS:
            for rollup in history.ROLLUPS:
                last = self._time_of("last", spec.aliases[0], rollup.rp, spec.measurement, oldest)
                if last is not None:
                    start = max(last - RESAMPLE_FOR_S[rollup.name] * _NS, oldest)
                else:
                    first = self._time_of("first", spec.aggregates[0].field, self.raw_rp, spec.measurement, oldest)
                    if first is None:
                        continue
                    start = first
                run += self._rebuild(spec, rollup, start, now)
        return run

    def backfill(self, start_ns: int) -> int:
        """Rebuild every rollup's complete buckets from ``start_ns`` to now; statements run."""
        now = self._now_ns()
        start = max(start_ns, now - self.plan.raw_days * 86_400 * _NS)
        return sum(
            self._rebuild(spec, rollup, start, now) for spec in history.ROLLUP_SPECS for rollup in history.ROLLUPS
        )

    def _rebuild(self, spec: RollupSpec, rollup: Rollup, start: int, now: int) -> int:
        step = rollup.seconds * _NS
        end = now // step * step  # complete buckets only: the continuous query does the current one
        statements = backfill_statements(spec, rollup, self.plan.db, self.raw_rp, start, end) if start < end else []
        for statement in statements:
            self.execute(statement)
        return len(statements)

    def _time_of(self, selector: str, field: str, rp: str | None, measurement: str, after: int) -> int | None:
        q = (
            f"SELECT {selector}({quote_ident(field)}) FROM {measurement_ref(self.plan.db, rp, measurement)}"
            f" WHERE time >= {after}"
        )
        found = [r.get("time") for r in rows(self.execute(q))]
        times = [t for t in found if isinstance(t, int)]
        return times[0] if times else None


class HistoryMaintainer:
    """The gateway's background history thread: set up (retrying), catch up, then rebuild late buckets.

    ``interval_s``: how often late points are looked for once set up;
    ``retry_max_s``: the longest wait between failed set-up attempts. The
    caller's ``execute`` must return epoch-ns times (``InfluxWriter`` does).
    """

    def __init__(
        self,
        setup: HistorySetup,
        late: LateMarks | None = None,
        *,
        interval_s: float = 60.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.setup = setup
        self.late = late
        self.interval_s = interval_s
        self._backoff = Backoff(retry_initial_s, retry_max_s, jitter=Jitter.below(0.5))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ratelog = RateLimitedLog(log, every=300.0)
        #: Set once the policies and queries are in place and the rollups caught up.
        self.ready = threading.Event()
        self.failures = 0
        self.backfills = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="gateway-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:
                if self._stop.is_set():
                    return  # stopping: the gateway may have closed the connection under us
                self.failures += 1
                delay = self._backoff.next_delay()
                if isinstance(exc, InfluxError):
                    self._ratelog(
                        logging.WARNING, "history", "history set-up failed, retrying in %.0f s: %s", delay, exc
                    )
                else:
                    log.exception("history maintenance failed (a bug); retrying in %.0f s", delay)
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            self._stop.wait(self.interval_s)

    def step(self) -> None:
        """One round: set up and catch up until that succeeded once, afterwards rebuild late buckets."""
        if not self.ready.is_set():
            self.setup.ensure()
            run = self.setup.catch_up()
            self.ready.set()
            log.info(
                "history ready: raw policy %s keeps %d days, rollups %d/%d days; %d catch-up statements",
                self.setup.raw_rp,
                self.setup.plan.raw_days,
                self.setup.plan.rollup_5m_days,
                self.setup.plan.rollup_1h_days,
                run,
            )
            return
        if self.late is None:
            return
        since = self.late.take()
        if since is None:
            return
        try:
            self.backfills += self.setup.backfill(since)
        except Exception:
            self.late.note(since)  # again next round
            raise
