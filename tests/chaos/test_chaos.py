"""Fault injection with real processes (short form; ``bench/chaos/run.py --long`` is the long one).

Every scenario runs its own Mosquitto, InfluxDB, gateway and edge agent(s)
(see tests/chaos/harness.py), prints one line of figures and asserts: no
valid reading lost, none stored twice, none stored that nobody sent; for the
fuzz run also no hostile payload stored, every interleaved valid one stored,
and every reject counted by the gateway (stats point, log, dead letters).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from district.services import find_binary
from tests.chaos import harness
from tests.chaos.harness import Figures
from tests.conftest import need

pytestmark = pytest.mark.chaos

#: Short-form sizes: the whole module stays within ~3 minutes on a 2-core box.
N_KILL = 1_500
RATE = 300.0
N_BROKER = 2_000
BROKER_RATE = 1_000.0
N_BACKLOG = 5_000
N_OUTAGE = 1_500
OUTAGE_RATE = 100.0
OUTAGE_S = 10.0
N_FUZZ = 1_000


@pytest.fixture(autouse=True)
def _services_installed() -> Iterator[None]:
    need(
        find_binary("mosquitto") is not None and find_binary("influxd") is not None,
        "mosquitto and influxdb must be installed for the chaos suite",
    )
    yield


def report(fig: Figures) -> None:
    print(fig.line())


def assert_exactly_once(fig: Figures) -> None:
    assert fig.sent > 0, fig.line()
    assert fig.lost == 0, fig.line()
    assert fig.duplicated == 0, fig.line()
    assert fig.unexpected == 0, fig.line()
    assert fig.stored == fig.sent, fig.line()


def test_broker_sigkill_with_backlog_loses_nothing(tmp_path: Path) -> None:
    # The broker saves its queue every 100 changes: a SIGKILL loses what it had
    # acknowledged but not saved. The edge keeps each reading until the gateway
    # confirms it stored it, and re-sends what stays unconfirmed.
    fig = harness.run_broker_kill(tmp_path, N_BROKER, BROKER_RATE)
    report(fig)
    assert fig.rejected == 0, fig.line()
    assert_exactly_once(fig)


def test_gateway_sigkill_twice_loses_nothing(tmp_path: Path) -> None:
    fig = harness.run_gateway_kill(tmp_path, N_KILL, RATE)
    report(fig)
    assert fig.notes["gateway_runs"] == 3
    assert fig.rejected == 0, fig.line()
    assert_exactly_once(fig)


def test_edge_sigkill_twice_loses_nothing(tmp_path: Path) -> None:
    fig = harness.run_edge_kill(tmp_path, N_KILL, RATE)
    report(fig)
    assert fig.notes["edge_runs"] == 3
    assert fig.rejected == 0, fig.line()
    assert_exactly_once(fig)


@pytest.mark.parametrize("how", ["sigstop", "kill"])
def test_influxdb_outage_loses_nothing(tmp_path: Path, how: str) -> None:
    fig = harness.run_influx_outage(tmp_path, N_OUTAGE, OUTAGE_RATE, OUTAGE_S, how)
    report(fig)
    assert fig.notes["influx_down_s"] >= OUTAGE_S
    assert fig.rejected == 0, fig.line()
    assert_exactly_once(fig)


def test_backlog_drains_completely(tmp_path: Path) -> None:
    fig = harness.run_backlog(tmp_path, N_BACKLOG)
    report(fig)
    assert fig.rejected == 0, fig.line()
    assert_exactly_once(fig)


def test_fuzzed_payloads_are_rejected_counted_and_never_stored(tmp_path: Path) -> None:
    res = harness.run_fuzz(tmp_path, N_FUZZ, n_edge=500, rate=200.0)
    fig = res.figures
    report(fig)
    print(f"chaos fuzz categories={res.categories} dead_letter_reasons={res.reasons}")
    assert res.hostile_delivered == res.hostile  # the gateway subscribes to everything under the prefix
    assert res.hostile_stored == 0, fig.line()
    assert res.valid_sent == N_FUZZ // 4
    assert res.valid_stored == res.valid_sent, fig.line()
    # Every delivered hostile message counted once: stats point, log, dead-letter file agree.
    assert res.rejected_stats == res.hostile_delivered, (res.rejected_stats, res.hostile_delivered)
    assert res.rejected_log == res.hostile_delivered, (res.rejected_log, res.hostile_delivered)
    assert res.dead_letters == res.hostile_delivered, (res.dead_letters, res.hostile_delivered)
    assert_exactly_once(fig)
