"""The common UTC timestamp form takes a fast path (``datetime.fromisoformat``); it must agree with the
full RFC 3339 parser on every string it takes, and leave every other string to it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from contracts.messages import _RFC3339_UTC, STORE_TIME_MAX, STORE_TIME_MIN, _parse_rfc3339, parse_timestamp


def full_parser(text: str) -> datetime:
    """What parse_timestamp did for every string before the fast path."""
    at = _parse_rfc3339(text).astimezone(UTC)
    if not STORE_TIME_MIN <= at <= STORE_TIME_MAX:
        raise PydanticCustomError("rfc3339_timestamp", "range")
    return at


def outcome(fn: object, text: str) -> tuple[str, object]:
    assert callable(fn)
    try:
        at = fn(text)
    except PydanticCustomError as exc:
        return ("rejected", exc.type)
    return ("accepted", (at, at.utcoffset()))


digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
#: Strings in and around the fast path's shape: any two digits per field (so 30 February, hour 24,
#: second 60), years across the store's range, 0-9 fraction digits, 'Z', 'z' or an offset.
shaped = st.builds(
    lambda y, mo, d, t, h, mi, s, frac, zone: f"{y:04d}-{mo}-{d}{t}{h}:{mi}:{s}{frac}{zone}",
    st.integers(0, 9999) | st.integers(1670, 2270),
    digits,
    digits,
    st.sampled_from("Tt "),
    digits,
    digits,
    digits,
    st.just("") | st.text("0123456789", min_size=1, max_size=9).map(lambda f: "." + f),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "-05:30", "", "+24:00"]),
)


@settings(max_examples=3000, deadline=None)
@given(shaped | st.text(max_size=40))
def test_parse_timestamp_agrees_with_the_full_parser(text: str) -> None:
    assert outcome(parse_timestamp, text) == outcome(full_parser, text)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2262, 1, 1), timezones=st.just(UTC)))
def test_what_devices_send_takes_the_fast_path(at: datetime) -> None:
    text = at.isoformat().replace("+00:00", "Z")
    assert _RFC3339_UTC.fullmatch(text)
    assert parse_timestamp(text) == at == full_parser(text)


@pytest.mark.parametrize(
    "text",
    ["2026-02-30T12:00:00Z", "2026-11-23T24:00:00Z", "1677-09-21T00:12:43.145224Z", "2262-04-11T23:47:16.854776Z"],
)
def test_the_fast_shape_with_an_impossible_or_unstorable_time_is_still_refused(text: str) -> None:
    assert _RFC3339_UTC.fullmatch(text)
    with pytest.raises(PydanticCustomError):
        parse_timestamp(text)
