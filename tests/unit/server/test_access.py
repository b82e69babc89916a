"""Access control: the key file and ``district keys``, the access map, and 401/403 on every protected route.

The route test walks every route of the app (``app.routes``, included routers
flattened), so a route added later is checked without anyone listing it: it
must either need a key and answer 401/403 correctly, or be public under a
prefix the defaults name as public (docs/access-control.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from contracts.configfile import ConfigError
from district.cli import main as district
from server.app import create_app
from server.auth import DEFAULT_ACCESS, RESERVED, AccessPolicy, declared_floor, iter_routes, prefix_matches
from server.keys import RANK, KeyRing, add_key, read_key_file, revoke_key, split_key
from server.live import LiveState
from server.settings import ServerSettings
from tests.unit.server.test_displays_engine import Clock, make_site

LEGACY = "legacy-admin-key-0123456789"
#: Public by the issue's defaults: live availability, guidance, feeds, sign states, health, metrics, the docs.
PUBLIC_PREFIXES = (
    "/v1/parking/lots",
    "/v1/lockers",
    "/v1/zones",
    "/v1/guidance/",
    "/v1/feeds/",
    "/ngsi-ld/",
    "/v1/displays",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/console",
    "/v1/site",
    "/v1/live/events",
    "/v1/whoami",
)
#: Never public, whatever else a path says.
NEVER_PUBLIC = re.compile(r"/(history|peaks|devices|alerts|audit|override|config|admin)(/|$)")


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "api-keys"


@pytest.fixture
def keys(keyfile: Path) -> dict[str, str]:
    """One key per role (a file key) and its name."""
    return {role: add_key(keyfile, f"k-{role}", role) for role in ("display", "operator", "admin")}  # type: ignore[arg-type]


def make_app(tmp_path: Path, keyfile: Path, **settings: object) -> FastAPI:
    live = LiveState(make_site(), Clock())
    s = ServerSettings(
        site_config=tmp_path / "unused.yaml",
        state_dir=tmp_path / "state",
        keys_file=keyfile,
        keys_reload_s=0,
        api_keys=f"legacy:{LEGACY}",  # type: ignore[arg-type]
        **settings,  # type: ignore[arg-type]
    )
    return create_app(s, site=live.site, live=live, connect=False)


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


# -- the key file and `district keys` ----------------------------------------------------------


def test_keys_cli_adds_lists_rotates_revokes_and_the_file_holds_no_key(
    keyfile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert district(["keys", "--file", str(keyfile), "add", "alice", "--role", "admin"]) == 0
    alice = capsys.readouterr().out.strip()
    assert split_key(alice) is not None and len(alice) == 3 + 9 + 43
    assert district(["keys", "--file", str(keyfile), "add", "sign-1", "--role", "display"]) == 0
    sign = capsys.readouterr().out.strip()
    assert district(["keys", "--file", str(keyfile), "add", "alice", "--role", "operator"]) == 1
    assert "exists" in capsys.readouterr().err
    assert district(["keys", "--file", str(keyfile), "add", "bad name", "--role", "admin"]) == 1
    capsys.readouterr()

    text = keyfile.read_text()
    assert alice not in text and sign not in text and split_key(alice)[1] not in text  # type: ignore[index]
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    entries = {e.name: e for e in read_key_file(keyfile)}
    assert {n: e.role for n, e in entries.items()} == {"alice": "admin", "sign-1": "display"}
    assert entries["alice"].created.tzinfo is not None

    assert district(["keys", "--file", str(keyfile), "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "admin" in listed and "sign-1" in listed and "display" in listed
    assert alice not in listed and sign not in listed

    ring = KeyRing({}, keyfile, reload_s=0)
    assert ring.identify(alice) is not None and ring.identify(alice).role == "admin"  # type: ignore[union-attr]
    assert district(["keys", "--file", str(keyfile), "rotate", "alice"]) == 0
    alice2 = capsys.readouterr().out.strip()
    assert alice2 != alice
    assert ring.identify(alice) is None and ring.identify(alice2).name == "alice"  # type: ignore[union-attr]
    assert district(["keys", "--file", str(keyfile), "revoke", "alice"]) == 0
    assert ring.identify(alice2) is None and ring.identify(sign).role == "display"  # type: ignore[union-attr]
    assert district(["keys", "--file", str(keyfile), "revoke", "alice"]) == 1
    assert "no key named" in capsys.readouterr().err


def test_keys_default_file_follows_the_server_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISTRICT_SERVER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DISTRICT_SERVER_KEYS_FILE", raising=False)
    assert district(["keys", "add", "ops", "--role", "operator"]) == 0
    key = capsys.readouterr().out.strip()
    settings = ServerSettings(site_config=tmp_path / "x.yaml")
    assert settings.resolved_keys_file() == tmp_path / "state" / "api-keys"
    assert KeyRing({}, settings.resolved_keys_file()).identify(key) is not None
    monkeypatch.setenv("DISTRICT_SERVER_KEYS_FILE", str(tmp_path / "elsewhere"))
    assert district(["keys", "add", "ops2", "--role", "operator"]) == 0
    capsys.readouterr()
    assert (tmp_path / "elsewhere").exists()


def test_a_bad_key_file_names_the_line_and_never_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    add_key(path, "ok", "admin")
    good = path.read_text()
    path.write_text(good + "oops admin 2026-01-01T00:00:00Z 0123abcd sha256:zz:secretish\nx wizard\n")
    with pytest.raises(ConfigError) as err:
        read_key_file(path)
    assert [e.split(": ", 1)[0] for e in err.value.errors] == [f"{path}:3", f"{path}:4"]
    assert "secretish" not in str(err.value)


def test_the_server_rereads_the_file_and_fails_closed_on_a_broken_one(
    keyfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    key = add_key(keyfile, "ops", "operator")
    ring = KeyRing({"old": LEGACY}, keyfile, reload_s=1.0, clock=lambda: now[0])
    assert ring.identify(key) is not None and ring.identify(LEGACY).role == "admin"  # type: ignore[union-attr]
    revoke_key(keyfile, "ops")
    assert ring.identify(key) is not None  # within reload_s: not checked yet
    now[0] = 1.5
    assert ring.identify(key) is None
    later = add_key(keyfile, "later", "display")
    now[0] = 3.0
    assert ring.identify(later) is not None
    keyfile.write_text(keyfile.read_text() + "garbage\n")
    now[0] = 4.5
    with caplog.at_level(logging.ERROR):
        assert ring.identify(later) is None  # refused until fixed
    assert "unusable" in caplog.text and later not in caplog.text
    assert ring.identify(LEGACY) is not None  # the settings' keys still work
    keyfile.write_text(keyfile.read_text().replace("garbage\n", ""))
    now[0] = 6.0
    assert ring.identify(later) is not None


# -- the access map ----------------------------------------------------------------------------


def test_the_most_specific_prefix_wins_and_params_match_any_segment() -> None:
    policy = AccessPolicy({"/v1/parking": "display", "/v1/zones/{zone}/history/x": "admin"})
    assert policy.role_for_path("/v1/parking/lots") == "display"
    assert policy.role_for_path("/v1/parking/lots/{lot_id}/history") == "operator"
    assert policy.role_for_path("/v1/parking/lots/garage-1/history") == "operator"
    assert policy.role_for_path("/v1/zones/{id}/history/x/y") == "admin"
    assert policy.role_for_path("/v1/zones/{id}/history/z") == "operator"
    assert policy.role_for_path("/v1/displays/g") == "public"
    assert policy.role_for_path("/v1/displays/g/override") == "admin"
    assert policy.role_for_path("/v1/parkingx") == "operator"  # segments, not characters
    assert policy.role_for_path("/something/new") == "operator"  # the default for unnamed paths
    with pytest.raises(ValueError, match="role must be one of"):
        AccessPolicy({"/x": "root"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="must start with /"):
        AccessPolicy({"x": "admin"})


def test_the_access_setting_reads_pairs_or_json(tmp_path: Path) -> None:
    s = ServerSettings(site_config=tmp_path / "x.yaml", access="/v1/parking=display, /metrics=operator")  # type: ignore[arg-type]
    assert s.access == {"/v1/parking": "display", "/metrics": "operator"}
    s = ServerSettings(site_config=tmp_path / "x.yaml", access='{"/v1/zones": "admin"}')  # type: ignore[arg-type]
    assert s.access == {"/v1/zones": "admin"}
    with pytest.raises(ValueError):
        ServerSettings(site_config=tmp_path / "x.yaml", access="/v1/zones=root")  # type: ignore[arg-type]


# -- every route ------------------------------------------------------------------------------


def operations(app: FastAPI) -> Iterator[tuple[str, str, str]]:
    """(method, template, role) of every route of the app; OPTIONS is never checked (CORS preflights)."""
    policy: AccessPolicy = app.state.access.policy
    for route, path in iter_routes(app.routes):
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "OPTIONS":
                yield method, path, policy.role_of(route, path)


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


async def ask(c: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]) -> int:
    """The status, or 0 if the answer did not start within 5 s (a stream the check let through)."""
    try:
        async with asyncio.timeout(5):
            return (await c.request(method, url, headers=headers)).status_code
    except TimeoutError:
        return 0


def test_every_entry_of_the_default_access_map_covers_a_route_or_is_a_reserved_namespace(
    tmp_path: Path, keyfile: Path
) -> None:
    """An entry no route matches documents a path that does not exist (docs/access-control.md prints the
    map): ``/v1/zones/*/lines`` and ``/v1/lockers/*/peaks`` stood in it for months. ``/`` is the catch-all;
    :data:`server.auth.RESERVED` are held on purpose, and each must still be free."""
    app = make_app(tmp_path, keyfile)
    paths = [path for _, path in iter_routes(app.routes)]
    uncovered = {prefix for prefix in DEFAULT_ACCESS if not any(prefix_matches(prefix, path) for path in paths)}
    assert uncovered - {"/"} == RESERVED
    assert DEFAULT_ACCESS.keys() >= RESERVED


def test_every_protected_route_answers_401_and_403_and_every_public_one_is_meant_to_be(
    tmp_path: Path, keyfile: Path, keys: dict[str, str]
) -> None:
    app = make_app(tmp_path, keyfile)
    ops = list(operations(app))
    assert len(ops) > 20 and ("GET", "/v1/displays/audit", "admin") in ops
    protected = [(m, p, r) for m, p, r in ops if r != "public"]
    assert {p for _, p, _ in protected} >= {"/v1/displays/audit", "/v1/displays/{display_id}/override"}
    for method, path, _ in ops:
        if (method, path) not in {(m, p) for m, p, _ in protected}:
            assert path.startswith(PUBLIC_PREFIXES) and not NEVER_PUBLIC.search(path), (
                f"{method} {path} is public: protect it (AdminDep/OperatorDep or the access map) or, if it"
                " really is public, name its prefix in server.auth.DEFAULT_ACCESS and in PUBLIC_PREFIXES here"
            )
    unknown = "dk_0123abcd_" + "A" * 43

    async def go() -> None:
        async with client_for(app) as c:
            for method, path, role in protected:
                url = concrete(path)
                where = f"{method} {path} ({role})"
                assert await ask(c, method, url, {}) == 401, where
                assert await ask(c, method, url, {"X-API-Key": "nope"}) == 401, where
                assert await ask(c, method, url, {"X-API-Key": unknown}) == 401, where
                assert await ask(c, method, url, {"Authorization": "Bearer nope"}) == 401, where
                below = [r for r in keys if RANK[r] < RANK[role]]
                for low in below:
                    assert await ask(c, method, url, {"X-API-Key": keys[low]}) == 403, f"{where} with {low}"
                    assert await ask(c, method, url, {"Authorization": f"Bearer {keys[low]}"}) == 403, where
                for high in [r for r in keys if RANK[r] >= RANK[role]]:
                    assert await ask(c, method, url, {"X-API-Key": keys[high]}) not in (401, 403), f"{where} {high}"
                assert await ask(c, method, url, {"Authorization": f"Bearer {keys['admin']}"}) not in (401, 403)
                assert await ask(c, method, url, {"X-API-Key": LEGACY}) not in (401, 403), where
            for method, path, _ in ops:
                if (method, path, "public") in ops and method in ("GET", "HEAD"):
                    assert await ask(c, method, concrete(path), {}) not in (401, 403), f"{method} {path}"
                    # a bad key on a public route is ignored, not refused
                    assert await ask(c, method, concrete(path), {"X-API-Key": "nope"}) not in (401, 403)

            # OpenAPI says the same, operation by operation.
            spec = (await c.get("/openapi.json")).json()
            assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
            roles = {(m.upper(), p): r for m, p, r in ops}
            for path, methods in spec["paths"].items():
                for method, op in methods.items():
                    role = roles[(method.upper(), path)]
                    if role == "public":
                        assert "security" not in op and "401" not in op["responses"], f"{method} {path}"
                    else:
                        assert op["security"] == [{"ApiKey": []}, {"Bearer": []}], f"{method} {path}"
                        assert {"401", "403"} <= set(op["responses"]) and op["x-required-role"] == role

    asyncio.run(go())


def test_a_floor_in_the_code_beats_a_map_that_opens_the_route(tmp_path: Path, keyfile: Path) -> None:
    app = make_app(tmp_path, keyfile, access="/v1/displays/audit=public")
    route = next(r for r, p in iter_routes(app.routes) if p == "/v1/displays/audit")
    assert declared_floor(route) == "admin" and app.state.access.policy.role_of(route) == "admin"

    async def go() -> None:
        async with client_for(app) as c:
            assert (await c.get("/v1/displays/audit")).status_code == 401

    asyncio.run(go())


def test_the_map_can_raise_a_public_route(tmp_path: Path, keyfile: Path, keys: dict[str, str]) -> None:
    app = make_app(tmp_path, keyfile, access="/v1/parking=display")

    async def go() -> None:
        async with client_for(app) as c:
            assert (await c.get("/v1/parking/lots")).status_code == 401
            assert (await c.get("/v1/parking/lots", headers={"X-API-Key": keys["display"]})).status_code == 200
            assert (await c.get("/v1/zones")).status_code == 200
            spec = (await c.get("/openapi.json")).json()
            assert spec["paths"]["/v1/parking/lots"]["get"]["x-required-role"] == "display"

    asyncio.run(go())


def test_a_revoked_key_is_refused_without_a_restart(tmp_path: Path, keyfile: Path, keys: dict[str, str]) -> None:
    app = make_app(tmp_path, keyfile)

    async def go() -> None:
        async with client_for(app) as c:
            admin = {"X-API-Key": keys["admin"]}
            assert (await c.get("/v1/displays/audit", headers=admin)).status_code == 200
            revoke_key(keyfile, "k-admin")
            r = await c.get("/v1/displays/audit", headers=admin)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            new = add_key(keyfile, "k-admin", "admin")
            assert (await c.get("/v1/displays/audit", headers={"X-API-Key": new})).status_code == 200
            assert app.state.access.refusals["invalid_key"] == 1

    asyncio.run(go())


def test_keys_never_reach_a_log_or_an_answer(
    tmp_path: Path, keyfile: Path, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(tmp_path, keyfile)
    revoked = add_key(keyfile, "gone", "admin")
    revoke_key(keyfile, "gone")
    secrets_ = [*keys.values(), LEGACY, revoked, "dk_0123abcd_" + "B" * 43, "wrong-but-secret-looking-key"]
    bodies: list[str] = []

    async def go() -> None:
        async with client_for(app) as c:
            for key in secrets_:
                for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
                    for method, url in (
                        ("GET", "/v1/displays/audit"),
                        ("PUT", "/v1/displays/g/override"),
                        ("GET", "/v1/parking/lots"),
                        ("GET", "/v1/devices"),
                    ):
                        r = await c.request(method, url, headers=headers, json={"mode": "blank"})
                        bodies.append(r.text + str(r.headers))
            until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            r = await c.put(
                "/v1/displays/g/override", json={"mode": "blank", "until": until}, headers={"X-API-Key": keys["admin"]}
            )
            bodies.append(r.text)

    asyncio.run(go())
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for key in secrets_:
        assert key not in caplog.text, "a key reached the log"
        assert all(key not in b for b in bodies), "a key reached an answer"
        assert key not in repr(app.state.access.keys)
