"""A real edge agent with no sensors, fed N parking-bay readings: the chaos suite's truth source.

    python tests/chaos/edge_driver.py --port 1883 --prefix p --site-id s --device-id d \
        --lot lot --bays 20 --outbox out.sqlite --ledger ledger.txt --count 1000 --rate 200 \
        --t0-us 1700000000000000 --tag run1 --status status.json

Builds :class:`edge.agent.EdgeAgent` from a :class:`edge.config.DeviceConfig`
without sensors, and puts readings into it with ``EdgeAgent.emit`` - the very
path a sensor thread takes: SQLite outbox, then the agent's MQTT publisher.

Reading ``i`` is fully determined by ``(tag, i)``: id ``{tag}-{i:07d}``,
``observed_at = t0 + i ms``, bay ``i % bays``. Each batch goes into the
outbox first, then its ids are appended to the ledger (flushed). On restart
(same outbox, same ledger) the cursor is the number of complete ledger lines,
so nothing in the ledger is emitted again; a batch that reached the outbox but
not the ledger (killed in between) is found in the outbox file and added to
the ledger, not emitted again: a sensor never emits one reading twice, and a
second emit would be a second reading (a new ``seq``, so a second point).

Runs until SIGTERM/SIGINT after the last reading, so the publisher can drain
the outbox; ``--status`` gets a small JSON file (emitted, outbox pending,
publisher counters) a few times a second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common.runtime import stop_on_signals
from contracts.messages import ParkingBayState
from district.services import BrokerAccess
from edge.agent import EdgeAgent
from edge.config import DeviceConfig

log = logging.getLogger("edge_driver")

STATUS_EVERY_S = 0.2


def reading(tag: str, i: int, *, t0: datetime, device_id: str, lot: str, bays: int) -> ParkingBayState:
    return ParkingBayState(
        device_id=device_id,
        observed_at=t0 + timedelta(milliseconds=i),
        reading_id=f"{tag}-{i:07d}",
        lot_id=lot,
        bay_id=bay_id(i % bays),
        status="occupied" if i % 3 else "free",
    )


def bay_id(n: int) -> str:
    return f"b{n + 1:03d}"


def recover_from_outbox(outbox: Path, ledger: Path, tag: str, cursor: int) -> int:
    """Readings of this run that reached the outbox but not the ledger: add them to the ledger, skip them."""
    import sqlite3

    if not outbox.exists():
        return cursor
    db = sqlite3.connect(outbox)
    try:
        payloads = [bytes(p) for (p,) in db.execute("SELECT payload FROM outbox ORDER BY id")]
    finally:
        db.close()
    found = set()
    for payload in payloads:
        rid = json.loads(payload).get("reading_id", "")
        if rid.startswith(f"{tag}-"):
            found.add(int(rid.rsplit("-", 1)[1]))
    extra = []
    while cursor + len(extra) in found:
        extra.append(f"{tag}-{cursor + len(extra):07d}")
    if extra:
        with open(ledger, "a", encoding="ascii") as f:
            f.write("".join(f"{rid}\n" for rid in extra))
        log.info("driver: %d reading(s) were in the outbox but not the ledger", len(extra))
    return cursor + len(extra)


def read_cursor(ledger: Path) -> int:
    """Complete lines in the ledger; a torn last line (killed mid-write) is cut off."""
    if not ledger.exists():
        return 0
    data = ledger.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(ledger, "r+b") as f:
            f.truncate(keep)
    return data[:keep].count(b"\n")


def write_status(path: Path, status: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--access", required=True, help="the broker and credential files (BrokerAccess JSON; no secret)")
    p.add_argument("--prefix", required=True)
    p.add_argument("--site-id", required=True)
    p.add_argument("--device-id", required=True)
    p.add_argument("--lot", required=True)
    p.add_argument("--bays", type=int, default=20)
    p.add_argument("--outbox", type=Path, required=True)
    p.add_argument("--ledger", type=Path, required=True)
    p.add_argument("--status", type=Path, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="readings per second; 0: as fast as the outbox takes them")
    p.add_argument("--batch", type=int, default=200, help="most readings per emit() call")
    p.add_argument("--t0-us", type=int, required=True, help="observed_at of reading 0, µs since the epoch")
    p.add_argument("--tag", required=True, help="reading id prefix")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")

    t0 = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=args.t0_us)
    config = DeviceConfig.model_validate(
        {
            "device": {"id": args.device_id, "site_id": args.site_id},
            "mqtt": {
                **BrokerAccess.from_json(args.access).edge_mqtt(),
                "topic_prefix": args.prefix,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 2.0,
                # The scenarios queue their whole backlog at the broker for the gateway.
                "max_unconfirmed": 100_000,
            },
            "outbox": {"path": str(args.outbox)},
            "status_interval_s": 5.0,
        }
    )
    stop = stop_on_signals()
    agent = EdgeAgent(config, stop=stop)
    agent.start()
    cursor = recover_from_outbox(args.outbox, args.ledger, args.tag, read_cursor(args.ledger))
    log.info("driver: %d of %d reading(s) already emitted; rate %s/s", cursor, args.count, args.rate or "max")
    started = time.monotonic()
    first = cursor
    next_status = 0.0
    try:
        with open(args.ledger, "a", encoding="ascii") as ledger:
            while not stop.is_set():
                now = time.monotonic()
                if cursor < args.count:
                    due = args.count if args.rate <= 0 else first + int((now - started) * args.rate) + 1
                    n = min(args.batch, args.count - cursor, max(0, due - cursor))
                    if n:
                        batch = [
                            reading(args.tag, i, t0=t0, device_id=args.device_id, lot=args.lot, bays=args.bays)
                            for i in range(cursor, cursor + n)
                        ]
                        agent.emit(batch)
                        if agent.emit_errors:
                            log.error("driver: the outbox refused readings; stopping")
                            return 1
                        ledger.write("".join(f"{m.reading_id}\n" for m in batch))
                        ledger.flush()
                        cursor += n
                if now >= next_status or cursor == args.count:
                    next_status = now + STATUS_EVERY_S
                    assert agent.outbox is not None and agent.publisher is not None
                    write_status(
                        args.status,
                        {
                            "emitted": cursor,
                            "count": args.count,
                            "pending": agent.outbox.pending,
                            "connected": agent.publisher.connected.is_set(),
                            "awaiting": agent.publisher.awaiting_confirmation,
                            "in_flight": agent.publisher.in_flight,
                            **agent.publisher.stats,
                        },
                    )
                if cursor >= args.count:
                    stop.wait(STATUS_EVERY_S)
                elif args.rate > 0:
                    stop.wait(min(0.02, max(0.0, (cursor - first) / args.rate - (time.monotonic() - started))))
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
