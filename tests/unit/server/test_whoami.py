"""``GET /v1/whoami``: the presented key's name and role; public, and never a refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.keys import add_key, revoke_key
from tests.unit.server.test_access import LEGACY, client_for, make_app


def test_whoami_names_each_keys_role_and_never_refuses_a_known_one(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys" / "api-keys"
    keys = {role: add_key(keyfile, f"k-{role}", role) for role in ("display", "operator", "admin")}  # type: ignore[arg-type]
    app = make_app(tmp_path, keyfile)

    async def go() -> None:
        async with client_for(app) as c:
            r = await c.get("/v1/whoami")
            anonymous = {"role": "public", "name": None, "key_presented": False, "key_known": False}
            assert r.status_code == 200 and r.json() == anonymous
            assert r.headers["cache-control"] == "no-store"
            for role, key in keys.items():
                answer = (await c.get("/v1/whoami", headers={"X-API-Key": key})).json()
                assert answer == {"role": role, "name": f"k-{role}", "key_presented": True, "key_known": True}
            bearer = {"Authorization": f"Bearer {keys['operator']}"}
            assert (await c.get("/v1/whoami", headers=bearer)).json()["role"] == "operator"
            answer = (await c.get("/v1/whoami", headers={"X-API-Key": LEGACY})).json()
            assert (answer["role"], answer["name"]) == ("admin", "legacy")
            unknown = {"role": "public", "name": None, "key_presented": True, "key_known": False}
            r = await c.get("/v1/whoami", headers={"X-API-Key": "nope"})
            assert r.status_code == 200 and r.json() == unknown and "nope" not in r.text
            revoke_key(keyfile, "k-display")
            assert (await c.get("/v1/whoami", headers={"X-API-Key": keys["display"]})).json() == unknown
            spec = (await c.get("/openapi.json")).json()["paths"]["/v1/whoami"]["get"]
            assert not {"401", "403"} & set(spec["responses"]) and "security" not in spec

    asyncio.run(go())
