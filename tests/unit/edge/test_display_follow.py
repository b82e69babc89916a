"""Following a sign's state (edge/displays/follow.py) against a fake HTTP transport: SSE, polling, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from common.retry import Backoff
from edge.displays.config import ApiConfig, DisplayLink
from edge.displays.follow import Follower, Link
from edge.displays.sign import SignState, frame_for

URL = "http://api.test"


def doc(value: int | None, event_id: int, **kw: Any) -> dict[str, Any]:
    return {
        "display_id": "vms",
        "event_id": event_id,
        "value": value,
        "text": "" if value is None else str(value),
        "mode": "auto",
        "state": "open",
        "stale": False,
        "trusted": True,
        "trust": 1,
        "data_age_s": 4,
        "sources": [{"kind": "lot", "id": "a"}],
        "updated_at": "2025-11-24T10:00:00Z",
        "new_field_from_a_newer_api": {"ignored": True},
        **kw,
    }


def event(d: dict[str, Any] | str, event_id: int | None = None) -> bytes:
    data = d if isinstance(d, str) else json.dumps(d)
    eid = event_id if event_id is not None else (d["event_id"] if isinstance(d, dict) else None)
    head = f"id: {eid}\n" if eid is not None else ""
    return f"{head}event: state\ndata: {data}\n\n".encode()


class Clock:
    """Fake time; it only moves when a test moves it (so a follower under it never reopens a stream)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sse(chunks: Callable[[], AsyncIterator[bytes]]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=chunks())


async def follow_until(
    handler: Callable[[httpx.Request], httpx.Response | Any],
    done: Callable[[Follower], bool],
    *,
    sse_on: bool = True,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = 5.0,
) -> Follower:
    api = ApiConfig(url=URL, sse=sse_on, poll_interval_s=0.01)
    link = Link(DisplayLink(display_id="vms", port="/dev/x"), stale_after_s=60, clock=clock)

    async def call(request: httpx.Request) -> httpx.Response:
        result = handler(request)
        return await result if asyncio.iscoroutine(result) else result

    async with httpx.AsyncClient(transport=httpx.MockTransport(call)) as client:
        follower = Follower(link, client, api, clock=clock, backoff=Backoff(0.01, 0.02))
        task = asyncio.create_task(follower.run())
        try:
            async with asyncio.timeout(timeout):
                while not done(follower):
                    if task.done():
                        task.result()
                        raise AssertionError("the follower returned")
                    await asyncio.sleep(0.005)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    return follower


def test_follows_events_and_resumes_with_the_last_event_id() -> None:
    seen_ids: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept"] == "text/event-stream" or request.url.path == "/v1/displays/vms"
        if request.url.path.endswith("/events"):
            seen_ids.append(request.headers.get("last-event-id"))
            n = len(seen_ids)

            async def chunks() -> AsyncIterator[bytes]:
                yield event(doc(10 * n, n * 100))
                yield b": ping\n\n"
                yield event(doc(10 * n + 1, n * 100 + 1))
                yield b": ping\n\n"

            return sse(chunks)
        return httpx.Response(304)

    f = asyncio.run(follow_until(handler, lambda f: len(seen_ids) >= 3))
    assert seen_ids[:3] == [None, "101", "201"]
    assert f.stats["events"] >= 4 and f.stats["sse_connects"] >= 2
    assert f.stats["malformed"] == 0 and f.stats["event_id_backwards"] == 0, "a ping is no event"


def test_a_heartbeat_keeps_the_state_vouched_for_and_a_malformed_event_does_not() -> None:
    clock = Clock()
    polls: list[str | None] = []
    gate = asyncio.Event()

    def handler(request: httpx.Request) -> Any:
        if request.url.path.endswith("/events"):

            async def chunks() -> AsyncIterator[bytes]:
                yield event(doc(57, 1))
                clock.t += 50
                yield b": ping\n\n"  # vouches: nothing changed
                clock.t += 50
                yield event('{"display_id": "vms", "value": "57"', event_id=2)  # cut short
                clock.t += 5
                yield b": ping\n\n"  # does not vouch for the state before the malformed one
                await gate.wait()

            return sse(chunks)
        polls.append(request.headers.get("if-none-match"))
        return httpx.Response(200, content=b"<html>gateway timeout</html>")  # the resync poll is bad too

    f = asyncio.run(follow_until(handler, lambda f: f.stats["malformed"] >= 2 and clock.t >= 205, clock=clock))
    gate.set()
    assert f.link.deadline() == 150 + 60, "vouched at the ping (t=150), not at the later one (t=205)"
    assert f.link.frame(clock.t).face == "57", "the last good state stays until the staleness rule"
    assert f.link.frame(211).face == ""
    assert polls[0] == '"1"', "the resync poll asks with the ETag of the state held"
    assert f.stats["events"] == 1


