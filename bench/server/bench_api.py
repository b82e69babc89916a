"""Requests per second of the guidance API: /v1/parking/lots against a trivial endpoint.

    .venv/bin/python bench/server/bench_api.py [--seconds 5] [--connections 32]

The server (uvicorn, one process, as ``district server`` runs it) is pinned to
CPU 0 and serves the Dresden demo site with every bay holding a fresh reading;
the load generator (raw asyncio keep-alive HTTP/1.1 connections, so the client
is not the bottleneck) is pinned to CPU 1. A trivial endpoint returning a tiny
pydantic model runs in the same app and the same run, as the baseline for the
framework's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "district" / "sites" / "dresden.yaml"

ENDPOINTS = [
    "/bench/trivial",
    "/v1/parking/lots",
    "/v1/parking/lots/dresdencentrumgalerie",
]


def run_server(port: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import uvicorn
    from pydantic import BaseModel

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
            at = now - timedelta(seconds=rng.uniform(0, 300))
            live.apply_bay(lot.id, bay_id, BayReading.of(rng.choice(["free", "occupied"]), at, f"bench{n:08d}"))
    # The baseline endpoint is public like the ones it is compared with (unnamed paths need an operator).
    settings = ServerSettings(site_config=SITE, access={"/bench": "public"})
    app = create_app(settings, site=site, live=live, connect=False)

    class Trivial(BaseModel):
        ok: bool

    @app.get("/bench/trivial", response_model=Trivial)
    async def trivial() -> Trivial:
        return Trivial(ok=True)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _worker(port: int, path: str, deadline: float, latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    done = 0
    try:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            status = head.split(b" ", 2)[1]
            await reader.readexactly(length)
            if status != b"200":
                raise RuntimeError(f"{path} answered {status.decode()}")
            latencies.append(time.perf_counter() - t)
            done += 1
    finally:
        writer.close()
        await writer.wait_closed()
    return done


async def load(port: int, path: str, seconds: float, connections: int) -> dict[str, float]:
    warm: list[float] = []
    await asyncio.gather(*(_worker(port, path, time.perf_counter() + 0.5, warm) for _ in range(connections)))
    latencies: list[float] = []
    start = time.perf_counter()
    counts = await asyncio.gather(*(_worker(port, path, start + seconds, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "req_per_s": round(sum(counts) / elapsed),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def wait_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            await w.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per endpoint per round")
    p.add_argument("--rounds", type=int, default=3, help="endpoints interleaved per round; the median is reported")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from district.services import free_port

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    port = free_port()
    proc = mp.get_context("spawn").Process(target=run_server, args=(port, server_cpu), daemon=True)
    proc.start()
    results: dict[str, dict[str, float]] = {}
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        asyncio.run(wait_up(port))
        # Interleaved rounds, so a noisy neighbour hurts every endpoint alike.
        runs: dict[str, list[dict[str, float]]] = {path: [] for path in ENDPOINTS}
        for _ in range(args.rounds):
            for path in ENDPOINTS:
                runs[path].append(asyncio.run(load(port, path, args.seconds, args.connections)))
        for path, rs in runs.items():
            rs.sort(key=lambda r: r["req_per_s"])
            r = {**rs[len(rs) // 2], "min_req_per_s": rs[0]["req_per_s"], "max_req_per_s": rs[-1]["req_per_s"]}
            results[path] = r
            print(
                f"{path:<40} {r['req_per_s']:>6.0f} req/s (median of {len(rs)}; {r['min_req_per_s']:.0f}"
                f"-{r['max_req_per_s']:.0f})  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.join(10)
    try:
        import h11  # noqa: F401

        http_impl = "h11"
        import httptools  # noqa: F401

        http_impl = "httptools"
    except ImportError:
        pass
    meta = {
        "python": platform.python_version(),
        "cpus": len(cpus),
        "server_pinned_cpu": server_cpu,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_avg_at_end": os.getloadavg()[0],
        "http": http_impl,
    }
    print(json.dumps(meta))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
