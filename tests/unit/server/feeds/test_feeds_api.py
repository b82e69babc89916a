"""The feed routes on injected live state: media types, caching, NGSI-LD queries and errors."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter

from contracts.site import SiteConfig
from server.app import create_app
from server.feeds import datex2, ngsild
from server.feeds import models as fm
from server.live import LiveState
from server.settings import ServerSettings
from tests.unit.server.feeds.conftest import T0

FEED_PATHS = {
    "/v1/feeds/datex2/parking-table.xml": "application/xml",
    "/v1/feeds/datex2/parking-status.xml": "application/xml",
    "/v1/feeds/parkapi": "application/json",
    "/v1/feeds/parkapi/v3/parking-sites": "application/json",
    "/ngsi-ld/v1/entities": "application/ld+json",
    "/ngsi-ld/v1/entities/{entity_id}": "application/ld+json",
}
ENTITIES = TypeAdapter(list[fm.Entity])


class Client:
    """A synchronous face on httpx's ASGI transport (as in test_server_api)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, **params: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.get(path, params=params)

        return asyncio.run(go())


def make_client(live: LiveState, tmp_path: Path, **settings: str) -> Client:
    s = ServerSettings(site_config=tmp_path / "unused.yaml", **settings)  # type: ignore[arg-type]
    return Client(create_app(s, site=live.site, live=live, connect=False))


@pytest.fixture
def client(live: LiveState, tmp_path: Path) -> Client:
    return make_client(live, tmp_path)


def test_every_feed_is_in_openapi_with_its_media_type(client: Client) -> None:
    spec = client.get("/openapi.json").json()
    for path, media_type in FEED_PATHS.items():
        op = spec["paths"][path]["get"]
        assert op["summary"] and op["description"]
        assert list(op["responses"]["200"]["content"]) == [media_type], path
    entity_errors = spec["paths"]["/ngsi-ld/v1/entities/{entity_id}"]["get"]["responses"]
    assert list(entity_errors["404"]["content"]) == ["application/json"]
    one = spec["paths"]["/ngsi-ld/v1/entities/{entity_id}"]["get"]["responses"]["200"]
    refs = {s["$ref"].rsplit("/", 1)[1] for s in one["content"]["application/ld+json"]["schema"]["anyOf"]}
    assert refs == {
        "OffStreetParkingNormalized",
        "OffStreetParkingKeyValues",
        "ParkingSpotNormalized",
        "ParkingSpotKeyValues",
        "CrowdFlowObservedNormalized",
        "CrowdFlowObservedKeyValues",
    }
    city = spec["paths"]["/v1/feeds/parkapi"]["get"]["responses"]["200"]["content"]["application/json"]
    assert city["schema"]["$ref"].endswith("/ParkApiCity")


@pytest.mark.parametrize("path", ["/v1/feeds/datex2/parking-table.xml", "/v1/feeds/datex2/parking-status.xml"])
def test_datex2_feeds_are_xml_never_cached(client: Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    assert r.headers["cache-control"] == "no-store"
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{datex2.NS['d2']}}}payload"
    creator = root.find(f"{{{datex2.NS['com']}}}publicationCreator")
    assert creator is not None
    assert [c.text for c in creator] == ["DE", "s1"]


def test_the_publisher_comes_from_the_settings(live: LiveState, tmp_path: Path) -> None:
    client = make_client(live, tmp_path, feeds_country="AT", feeds_language="en")
    root = ET.fromstring(client.get("/v1/feeds/datex2/parking-table.xml").content)
    assert root.get("lang") == "en"
    creator = root.find(f"{{{datex2.NS['com']}}}publicationCreator")
    assert creator is not None and creator[0].text == "AT"


def test_the_table_version_time_is_when_the_version_was_first_published(live: LiveState, tmp_path: Path) -> None:
    now = [T0]
    live.clock = lambda: now[0]
    client = make_client(live, tmp_path)
    prk = datex2.NS["prk"]

    def version_time() -> str | None:
        root = ET.fromstring(client.get("/v1/feeds/datex2/parking-table.xml").content)
        return root.findtext(f"{{{prk}}}parkingTable/{{{prk}}}parkingTableVersionTime")

    assert version_time() == "2026-05-04T12:00:00Z"
    now[0] = T0.replace(hour=13)
    assert version_time() == "2026-05-04T12:00:00Z"  # same content, same version, same time


def test_parkapi_feeds(client: Client) -> None:
    r = client.get("/v1/feeds/parkapi")
    assert (r.status_code, r.headers["content-type"], r.headers["cache-control"]) == (
        200,
        "application/json",
        "no-store",
    )
    city = fm.ParkApiCity.model_validate(r.json())
    assert {lot.id: (lot.state, lot.free) for lot in city.lots} == {
        "open": ("open", 1),
        "full": ("open", 1),
        "closed": ("closed", 0),
        "stale": ("nodata", None),
        "never": ("nodata", None),
        "my:lot": ("open", 1),
    }
    r = client.get("/v1/feeds/parkapi/v3/parking-sites")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    sites = fm.ParkApiSites.model_validate(r.json())
    assert [s.realtime_opening_status for s in sites.items] == ["OPEN", "OPEN", "CLOSED", "UNKNOWN", "UNKNOWN", "OPEN"]


# -- NGSI-LD -------------------------------------------------------------------