def test_wrong_types_and_another_displays_state_are_malformed_and_never_shown() -> None:
    bad = [
        doc("57", 2),  # a number as a string
        doc(57, 3, mode="staff"),  # a mode the register map cannot carry
        doc(57, 4, display_id="other"),
        doc(-1, 5),
        doc(57, 6, stale="no"),
        "not json",
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):

            async def chunks() -> AsyncIterator[bytes]:
                yield event(doc(57, 1))
                for i, d in enumerate(bad):
                    yield event(d, event_id=10 + i)
                await asyncio.sleep(10)

            return sse(chunks)
        return httpx.Response(304)

    f = asyncio.run(follow_until(handler, lambda f: f.stats["malformed"] >= len(bad)))
    assert f.link.state is not None and f.link.state.event_id == 1
    assert f.stats["not_modified"] == len(bad), "each malformed event is followed by a resync poll"
    assert f.link.frame().face == "57"


def test_without_sse_it_polls_with_if_none_match() -> None:
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        headers.append(request.headers.get("if-none-match"))
        if len(headers) == 1:
            return httpx.Response(200, json=doc(57, 7), headers={"etag": '"7"'})
        if len(headers) == 3:
            return httpx.Response(200, json=doc(58, 8), headers={"etag": '"8"'})
        return httpx.Response(304)

    f = asyncio.run(follow_until(handler, lambda f: len(headers) >= 5))
    assert headers[:5] == [None, '"7"', '"7"', '"8"', '"8"']
    assert f.stats["sse_refused"] >= 1 and f.stats["not_modified"] >= 2
    assert f.link.frame().face == "58"


def test_sse_off_never_opens_a_stream() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json=doc(1, 1))

    asyncio.run(follow_until(handler, lambda f: len(paths) >= 5, sse_on=False))
    assert set(paths) == {"/v1/displays/vms"}


@pytest.mark.allow_logged_exceptions
def test_network_errors_and_server_errors_are_counted_and_retried() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] < 6:
            raise httpx.ConnectError("refused")
        if calls["n"] < 9:
            return httpx.Response(503)
        return httpx.Response(200, json=doc(5, 1))

    f = asyncio.run(follow_until(handler, lambda f: f.link.state is not None, sse_on=False))
    assert f.stats["poll_error"] == 5 and f.stats["http_503"] == 3


def test_other_event_types_are_ignored() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):

            async def chunks() -> AsyncIterator[bytes]:
                yield b"event: debug\ndata: {}\n\n"
                yield event(doc(3, 3))
                await asyncio.sleep(10)

            return sse(chunks)
        return httpx.Response(304)

    f = asyncio.run(follow_until(handler, lambda f: f.link.state is not None))
    assert f.stats["events_ignored"] == 1 and f.stats["malformed"] == 0


@pytest.mark.parametrize(
    ("kw", "face", "value"),
    [
        ({"value": 123, "text": "123"}, "123", 123),
        ({"value": 2, "text": "LOW", "state": "low"}, "LOW", 2),
        ({"value": 12, "text": "", "state": "fallback", "stale": True}, "", None),
        ({"value": None, "text": "Geöffnet bis 22 Uhr", "state": "text", "mode": "text"}, "Geoeffnet bis 22", None),
        ({"value": 70000, "text": ""}, "65534", 65534),
    ],
)
def test_a_state_becomes_the_frame_the_sign_shows(kw: dict[str, Any], face: str, value: int | None) -> None:
    frame = frame_for(SignState.model_validate_json(json.dumps(doc(0, 1) | kw)))
    assert (frame.face, frame.value) == (face, value)
    frame.registers()
