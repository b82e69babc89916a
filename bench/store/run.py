"""One InfluxDB 1.x against one VictoriaMetrics single node: points per second in 5,000-line batches.

    .venv/bin/python bench/store/run.py [--readings 200000] [--rounds 3] [--json out.json]

Real processes on loopback, started through ``district.services`` (influxd
with the project's config, victoria-metrics with ``-dedup.minScrapeInterval=1ms``
as the gateway needs it). Each store is written by the gateway's own writer
(``InfluxWriter`` / ``VictoriaWriter``: one kept-alive HTTP connection,
synchronous, the way the gateway writes) the lines its sink makes of the
same ``parking_bay`` readings (``InfluxSink``: 1 line a reading;
``VictoriaSink``: 1 numeric line + a 4-state StateSet = 5 lines a reading),
in batches of 5,000 lines. Rounds alternate the stores (A B, B A, ...), each
round on a fresh database / series set (new site tag); readings span 20,000
bays of 20 lots, one reading per bay per round, 1 s apart per bay.

Reported per store: readings/s and lines/s (median over rounds), and the
ratio VictoriaMetrics / InfluxDB, measured in the same run. Also a
"same lines" figure: VictoriaMetrics given exactly InfluxDB's lines (its
string field then stored as 0), to separate the engine from our mapping.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts import ParkingBayState
from contracts.storage import to_points
from district import services
from gateway.influx import InfluxWriter, line_protocol
from gateway.victoria import VictoriaWriter, vm_points

BATCH = 5_000


def reading_lines(n: int, site: str) -> tuple[list[str], list[str]]:
    """(InfluxDB lines, VictoriaMetrics lines) of ``n`` bay readings."""
    t0 = datetime.now(UTC) - timedelta(days=1)
    influx: list[str] = []
    vm: list[str] = []
    for i in range(n):
        bay = i % 20_000
        message = ParkingBayState(
            device_id=f"edge-{bay // 1000:02d}",
            observed_at=t0 + timedelta(seconds=i // 20_000, microseconds=bay),
            reading_id=f"r{i:012d}",
            lot_id=f"lot-{bay // 1000:02d}",
            bay_id=f"B{bay:05d}",
            status="occupied" if (i * 7) % 3 else "free",
            seq=i,
        )
        for point in to_points(message, site_id=site, received_at=t0):
            influx.append(line_protocol(point))
            vm.extend(line_protocol(p) for p in vm_points(point))
    return influx, vm


def write_all(writer: InfluxWriter, lines: list[str]) -> float:
    """Seconds to write ``lines`` in batches of :data:`BATCH`; fails on any refused line."""
    start = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        result = writer.write(lines[i : i + BATCH])
        assert result.ok, result.dropped[:3]
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        influxd = services.start_influxd(Path(tmp) / "influxd")
        vm = services.VictoriaMetrics.start(Path(tmp) / "vm")
        try:
            out = run(influxd, vm, args.readings, args.rounds)
        finally:
            vm.stop()
            influxd.stop()
    out["load_avg"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def run(influxd: services.Service, vm: services.Service, n: int, rounds: int) -> dict[str, object]:
    times: dict[str, list[float]] = {"influxdb": [], "victoriametrics": [], "victoriametrics_same_lines": []}
    counts: dict[str, int] = {}
    for r in range(rounds):
        influx_lines, vm_lines = reading_lines(n, f"site{r}")
        counts = {"influxdb": len(influx_lines), "victoriametrics": len(vm_lines)}
        same_lines, _ = reading_lines(n, f"same{r}")
        db = f"bench{r}"
        with (
            InfluxWriter(f"http://{influxd.host}:{influxd.port}", db) as iw,
            VictoriaWriter(f"http://{vm.host}:{vm.port}") as vw,
        ):
            iw.create_database()
            order = [("influxdb", iw, influx_lines), ("victoriametrics", vw, vm_lines)]
            for name, writer, lines in order if r % 2 == 0 else order[::-1]:
                times[name].append(write_all(writer, lines))
            times["victoriametrics_same_lines"].append(write_all(vw, same_lines))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    result: dict[str, object] = {
        "readings": n,
        "rounds": rounds,
        "batch_lines": BATCH,
        "lines_per_reading": {k: v / n for k, v in counts.items()},
        "readings_per_s": {name: round(n / t) for name, t in med.items()},
        "lines_per_s": {
            "influxdb": round(counts["influxdb"] / med["influxdb"]),
            "victoriametrics": round(counts["victoriametrics"] / med["victoriametrics"]),
            "victoriametrics_same_lines": round(counts["influxdb"] / med["victoriametrics_same_lines"]),
        },
        "ratio_vm_to_influx_readings": round(med["influxdb"] / med["victoriametrics"], 2),
        "ratio_vm_to_influx_same_lines": round(med["influxdb"] / med["victoriametrics_same_lines"], 2),
        "seconds": times,
    }
    return result


if __name__ == "__main__":
    raise SystemExit(main())