def entities(client: Client, **params: str) -> httpx.Response:
    r = client.get("/ngsi-ld/v1/entities", **params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/ld+json"
    assert r.headers["cache-control"] == "no-store"
    ENTITIES.validate_python(r.json())
    return r


def test_entities_by_type_normalized_by_default(client: Client) -> None:
    body = entities(client, type="OffStreetParking").json()
    assert [e["id"].rsplit(":", 1)[1] for e in body] == ["open", "full", "closed", "stale", "never", "lot"]
    assert body[0]["availableSpotNumber"]["type"] == "Property"
    assert body[0]["@context"] == [ngsild.PARKING_CONTEXT, ngsild.CORE_CONTEXT]


@pytest.mark.parametrize("options", ["keyValues", "simplified", "sysAttrs,keyValues"])
def test_entities_in_key_values(client: Client, options: str) -> None:
    body = entities(client, type="OffStreetParking", options=options).json()
    assert body[0]["availableSpotNumber"] == 1


def test_entities_page_and_count(client: Client) -> None:
    # 4 + 3 + 1 + 2 + 1 + 1 bays
    r = entities(client, type="ParkingSpot", limit="3", offset="2", count="true")
    assert r.headers["ngsild-results-count"] == "12"
    assert [e["id"] for e in r.json()] == [
        "urn:ngsi-ld:ParkingSpot:s1:open:B003",
        "urn:ngsi-ld:ParkingSpot:s1:open:B004",
        "urn:ngsi-ld:ParkingSpot:s1:full:a",
    ]
    assert [e["status"]["value"] for e in r.json()] == ["unknown", "unknown", "free"]
    r = entities(client, type="ParkingSpot")
    assert len(r.json()) == 12 and "ngsild-results-count" not in r.headers
    assert entities(client, type="ParkingSpot", limit="5", offset="11").json()[0]["id"].endswith(":my:lot:b:1")
    assert entities(client, type="ParkingSpot", offset="50").json() == []
    assert entities(client, type="ParkingSpot", limit="0", count="true").headers["ngsild-results-count"] == "12"


def test_several_types_and_unknown_types(client: Client) -> None:
    body = entities(client, type="CrowdFlowObserved,OffStreetParking,Vehicle", limit="100").json()
    assert [e["type"] for e in body] == ["OffStreetParking"] * 6 + ["CrowdFlowObserved"] * 2
    # No zone store yet: every zone is nodata, never 0 people.
    assert {e["crowdLevel"]["value"] for e in body if e["type"] == "CrowdFlowObserved"} == {"nodata"}
    assert entities(client, type="Vehicle").json() == []


@pytest.mark.parametrize("params", [{}, {"type": ""}, {"type": " , "}, {"type": "A,"}])
def test_a_query_without_a_type_is_rejected_by_the_schema(client: Client, params: dict[str, str]) -> None:
    # NGSI-LD answers 400 BadRequestData here; ours is the API's validation error (422), as its schema says.
    r = client.get("/ngsi-ld/v1/entities", **params)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "type"]


@pytest.mark.parametrize(
    ("eid", "key"),
    [
        ("urn:ngsi-ld:OffStreetParking:s1:full", "totalSpotNumber"),
        ("urn:ngsi-ld:ParkingSpot:s1:open:B001", "refParkingSite"),
        ("urn:ngsi-ld:ParkingSpot:s1:my:lot:b:1", "refParkingSite"),  # colons in lot and bay ids
        ("urn:ngsi-ld:CrowdFlowObserved:s1:z-none", "crowdLevel"),
    ],
)
def test_one_entity_by_id(client: Client, eid: str, key: str) -> None:
    r = client.get(f"/ngsi-ld/v1/entities/{eid}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/ld+json"
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["id"] == eid and key in body
    TypeAdapter(fm.Entity).validate_python(body)
    kv = client.get(f"/ngsi-ld/v1/entities/{eid}", options="keyValues").json()
    assert kv["id"] == eid and not isinstance(kv["name"], dict)


@pytest.mark.parametrize(
    "eid",
    [
        "urn:ngsi-ld:OffStreetParking:s1:nope",
        "urn:ngsi-ld:OffStreetParking:s2:open",
        "urn:ngsi-ld:ParkingSpot:s1:open:B999",
        "urn:ngsi-ld:ParkingSpot:s1:open",
        "urn:ngsi-ld:ParkingSpot:s1:nolot:x",
        "urn:ngsi-ld:CrowdFlowObserved:s1:z-elsewhere",
        "urn:ngsi-ld:Vehicle:s1:open",
    ],
)
def test_an_unknown_entity_is_an_ngsi_ld_not_found(client: Client, eid: str) -> None:
    r = client.get(f"/ngsi-ld/v1/entities/{eid}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound",
        "title": "Entity not found",
        "detail": eid,
    }


@pytest.mark.parametrize("eid", ["not-a-uri", ":x", "urn:", "1a:b", "a b:c"])
def test_an_id_that_is_no_uri_is_rejected_by_the_schema(client: Client, eid: str) -> None:
    r = client.get(f"/ngsi-ld/v1/entities/{eid}")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "entity_id"]


def test_an_empty_site_serves_empty_feeds(tmp_path: Path) -> None:
    empty = SiteConfig.model_validate({"site": {"id": "s0", "name": "Empty"}})
    client = make_client(LiveState(empty, clock=lambda: T0), tmp_path)
    assert client.get("/v1/feeds/parkapi").json()["lots"] == []
    assert client.get("/v1/feeds/parkapi/v3/parking-sites").json() == {"items": []}
    assert entities(client, type="OffStreetParking,ParkingSpot,CrowdFlowObserved").json() == []
    for path in ("/v1/feeds/datex2/parking-table.xml", "/v1/feeds/datex2/parking-status.xml"):
        assert len(ET.fromstring(client.get(path).content)) == 2  # publicationTime, publicationCreator
