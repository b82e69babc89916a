"""Sign feeds under load: GET /v1/displays/{id} against bare pre-serialized bytes, an open-loop
latency run, and 1,000 SSE subscribers receiving a change.

    .venv/bin/python bench/server/bench_displays.py [--seconds 3 --rounds 3 --rate 1000 --subscribers 1000]

The server (uvicorn, one process, as ``district server`` runs it) is pinned to
CPU 0 and serves the Dresden demo site with every bay holding a fresh reading;
the load generator is pinned to CPU 1.

1. Throughput (closed loop, 32 keep-alive connections, interleaved rounds,
   medians): ``/v1/displays/vms-wilsdruffer`` against ``/bench/bytes``, a
   bare FastAPI endpoint in the same app returning the same number of
   pre-serialized JSON bytes. Target: ratio >= 0.8.
2. Latency at a fixed offered rate (open loop, ``openloop.py``: latencies
   from each request's due time, so queueing is not hidden). Target: p99 <=
   20 ms at 1,000 req/s.
3. Fan-out: ``--subscribers`` SSE clients on one sign; a bench-only endpoint
   flips bays of the sign's lots in the live state (as the MQTT stream does),
   and each client's receipt of the next event is timed from the moment the
   flip was sent. Target: p99 <= 200 ms with 1,000 subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "district" / "sites" / "dresden.yaml"
SIGN = "vms-wilsdruffer"
sys.path[:0] = [str(REPO), str(Path(__file__).parent)]

from bench_api import load, wait_up  # noqa: E402
from openloop import open_loop  # noqa: E402


def run_server(port: int, cpu: int | None, state_dir: str) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import uvicorn
    from fastapi import Response

    from contracts import SiteConfig, utcnow
    from contracts.configfile import load_model
    from server.app import create_app
    from server.live import BayReading, LiveState
    from server.settings import ServerSettings

    site = load_model(SITE, SiteConfig)
    live = LiveState(site)
    now = utcnow()
    rng = random.Random(1)
    n = 0
    for lot in site.parking:
        for bay_id in lot.bay_ids():
            n += 1
            at = now - timedelta(seconds=rng.uniform(0, 30))
            live.apply_bay(lot.id, bay_id, BayReading.of(rng.choice(["free", "occupied"]), at, f"bench{n:08d}"))
    # The baseline endpoints are public like the sign (unnamed paths need an operator).
    settings = ServerSettings(site_config=SITE, state_dir=Path(state_dir), access={"/bench": "public"})
    app = create_app(settings, site=site, live=live, connect=False, freeze_heap=True)  # as `district server`
    display = next(d for d in site.displays if d.id == SIGN)
    flips = {"n": 0}

    sample: dict[str, bytes] = {}

    @app.get("/bench/bytes", include_in_schema=False)
    async def bare() -> Response:
        # The same number of bytes the sign answers with, serialized once.
        if "body" not in sample:
            sign = app.state.displays.sign(SIGN)
            sample["body"] = bytes(len(sign.body))
        return Response(content=sample["body"], media_type="application/json")

    @app.post("/bench/flip", include_in_schema=False)
    async def flip() -> Response:
        # One bay of the sign's first lot changes state, as a reading from the stream would.
        flips["n"] += 1
        lot = site.lot(display.lots[0])
        assert lot is not None
        bay_id = lot.bay_ids()[flips["n"] % lot.total]
        held = live.bay(lot.id, bay_id)
        status = "occupied" if held is not None and held.status == "free" else "free"
        live.apply_bay(
            lot.id, bay_id, BayReading.of(status, utcnow(), f"flip{flips['n']:08d}", arrival=10**9 + flips["n"])
        )
        return Response(status_code=204)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _subscriber(port: int, ready: asyncio.Event, counter: list[int], n: int, arrivals: list[list[float]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/displays/{SIGN}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    mine: list[float] = []
    arrivals.append(mine)
    first = True
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"id:"):
                if first:  # the current state, sent on connect
                    first = False
                    counter[0] += 1
                    if counter[0] == n:
                        ready.set()
                    continue
                mine.append(time.perf_counter())
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        writer.close()


async def fanout(port: int, subscribers: int, changes: int, gap_s: float) -> dict[str, float]:
    ready = asyncio.Event()
    counter = [0]
    arrivals: list[list[float]] = []
    tasks = [asyncio.create_task(_subscriber(port, ready, counter, subscribers, arrivals)) for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: list[float] = []
    for _ in range(changes):
        await asyncio.sleep(gap_s)
        t = time.perf_counter()
        writer.write(b"POST /bench/flip HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        sent.append(t)
    await asyncio.sleep(max(1.0, gap_s))
    writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"subscribers": subscribers, "changes": changes, **deliveries(arrivals, sent)}


def deliveries(arrivals: list[list[float]], sent: list[float]) -> dict[str, float]:
    """Each subscriber's first event at or after each change, timed from the change (ms quantiles)."""
    latencies: list[float] = []
    missing = 0
    for mine in arrivals:
        for t in sent:
            after = [a for a in mine if a >= t]
            if after:
                latencies.append(after[0] - t)
            else:
                missing += 1
    latencies.sort()

    def q(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else -1.0

    return {"deliveries": len(latencies), "missing": missing, "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop offered rate (req/s)")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import tempfile

    from district.services import free_port

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    port = free_port()
    state_dir = tempfile.mkdtemp(prefix="bench-displays-")
    proc = mp.get_context("spawn").Process(target=run_server, args=(port, server_cpu, state_dir), daemon=True)
    proc.start()
    out: dict[str, object] = {}
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        asyncio.run(wait_up(port))
        endpoints = ["/bench/bytes", f"/v1/displays/{SIGN}"]
        runs: dict[str, list[dict[str, float]]] = {e: [] for e in endpoints}
        for _ in range(args.rounds):
            for e in endpoints:
                runs[e].append(asyncio.run(load(port, e, args.seconds, args.connections)))
        medians = {}
        for e, rs in runs.items():
            rs.sort(key=lambda r: r["req_per_s"])
            medians[e] = rs[len(rs) // 2]
            print(f"{e:<32} {medians[e]['req_per_s']:>6.0f} req/s (median of {len(rs)})  p99 {medians[e]['p99_ms']} ms")
        ratio = medians[endpoints[1]]["req_per_s"] / medians[endpoints[0]]["req_per_s"]
        print(f"ratio sign / bare bytes: {ratio:.2f} (target >= 0.8)")
        ol = asyncio.run(open_loop(port, f"/v1/displays/{SIGN}", args.rate, max(5.0, args.seconds))).summary()
        print(f"open loop {args.rate:.0f} req/s: {json.dumps(ol)} (target p99 <= 20 ms)")
        fo = asyncio.run(fanout(port, args.subscribers, args.changes, 0.5))
        print(f"fan-out: {json.dumps(fo)} (target p99 <= 200 ms)")
        out = {"throughput": medians, "ratio": round(ratio, 3), "open_loop": ol, "fanout": fo}
    finally:
        proc.terminate()
        proc.join(10)
    meta = {
        "python": platform.python_version(),
        "cpus": len(cpus),
        "server_pinned_cpu": server_cpu,
        "load_avg_at_end": os.getloadavg()[0],
    }
    print(json.dumps(meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, **out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
