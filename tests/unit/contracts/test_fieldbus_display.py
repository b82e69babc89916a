"""The count-display register map (contracts/fieldbus.py, last section): encode and decode, both ways."""

from __future__ import annotations

from typing import get_args

import pytest

from contracts.fieldbus import (
    DISPLAY_AGE_UNKNOWN,
    DISPLAY_BLANK,
    DISPLAY_BLANK_FRAME,
    DISPLAY_FLAG_FULL,
    DISPLAY_FLAG_LINK_LOST,
    DISPLAY_FLAG_LOW,
    DISPLAY_FLAG_STALE,
    DISPLAY_FLAG_TRUSTED,
    DISPLAY_FLAGS,
    DISPLAY_INFO_ADDRESS,
    DISPLAY_MODE,
    DISPLAY_MODES,
    DISPLAY_STATE_FLAGS,
    DISPLAY_STATUS,
    DISPLAY_TEXT,
    DISPLAY_TEXT_CHARS,
    DISPLAY_TRUST,
    DISPLAY_WRITE_COUNT,
    DisplayFrame,
    DisplayMapError,
    DisplayMode,
    DisplayState,
    decode_text,
    encode_text,
    fit_text,
)


def test_layout_is_what_the_docs_say() -> None:
    # docs/fieldbus.md, "Count display": HR 0..13 written, 16..18 read-only; a sign wired by hand relies on it.
    assert DISPLAY_WRITE_COUNT == 14 and DISPLAY_TEXT == 6 and DISPLAY_TEXT_CHARS == 16
    assert (DISPLAY_INFO_ADDRESS, DISPLAY_STATUS) == (16, 18)
    assert DISPLAY_MODES == {"auto": 0, "blank": 1, "full": 2, "closed": 3, "text": 4, "test": 5}
    assert set(DISPLAY_STATE_FLAGS) == set(get_args(DisplayState))
    bits = [b for b in DISPLAY_STATE_FLAGS.values() if b]
    assert len(set(bits)) == len(bits) == 7 and all(b & (b - 1) == 0 for b in bits), "one distinct bit per state"
    assert not sum(bits) & (DISPLAY_FLAG_STALE | DISPLAY_FLAG_TRUSTED | DISPLAY_FLAG_LINK_LOST)


def test_a_counting_frame_encodes_to_the_documented_registers() -> None:
    frame = DisplayFrame(123, "123", "auto", "open", age_s=7, trust=0.75, heartbeat=41)
    regs = frame.registers()
    assert regs[:6] == [123, 0, DISPLAY_FLAG_TRUSTED, 7, 750, 41]
    assert regs[DISPLAY_TEXT:] == [0x3132, 0x3300, 0, 0, 0, 0, 0, 0]  # "12", "3\0", NUL padding


def test_blank_and_unknown_age_use_their_sentinels() -> None:
    regs = DisplayFrame(None, "", "auto", "fallback", stale=True, trusted=False, link_lost=True).registers()
    assert regs[0] == DISPLAY_BLANK
    assert regs[DISPLAY_FLAGS] == DISPLAY_FLAG_STALE | DISPLAY_FLAG_LINK_LOST | DISPLAY_STATE_FLAGS["fallback"]
    assert regs[3] == DISPLAY_AGE_UNKNOWN
    assert DisplayFrame.parse(regs).face == ""


@pytest.mark.parametrize("mode", get_args(DisplayMode))
@pytest.mark.parametrize("state", get_args(DisplayState))
def test_every_mode_and_state_round_trips(mode: DisplayMode, state: DisplayState) -> None:
    for stale, trusted, link_lost in ((False, True, False), (True, False, True)):
        frame = DisplayFrame(
            0, "FULL", mode, state, stale=stale, trusted=trusted, link_lost=link_lost, age_s=0, trust=0.5
        )
        assert DisplayFrame.parse(frame.registers()) == frame


