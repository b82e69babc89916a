"""The sign rendering rules (server.displays.render), table-driven on plain source views."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.site import Display
from server.displays.render import TEST_PATTERN, Override, Rendered, SourceView, render


def display(**kw: Any) -> Display:
    base: dict[str, Any] = {"id": "d", "kind": "garage", "coords": {"lat": 51.0, "lng": 13.7}, "lots": ["a"]}
    return Display.model_validate(base | kw)


def lot(
    free: int,
    *,
    total: int = 100,
    reporting: int | None = None,
    age: float | None = 5.0,
    closed: bool = False,
    id: str = "a",
) -> SourceView:
    return SourceView(id, "lot", free, total, total if reporting is None else reporting, total, age, closed)


def zone(
    people: int | None, *, capacity: int = 100, age: float | None = 5.0, level: Any = "low", id: str = "z"
) -> SourceView:
    ok = people is not None
    return SourceView(id, "zone", people, capacity, 1 if ok else 0, 1, age, level=level if ok else None)


def shown(r: Rendered) -> tuple[int | None, str, str, str]:
    return r.value, r.text, r.mode, r.state


def override(mode: Any, text: str | None = None) -> Override:
    return Override(mode, text, until=2e9, by="ops", reason=None, set_at=1e9)


CASES: list[tuple[str, dict[str, Any], list[SourceView], tuple[int | None, str, str, str]]] = [
    ("the number", {}, [lot(42)], (42, "42", "auto", "open")),
    ("cascade: lots and levels sum", {"lots": ["a", "b"]}, [lot(42), lot(8, id="b")], (50, "50", "auto", "open")),
    ("offset keeps a buffer", {"offset": -5}, [lot(42)], (37, "37", "auto", "open")),
    ("offset above the sum", {"offset": -50}, [lot(42)], (0, "FULL", "auto", "full")),
    ("a positive offset", {"offset": 3}, [lot(42)], (45, "45", "auto", "open")),
    ("clamped to max_value", {"max_value": 30}, [lot(42)], (30, "30", "auto", "open")),
    ("clamped to min_value", {"min_value": 10, "full_threshold": 0}, [lot(3)], (10, "10", "auto", "open")),
    ("clamp after offset", {"offset": -40, "min_value": 5}, [lot(42)], (5, "5", "auto", "open")),
    ("full at 0 free", {}, [lot(0)], (0, "FULL", "auto", "full")),
    ("full threshold as a reserve", {"full_threshold": 3}, [lot(3)], (3, "FULL", "auto", "full")),
    ("just above the full threshold", {"full_threshold": 3}, [lot(4)], (4, "4", "auto", "open")),
    ("low at the threshold", {"low_threshold": 10}, [lot(10)], (10, "LOW", "auto", "low")),
    ("low text configured", {"low_threshold": 10, "low_text": "FEW"}, [lot(7)], (7, "FEW", "auto", "low")),
    ("above low", {"low_threshold": 10}, [lot(11)], (11, "11", "auto", "open")),
    ("full wins over low", {"low_threshold": 10, "full_threshold": 2}, [lot(1)], (1, "FULL", "auto", "full")),
    ("full text configured", {"full_text": "BESETZT"}, [lot(0)], (0, "BESETZT", "auto", "full")),
    ("low after the offset", {"offset": -5, "low_threshold": 10}, [lot(14)], (9, "LOW", "auto", "low")),
    ("closed in the configuration", {"closed": True}, [lot(42)], (0, "CLOSED", "auto", "closed")),
    ("closed text", {"closed": True, "closed_text": "ZU"}, [lot(42)], (0, "ZU", "auto", "closed")),
    (
        "every source lot closed",
        {"lots": ["a", "b"]},
        [lot(4, closed=True), lot(5, closed=True, id="b")],
        (0, "CLOSED", "auto", "closed"),
    ),
    ("one of two lots closed", {"lots": ["a", "b"]}, [lot(4, closed=True), lot(5, id="b")], (9, "9", "auto", "open")),
    ("closed even without data", {"closed": True}, [lot(0, reporting=0, age=None)], (0, "CLOSED", "auto", "closed")),
    ("stale: blank by default", {}, [lot(42, age=121)], (None, "", "auto", "fallback")),
    ("at the stale limit still shows", {}, [lot(42, age=120)], (42, "42", "auto", "open")),
    ("stale limit of the kind (parking 300 s)", {"kind": "parking"}, [lot(42, age=250)], (42, "42", "auto", "open")),
    ("stale_after_s configured", {"stale_after_s": 10}, [lot(42, age=11)], (None, "", "auto", "fallback")),
    (
        "stale fallback text",
        {"fallback": "text", "fallback_text": "---"},
        [lot(42, age=999)],
        (None, "---", "auto", "fallback"),
    ),
    ("never heard", {}, [lot(0, reporting=0, age=None)], (None, "", "auto", "fallback")),
    (
        "one stale source makes the sum stale",
        {"lots": ["a", "b"]},
        [lot(4), lot(5, age=500, id="b")],
        (None, "", "auto", "fallback"),
    ),
    ("trust: 75 of 100 bays report", {}, [lot(42, reporting=75)], (42, "42", "auto", "open")),
    ("trust: 74 of 100 bays report", {}, [lot(42, reporting=74)], (None, "", "auto", "fallback")),
    ("trust share configured", {"trust_share": 0.5}, [lot(42, reporting=50)], (42, "42", "auto", "open")),
    (
        "trust over all sources' bays",
        {"lots": ["a", "b"]},
        [lot(4, reporting=100), lot(5, total=100, reporting=50, id="b")],
        (9, "9", "auto", "open"),
    ),
    (
        "people: the crowd level",
        {"lots": [], "zones": ["z"]},
        [zone(37, level="moderate")],
        (37, "MODERATE", "auto", "open"),
    ),
    (
        "people: the most crowded zone",
        {"lots": [], "zones": ["z", "y"]},
        [zone(37, level="moderate"), zone(80, level="very_high", id="y")],
        (117, "VERY HIGH", "auto", "open"),
    ),
    (
        "people: no capacity, the number",
        {"lots": [], "zones": ["z"]},
        [zone(12, level=None)],
        (12, "12", "auto", "open"),
    ),
    (
        "people: no full/low text",
        {"lots": [], "zones": ["z"], "low_threshold": 50},
        [zone(0)],
        (0, "LOW", "auto", "open"),
    ),
    (
        "people: a nodata zone falls back",
        {"lots": [], "zones": ["z", "y"], "fallback": "text", "fallback_text": "--"},
        [zone(37), zone(None, age=None, id="y")],
        (None, "--", "auto", "fallback"),
    ),
    (
        "people: clamps",
        {"lots": [], "zones": ["z"], "max_value": 99},
        [zone(150, capacity=100, level="very_high")],
        (99, "VERY HIGH", "auto", "open"),
    ),
]


@pytest.mark.parametrize(("config", "sources", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rendering_rules(config: dict[str, Any], sources: list[SourceView], expected: tuple[Any, ...]) -> None:
    assert shown(render(display(**config), sources)) == expected


MODES: list[tuple[str, Any, tuple[int | None, str, str, str]]] = [
    ("blank", None, (None, "", "blank", "blank")),
    ("text", "EVENT TODAY", (None, "EVENT TODAY", "text", "text")),
    ("test", None, (TEST_PATTERN, "8888", "test", "test")),
    ("full", None, (0, "FULL", "full", "full")),
    ("closed", None, (0, "CLOSED", "closed", "closed")),
]


@pytest.mark.parametrize(("mode", "text", "expected"), MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("data", ["fresh", "stale", "closed"])
def test_every_override_mode_wins_over_the_data(mode: str, text: str | None, expected: Any, data: str) -> None:
    config = {"closed": data == "closed"}
    source = lot(42, age=5.0 if data != "stale" else 999.0)
    r = render(display(**config), [source], override(mode, text))
    assert shown(r) == expected
    # Staleness and trust still say what the data is, under any mode.
    assert r.stale is (data == "stale")
    assert r.trusted is True


def test_fields_beyond_what_is_shown() -> None:
    r = render(display(lots=["a", "b"]), [lot(4, reporting=90, age=3.7), lot(5, reporting=80, age=61.9, id="b")])
    assert (r.trust, r.data_age_s, r.stale, r.trusted) == (0.85, 61, False, True)
    # The key (what a sign shows) leaves trust and data age out: those change without an event.
    later = render(display(lots=["a", "b"]), [lot(4, reporting=85, age=9.0), lot(5, reporting=80, age=70.0, id="b")])
    assert later.key == r.key and later.data_age_s == 70
