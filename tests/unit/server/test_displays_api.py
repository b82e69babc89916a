"""The display endpoints on injected live state, with the app's lifespan (no broker, no database)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts.configfile import ConfigError
from server.app import create_app
from server.displays import DisplayEngine
from server.live import LiveState
from server.settings import ServerSettings, parse_api_keys
from tests.unit.server.test_displays_engine import Clock, bays, make_site

ADMIN = {"X-API-Key": "k-ops-0123456789"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> LiveState:
    return LiveState(make_site(), clock)


@pytest.fixture
def app(live: LiveState, tmp_path: Path) -> FastAPI:
    settings = ServerSettings(
        site_config=tmp_path / "unused.yaml",
        state_dir=tmp_path / "state",
        api_keys="ops:k-ops-0123456789, alice:k-alice-0123456789",  # type: ignore[arg-type]
        sse_heartbeat_s=0.2,
    )
    return create_app(settings, site=live.site, live=live, connect=False)


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def run(app: FastAPI, body: Callable[[httpx.AsyncClient, DisplayEngine], Awaitable[None]]) -> None:
    async def go() -> None:
        async with client_for(app) as c:
            await body(c, app.state.displays)

    asyncio.run(go())


def until(clock: Clock, **kw: float) -> str:
    return (clock() + timedelta(**kw)).isoformat()


def test_sign_states_with_etags_and_304s(app: FastAPI, live: LiveState, clock: Clock) -> None:
    async def body(c: httpx.AsyncClient, e: DisplayEngine) -> None:
        r = await c.get("/v1/displays")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
        assert [d["display_id"] for d in r.json()] == ["g", "lv", "p"]
        list_etag = r.headers["etag"]

        r = await c.get("/v1/displays/g")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        sign = r.json()
        assert r.headers["etag"] == f'"{sign["event_id"]}"' and r.headers["cache-control"] == "no-cache"
        assert sign["state"] == "fallback" and sign["value"] is None
        etag = r.headers["etag"]

        r = await c.get("/v1/displays/g", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
        for header in (f"W/{etag}", f'"1", {etag}', "*"):
            assert (await c.get("/v1/displays/g", headers={"If-None-Match": header})).status_code == 304
        assert (await c.get("/v1/displays/g", headers={"If-None-Match": '"1"'})).status_code == 200

        # The number changes: a new ETag.
        bays(live, clock, "ffffoooo")
        e.refresh()
        r = await c.get("/v1/displays/g", headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.json()["value"] == 4
        etag = r.headers["etag"]
        # Staleness alone changes it too.
        clock.step(31)
        e.refresh()
        r = await c.get("/v1/displays/g", headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.json()["state"] == "fallback" and r.json()["stale"] is True
        etag = r.headers["etag"]
        # An override changes it, and so does clearing it.
        r = await c.put(
            "/v1/displays/g/override", json={"mode": "closed", "until": until(clock, hours=1)}, headers=ADMIN
        )
        assert r.status_code == 200 and r.json()["state"] == "closed"
        r = await c.get("/v1/displays/g", headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.json()["mode"] == "closed"
        etag = r.headers["etag"]
        assert (await c.delete("/v1/displays/g/override", headers=ADMIN)).status_code == 200
        r = await c.get("/v1/displays/g", headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.json()["mode"] == "auto"

        # The list's ETag follows any sign.
        r = await c.get("/v1/displays", headers={"If-None-Match": list_etag})
        assert r.status_code == 200 and r.headers["etag"] != list_etag
        assert (await c.get("/v1/displays", headers={"If-None-Match": r.headers["etag"]})).status_code == 304

        r = await c.get("/v1/displays/nope")
        assert r.status_code == 404 and r.json()["error"] == "not_found"

    run(app, body)


def test_overrides_need_an_admin_key_and_are_audited(
    app: FastAPI, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(c: httpx.AsyncClient, e: DisplayEngine) -> None:
        put = {"mode": "text", "text": "MARKET DAY", "until": until(clock, hours=2), "reason": "market"}
        r = await c.put("/v1/displays/g/override", json=put)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        # A key the server does not know is 401, like none (docs/access-control.md); 403 is a valid key's role too low.
        r = await c.put("/v1/displays/g/override", json=put, headers={"X-API-Key": "k-ops-012345678"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert (await c.delete("/v1/displays/g/override")).status_code == 401
        assert (await c.get("/v1/displays/audit")).status_code == 401
        assert (await c.get("/v1/displays/audit", headers={"X-API-Key": "nope"})).status_code == 401
        assert e.signs["g"].override is None

        r = await c.put("/v1/displays/g/override", json=put, headers=ADMIN)
        assert r.status_code == 200
        assert (r.json()["text"], r.json()["mode"], r.json()["override"]["by"]) == ("MARKET DAY", "text", "ops")
        r = await c.put(
            "/v1/displays/lv/override",
            json={"mode": "test", "until": until(clock, minutes=5)},
            headers={"X-API-Key": "k-alice-0123456789"},
        )
        assert r.status_code == 200 and r.json()["text"] == "8888"
        r = await c.delete("/v1/displays/g/override", headers=ADMIN)
        assert r.status_code == 200 and r.json()["mode"] == "auto"

        r = await c.get("/v1/displays/audit", headers=ADMIN)
        assert r.status_code == 200
        entries = [(a["display_id"], a["action"], a["by"], a["mode"], a["text"], a["reason"]) for a in r.json()]
        assert entries == [
            ("g", "clear", "ops", "text", "MARKET DAY", "market"),
            ("lv", "set", "alice", "test", None, None),
            ("g", "set", "ops", "text", "MARKET DAY", "market"),
        ]
        assert r.json()[2]["until"] == until(clock, hours=2).replace("+00:00", "Z")
        r = await c.get("/v1/displays/audit?display_id=lv&limit=5", headers=ADMIN)
        assert [a["action"] for a in r.json()] == ["set"]

    run(app, body)
    # Keys are never logged.
    assert "k-ops-0123456789" not in caplog.text and "k-alice-0123456789" not in caplog.text


@pytest.mark.parametrize(
    ("put", "status", "detail"),
    [
        ({"mode": "blank", "until": "2020-01-01T00:00:00Z"}, 422, "in the future"),
        ({"mode": "blank", "until": "2026-06-04T12:00:00Z"}, 422, "at most"),
        ({"mode": "text", "until": "2026-05-04T13:00:00Z"}, 422, "needs a text"),
        ({"mode": "text", "text": "X" * 17, "until": "2026-05-04T13:00:00Z"}, 422, None),
        ({"mode": "text", "text": "Grüße", "until": "2026-05-04T13:00:00Z"}, 422, None),
        ({"mode": "blank", "until": "2026-05-04T13:00:00"}, 422, None),  # no offset: ambiguous
        ({"mode": "blank"}, 422, None),  # no expiry
        ({"mode": "auto", "until": "2026-05-04T13:00:00Z"}, 422, None),  # auto is DELETE
        ({"mode": "blank", "until": "2026-05-04T13:00:00Z", "extra": 1}, 422, None),
    ],
)
def test_bad_overrides_are_refused(app: FastAPI, put: dict[str, Any], status: int, detail: str | None) -> None:
    async def body(c: httpx.AsyncClient, e: DisplayEngine) -> None:
        r = await c.put("/v1/displays/g/override", json=put, headers=ADMIN)
        assert r.status_code == status, r.text
        if detail:  # FastAPI's validation shape, as every 422 of the API
            assert r.json()["detail"][0]["type"] == "invalid_override" and detail in r.json()["detail"][0]["msg"]
        assert e.signs["g"].override is None

    run(app, body)


def test_api_keys_parse_from_pairs_and_never_show_in_errors(tmp_path: Path) -> None:
    assert parse_api_keys("ops:abc, alice:d:e\n# comment\nbob:f") == {"ops": "abc", "alice": "d:e", "bob": "f"}
    with pytest.raises(ValueError, match="entry 2 is not name:key") as err:
        parse_api_keys("ops:abc,secretwithoutname")
    assert "secretwithoutname" not in str(err.value)
    with pytest.raises(Exception) as bad:
        ServerSettings(site_config=tmp_path / "x.yaml", api_keys="ops:abc,oops")  # type: ignore[arg-type]
    assert "abc" not in str(bad.value) and "oops" not in str(bad.value)
    keyfile = tmp_path / "keys"
    keyfile.write_text("# admins\nfile-admin:zzz\n")
    settings = ServerSettings(site_config=tmp_path / "x.yaml", api_keys="ops:abc", api_keys_file=keyfile)  # type: ignore[arg-type]
    keyfile.chmod(0o644)  # plain keys other users may read: refused, naming the fix and not the keys
    with pytest.raises(ConfigError) as refused:
        settings.admin_keys()
    assert "chmod 600" in str(refused.value) and "zzz" not in str(refused.value)
    keyfile.chmod(0o600)
    assert settings.admin_keys() == {"ops": "abc", "file-admin": "zzz"}
    assert "abc" not in repr(settings)


# -- SSE, driven at the ASGI level ------------------------------------------------------------


class AsgiClient:
    """One request to the app by hand: collects what it sends, disconnects when told."""

    def __init__(self, app: FastAPI, path: str, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "server": ("test", 80),
            "client": ("127.0.0.1", 1),
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self._requested = False
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def start(self) -> None:
        self.task = asyncio.create_task(self.app(self.scope, self.receive, self.send))  # type: ignore[arg-type]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for block in self.body.split(b"\n\n"):
            lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and not line.startswith(b":"))
            if lines:
                data = json.loads(lines[b"data"])
                assert lines[b"id"] == str(data["event_id"]).encode() and lines[b"event"] == b"state"
                out.append(data)
        return out


async def settle(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_sse_sends_the_state_at_once_then_changes_and_heartbeats(app: FastAPI, live: LiveState, clock: Clock) -> None:
    async def body(c: httpx.AsyncClient, e: DisplayEngine) -> None:
        sign = e.signs["g"]
        first_id = sign.event_id
        fresh = AsgiClient(app, "/v1/displays/g/events")
        resumed = AsgiClient(app, "/v1/displays/g/events", {"Last-Event-ID": str(first_id)})
        older = AsgiClient(app, "/v1/displays/g/events", {"Last-Event-ID": str(first_id - 1)})
        for client in (fresh, resumed, older):
            client.start()
        await settle(lambda: e.subscriber_count == 3 and len(fresh.events()) == 1 and len(older.events()) == 1)
        start = fresh.sent[0]
        assert start["status"] == 200 and (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        assert resumed.events() == []
        bays(live, clock, "ffffoooo")
        e.refresh()
        await settle(lambda: len(resumed.events()) == 1 and len(fresh.events()) == 2)
        assert resumed.events()[0]["value"] == 4 and resumed.events()[0]["event_id"] > first_id
        await settle(lambda: b": ping\n\n" in resumed.body)  # heartbeat 0.2 s here
        for client in (fresh, resumed, older):
            client.gone.set()
        await settle(lambda: all(cl.task is not None and cl.task.done() for cl in (fresh, resumed, older)))
        assert e.subscriber_count == 0
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("sse-watch")]
        assert (await c.get("/v1/displays/nope/events")).status_code == 404
        # A bounded stream (max_s) ends by itself, with the current state first.
        r = await c.get("/v1/displays/g/events?max_s=0.3")
        assert r.status_code == 200 and r.text.startswith(f"id: {e.signs['g'].event_id}\nevent: state\ndata: {{")
        assert (await c.get("/v1/displays/g/events?max_s=0")).status_code == 422
        assert e.subscriber_count == 0
        # Methods the override resource does not have: 405 naming both it has.
        r = await c.request("OPTIONS", "/v1/displays/g/override")
        assert r.status_code == 405 and r.headers["allow"] == "PUT, DELETE"

    run(app, body)


def test_sse_streams_end_when_the_engine_stops(app: FastAPI) -> None:
    async def go() -> None:
        async with app.router.lifespan_context(app):
            client = AsgiClient(app, "/v1/displays/p/events")
            client.start()
            await settle(lambda: len(client.events()) == 1)
        assert client.task is not None
        await asyncio.wait_for(client.task, 5)
        assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert app.state.displays.subscriber_count == 0

    asyncio.run(go())


def test_openapi_documents_the_display_endpoints(app: FastAPI) -> None:
    async def body(c: httpx.AsyncClient, e: DisplayEngine) -> None:
        spec = (await c.get("/openapi.json")).json()
        paths = spec["paths"]
        one = paths["/v1/displays/{display_id}"]["get"]["responses"]
        assert one["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SignState")
        assert "304" in one and "404" in one
        stream = paths["/v1/displays/{display_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        data = stream["schema"]["properties"]["data"]
        assert data["contentSchema"]["$ref"] == "#/components/schemas/SignState"
        put = paths["/v1/displays/{display_id}/override"]["put"]
        assert {"401", "403", "404", "422"} <= set(put["responses"])
        assert "/v1/displays/audit" in paths and "delete" in paths["/v1/displays/{display_id}/override"]
        schema = spec["components"]["schemas"]["SignState"]
        assert {
            "value",
            "text",
            "mode",
            "state",
            "stale",
            "trusted",
            "trust",
            "data_age_s",
            "sources",
            "event_id",
            "updated_at",
        } <= set(schema["properties"])
        for path in paths.values():
            for op in path.values():
                assert op["summary"] and op["description"]

    run(app, body)
