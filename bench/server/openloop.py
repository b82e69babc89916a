"""An open-loop HTTP/1.1 load generator: requests at a fixed rate, whatever the answers do.

A closed loop (N connections, each sending its next request when the last
answer came back) slows down with the server and hides queueing: its latency
figures suffer from *coordinated omission* (Gil Tene, "How NOT to measure
latency", 2015; the reason wrk2 exists). Here request ``i`` is due at
``start + i / rate`` and its latency is measured from that due time, so a
stall shows up in every request that should have been sent meanwhile.

wrk2, vegeta and k6 do this but are not packaged for Debian 12 or PyPI; wrk
(Debian) is closed-loop. So: raw asyncio keep-alive connections from a pool
(a request waits for a free connection, and that wait counts), a few dozen
lines, reused by the display benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class OpenLoopResult:
    offered_per_s: float
    completed: int
    errors: int
    #: Sorted latencies in seconds, from each request's due time to its answer's last byte.
    latencies: list[float]
    elapsed_s: float

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        return self.latencies[min(len(self.latencies) - 1, int(q * len(self.latencies)))]

    def summary(self) -> dict[str, float]:
        return {
            "offered_per_s": self.offered_per_s,
            "achieved_per_s": round(self.completed / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "completed": self.completed,
            "errors": self.errors,
            "p50_ms": round(self.quantile(0.50) * 1000, 2),
            "p90_ms": round(self.quantile(0.90) * 1000, 2),
            "p99_ms": round(self.quantile(0.99) * 1000, 2),
            "max_ms": round(self.quantile(1.0) * 1000, 2),
        }


async def _request(
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]], request: bytes
) -> tuple[int, bytes]:
    reader, writer = await pool.get()
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        return int(head.split(b" ", 2)[1]), body
    finally:
        pool.put_nowait((reader, writer))


async def open_loop(
    port: int,
    path: str,
    rate: float,
    seconds: float,
    *,
    connections: int = 64,
    headers: dict[str, str] | None = None,
    ok: frozenset[int] = frozenset({200, 304}),
) -> OpenLoopResult:
    """Send ``GET path`` at ``rate`` per second for ``seconds``; latencies from each request's due time."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0

    async def one(due: float) -> None:
        nonlocal errors
        try:
            status, _ = await _request(pool, request)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            return
        if status not in ok:
            errors += 1
            return
        latencies.append(time.perf_counter() - due)

    n = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    latencies.sort()
    return OpenLoopResult(rate, len(latencies), errors, latencies, elapsed)