@pytest.mark.parametrize(
    "frame",
    [
        DisplayFrame(0, "0", "auto", "full", trust=0.0, heartbeat=0),
        DisplayFrame(65534, "", "test", "test", age_s=65534, trust=1.0, heartbeat=65535),
        DisplayFrame(None, "Geschlossen 22h", "text", "text", age_s=None, trust=0.001),
        DisplayFrame(None, "~ !\"#$%&'()*+,-.", "closed", "closed"),
        DISPLAY_BLANK_FRAME,
    ],
)
def test_edges_round_trip(frame: DisplayFrame) -> None:
    assert DisplayFrame.parse(frame.registers()) == frame


def test_ages_above_the_register_saturate() -> None:
    regs = DisplayFrame(5, "5", "auto", "open", age_s=10**6).registers()
    assert DisplayFrame.parse(regs).age_s == 65534


@pytest.mark.parametrize(
    "frame",
    [
        DisplayFrame(65535, "", "auto", "open"),  # the blank sentinel is not a number
        DisplayFrame(-1, "", "auto", "open"),
        DisplayFrame(1, "", "auto", "open", age_s=-1),
        DisplayFrame(1, "", "auto", "open", trust=1.5),
        DisplayFrame(1, "", "auto", "open", heartbeat=65536),
        DisplayFrame(1, "x" * 17, "auto", "open"),
        DisplayFrame(1, "Straße", "auto", "open"),
    ],
)
def test_frames_outside_the_map_do_not_encode(frame: DisplayFrame) -> None:
    with pytest.raises(DisplayMapError):
        frame.registers()


def _regs(**changes: int) -> list[int]:
    regs = DisplayFrame(12, "12", "auto", "open").registers()
    for index, value in changes.items():
        regs[int(index.removeprefix("r"))] = value
    return regs


@pytest.mark.parametrize(
    "regs",
    [
        _regs(**{f"r{DISPLAY_MODE}": 6}),
        _regs(**{f"r{DISPLAY_FLAGS}": 0x8000}),  # an undefined bit
        _regs(**{f"r{DISPLAY_FLAGS}": DISPLAY_FLAG_LOW | DISPLAY_FLAG_FULL}),  # two states at once
        _regs(**{f"r{DISPLAY_TRUST}": 1001}),
        _regs(**{f"r{DISPLAY_TEXT}": 0x0A41}),  # a newline
        _regs(**{f"r{DISPLAY_TEXT}": 0xC341}),  # a byte above ASCII
        _regs(**{f"r{DISPLAY_TEXT}": 0x10000}),
        _regs()[:13],
    ],
)
def test_registers_outside_the_map_do_not_decode(regs: list[int]) -> None:
    with pytest.raises(DisplayMapError):
        DisplayFrame.parse(regs)


def test_text_stops_at_the_first_nul() -> None:
    regs = encode_text("AB")
    regs[3] = 0x5858  # junk after the terminator is not shown
    assert decode_text(regs) == "AB"
    assert decode_text(encode_text("")) == ""
    assert decode_text(encode_text("x" * 16)) == "x" * 16


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("123", "123"),
        ("Straße frei", "Strasse frei"),
        ("Ölmühle: 5 frei", "Oelmuehle: 5 fre"),
        ("Café", "Cafe"),
        ("P→", "P?"),
        ("tab\there", "tab?here"),
        ("a" * 40, "a" * 16),
    ],
)
def test_fit_text_makes_any_operator_text_showable(given: str, shown: str) -> None:
    assert fit_text(given) == shown
    assert fit_text(shown) == shown
    encode_text(shown)


@pytest.mark.parametrize(
    ("frame", "face"),
    [
        (DisplayFrame(57, "57", "auto", "open"), "57"),
        (DisplayFrame(3, "LOW", "auto", "low"), "LOW"),
        (DisplayFrame(57, "", "auto", "open"), "57"),
        (DisplayFrame(None, "", "auto", "fallback"), ""),
        (DisplayFrame(None, "---", "auto", "fallback"), "---"),
    ],
)
def test_the_face_is_the_text_else_the_number(frame: DisplayFrame, face: str) -> None:
    assert frame.face == face
