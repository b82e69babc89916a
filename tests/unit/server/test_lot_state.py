"""A lot's state never contradicts its free count (bugcase 12), whatever full_below says."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from contracts import ParkingBayState
from contracts.site import LotConfig, SiteConfig
from server.live import BayReading, LiveState, summarize_lot

T0 = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)


def lot(bays: list[str], full_below: int, *, closed: bool = False, stale_after_s: float = 60) -> LotConfig:
    return LotConfig.model_validate(
        {
            "id": "L",
            "name": "L",
            "coords": {"lat": 51, "lng": 13},
            "bays": bays,
            "full_below": full_below,
            "closed": closed,
            "stale_after_s": stale_after_s,
        }
    )


def readings(statuses: list[str], *, age_s: float = 1) -> dict[str, BayReading]:
    at = T0 - timedelta(seconds=age_s)
    return {f"b{i}": BayReading.of(s, at, f"r{i}") for i, s in enumerate(statuses)}


def test_bugcase_12_no_reserve_lot_with_nothing_free_is_full() -> None:
    out = summarize_lot(lot(["c1", "c2"], 0), readings(["occupied", "occupied"]), T0)
    assert (out.free, out.state) == (0, "full")


def test_bugcase_12_lot_smaller_than_its_reserve_with_every_bay_free_is_open() -> None:
    out = summarize_lot(lot(["d1"], 5), readings(["free"]), T0)
    assert (out.free, out.state) == (1, "open")


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("full_below", [0, 1, 2, 3, 4, 5, 6, 50])
def test_state_never_contradicts_the_free_count(size: int, full_below: int) -> None:
    """Every combination of free / occupied / unknown / stale / no reading, every full_below."""
    bays = [f"b{i}" for i in range(size)]
    the_lot = lot(bays, full_below)
    kinds = ["free", "occupied", "unknown", "stale-free", "missing"]
    for combo in itertools.product(kinds, repeat=size):
        held = {}
        for i, kind in enumerate(combo):
            if kind == "missing":
                continue
            status, age = ("free", 120.0) if kind == "stale-free" else (kind, 1.0)
            held[f"b{i}"] = BayReading.of(status, T0 - timedelta(seconds=age), f"r{i}")
        out = summarize_lot(the_lot, held, T0)
        assert out.free == combo.count("free"), combo
        assert out.free + out.occupied + out.unknown == size, combo
        if out.free + out.occupied == 0:
            assert out.state == "nodata", combo
        elif out.free == 0:
            assert out.state == "full", combo  # nothing free: never "open"
        elif out.free == size:
            assert out.state == "open", combo  # everything free: never "full"
        else:
            # In between, the reserve decides: full exactly while fewer than it are free.
            reserve = min(max(full_below, 1), max(size - 1, 1))
            assert out.state == ("full" if out.free < reserve else "open"), combo


@pytest.mark.parametrize(
    ("full_below", "free", "state"),
    [(0, 0, "full"), (0, 1, "open"), (1, 0, "full"), (1, 1, "open"), (3, 2, "full"), (3, 3, "open"), (9, 9, "open")],
)
def test_a_valid_reserve_is_applied_as_configured(full_below: int, free: int, state: str) -> None:
    statuses = ["free"] * free + ["occupied"] * (10 - free)
    out = summarize_lot(lot([f"b{i}" for i in range(10)], full_below), readings(statuses), T0)
    assert (out.free, out.state) == (free, state)


def test_a_lot_without_bays_has_no_data() -> None:
    out = summarize_lot(lot([], 1), {}, T0)
    assert (out.total, out.free, out.state, out.percent_free) == (0, 0, "nodata", None)


@pytest.mark.parametrize("statuses", [["free", "free"], ["occupied", "occupied"], []])
def test_a_closed_lot_is_closed_whatever_its_bays_say(statuses: list[str]) -> None:
    out = summarize_lot(lot(["b0", "b1"], 0, closed=True), readings(statuses), T0)
    assert out.state == "closed"
    assert out.free == statuses.count("free")


def test_most_bays_stale_the_few_fresh_decide_and_stale_never_counts_as_free() -> None:
    held = readings(["free"] * 8, age_s=600)  # stale
    held.update({"f0": BayReading.of("free", T0, "f0"), "f1": BayReading.of("occupied", T0, "f1")})
    bays = [*held]
    out = summarize_lot(lot(bays, 3), held, T0)
    assert (out.free, out.occupied, out.unknown, out.state) == (1, 1, 8, "full")
    held["f1"] = BayReading.of("free", T0, "f1x")
    held["f2"] = BayReading.of("free", T0, "f2")
    out = summarize_lot(lot([*held], 3), held, T0)
    assert (out.free, out.unknown, out.state) == (3, 8, "open")


def test_live_state_applies_the_same_rule() -> None:
    """The cached path (LiveState.lot) uses render_lot with the site's bay count, too."""
    site = SiteConfig.model_validate(
        {
            "site": {"id": "s", "name": "S"},
            "parking": [
                {"id": "noreserve", "name": "N", "coords": {"lat": 1, "lng": 1}, "bays": ["c1", "c2"], "full_below": 0},
                {"id": "tiny", "name": "T", "coords": {"lat": 1, "lng": 1}, "bays": ["d1"], "full_below": 5},
            ],
        }
    )
    live = LiveState(site, lambda: T0)
    for lot_id, bay_id, status in (
        ("noreserve", "c1", "occupied"),
        ("noreserve", "c2", "occupied"),
        ("tiny", "d1", "free"),
    ):
        live.apply_message(
            ParkingBayState(
                device_id="dev1",
                observed_at=T0,
                reading_id=f"reading-{bay_id}",
                lot_id=lot_id,
                bay_id=bay_id,
                status=status,
            )
        )
    assert {x.id: (x.free, x.state) for x in live.lots()} == {"noreserve": (0, "full"), "tiny": (1, "open")}
