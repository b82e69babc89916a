"""Fault-injection figures, short or long form, as a markdown table.

    .venv/bin/python bench/chaos/run.py            # the sizes of `pytest -m chaos`
    .venv/bin/python bench/chaos/run.py --long     # the sizes of issue 8 (minutes)
    .venv/bin/python bench/chaos/run.py --long --only backlog broker

The scenarios live in tests/chaos/harness.py (shared with the pytest suite);
this script only chooses sizes, runs them one after another and prints one
line per scenario plus the table for bench/chaos/README.md. Exit status 1 if
any scenario lost, duplicated or stored something it must not.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chaos import harness
from tests.chaos.harness import Figures


@dataclass(frozen=True)
class Sizes:
    kill_n: int
    kill_rate: float
    broker_n: int
    broker_rate: float
    outage_n: int
    outage_rate: float
    outage_s: float
    backlog_n: int
    fuzz_n: int
    fuzz_edge_n: int


SHORT = Sizes(1_500, 300.0, 2_000, 1_000.0, 1_500, 100.0, 10.0, 5_000, 1_000, 500)
# The InfluxDB outage starts at 1/3 of the stream; 9,000 at 100/s keeps the edge emitting through 60 s.
LONG = Sizes(10_000, 500.0, 15_000, 2_000.0, 9_000, 100.0, 60.0, 50_000, 10_000, 2_000)


def scenarios(s: Sizes) -> dict[str, Callable[[Path], Figures]]:
    def fuzz(d: Path) -> Figures:
        res = harness.run_fuzz(d, s.fuzz_n, n_edge=s.fuzz_edge_n, rate=200.0, timeout=300)
        fig = res.figures
        fig.notes.update(
            valid_interleaved=f"{res.valid_stored}/{res.valid_sent}",
            rejected_stats=res.rejected_stats,
            dead_letters=res.dead_letters,
        )
        ok = (
            res.hostile_stored == 0
            and res.valid_stored == res.valid_sent
            and res.rejected_stats == res.rejected_log == res.dead_letters == res.hostile_delivered
        )
        fig.notes["fuzz_ok"] = ok
        return fig

    return {
        "broker": lambda d: harness.run_broker_kill(d, s.broker_n, s.broker_rate, timeout=300),
        "gateway": lambda d: harness.run_gateway_kill(d, s.kill_n, s.kill_rate, timeout=300),
        "edge": lambda d: harness.run_edge_kill(d, s.kill_n, s.kill_rate, timeout=300),
        "influx-sigstop": lambda d: harness.run_influx_outage(
            d, s.outage_n, s.outage_rate, s.outage_s, "sigstop", timeout=300
        ),
        "influx-kill": lambda d: harness.run_influx_outage(
            d, s.outage_n, s.outage_rate, s.outage_s, "kill", timeout=300
        ),
        "backlog": lambda d: harness.run_backlog(d, s.backlog_n, timeout=900),
        "fuzz": fuzz,
    }


def ok(fig: Figures) -> bool:
    return (
        fig.lost == 0
        and fig.duplicated == 0
        and fig.unexpected == 0
        and fig.stored == fig.sent
        and fig.notes.get("fuzz_ok", True) is True
    )


def table(figs: list[Figures]) -> str:
    rows = [
        "| scenario | sent | stored | lost | duplicated | rejected | wall (s) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in figs:
        notes = ", ".join(f"{k} {v}" for k, v in f.notes.items())
        rows.append(
            f"| {f.scenario} | {f.sent:,} | {f.stored:,} | {f.lost:,} | {f.duplicated:,} | {f.rejected:,} "
            f"| {f.wall_s:.1f} | {notes} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--long", action="store_true", help="issue 8 sizes: 60 s outages, 50,000 backlog, 10,000 fuzz")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these: " + ", ".join(scenarios(SHORT)))
    p.add_argument("--workdir", type=Path, help="keep every process's files here (default: a temp dir, removed)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    todo = scenarios(LONG if args.long else SHORT)
    names = args.only or list(todo)
    unknown = [n for n in names if n not in todo]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    figs: list[Figures] = []
    try:
        for name in names:
            fig = todo[name](root / name)
            print(fig.line(), flush=True)
            figs.append(fig)
    finally:
        if args.workdir is None and all(ok(f) for f in figs):
            shutil.rmtree(root, ignore_errors=True)
        elif figs:
            print(f"process logs kept in {root}")
    print()
    print(table(figs))
    if args.json:
        args.json.write_text(json.dumps([f.__dict__ for f in figs], indent=2, default=str) + "\n")
    return 0 if all(ok(f) for f in figs) else 1


if __name__ == "__main__":
    sys.exit(main())
