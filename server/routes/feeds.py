"""Interop feeds for integrators: DATEX II v3 (XML), ParkAPI (JSON), NGSI-LD entities.

Thin routes over :mod:`server.feeds`; field mappings in ``docs/feeds.md``.
Every answer is judged at one instant of the server's clock and never cached
(``no_store``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from server.deps import LiveDep, RuntimeDep, no_store
from server.feeds import datex2, ngsild, parkapi
from server.feeds import models as fm
from server.feeds.zones import ZoneState, from_crowd
from server.live import LiveState

router = APIRouter(tags=["feeds"], dependencies=[Depends(no_store)])

_NO_STORE = {"Cache-Control": "no-store"}
_STALE = (
    "A count is published only while the lot has fresh readings (a bay counts while heard within its lot's"
    " `stale_after_s`); a closed lot publishes 0 free; a lot without fresh data publishes no count."
)


class XmlResponse(Response):
    media_type = datex2.MEDIA_TYPE


class LdJsonResponse(JSONResponse):
    media_type = ngsild.MEDIA_TYPE


def _xml_doc(what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": what, "content": {datex2.MEDIA_TYPE: {"schema": {"type": "string"}}}}}


def current_zones(live: LiveState) -> Sequence[ZoneState]:
    """The zones' live state, from the live zone store."""
    return [from_crowd(z) for z in live.crowd()]


async def _publisher(runtime: RuntimeDep) -> datex2.Publisher:
    s = runtime.settings
    return datex2.Publisher(s.feeds_country, runtime.live.site.site.id, s.feeds_language)


PublisherDep = Annotated[datex2.Publisher, Depends(_publisher)]


# -- DATEX II ------------------------------------------------------------------


@router.get(
    "/v1/feeds/datex2/parking-table.xml",
    summary="DATEX II v3 ParkingTablePublication (static lot data)",
    description="One `UrbanParkingSite` record per lot: name, point location, number of spaces, layout."
    " The table and record `version`s change whenever the published fields do.",
    response_class=XmlResponse,
    responses=_xml_doc("A `d2:payload` of type `prk:ParkingTablePublication`."),
)
async def datex2_parking_table(request: Request, live: LiveDep, publisher: PublisherDep) -> XmlResponse:
    now = live.clock()
    # When this table version was first published here (kept for the app's life).
    seen: dict[str, datetime] | None = getattr(request.app.state, "datex2_table_versions", None)
    if seen is None:
        seen = request.app.state.datex2_table_versions = {}
    version_time = seen.setdefault(datex2.table_version(live.site), now)
    return XmlResponse(datex2.parking_table(live.site, publisher, now, version_time), headers=_NO_STORE)


@router.get(
    "/v1/feeds/datex2/parking-status.xml",
    summary="DATEX II v3 ParkingStatusPublication (live lot status)",
    description="One `ParkingSiteStatus` per lot: vacant and occupied spaces, site status, opening status."
    f" {_STALE} Without fresh data: no vacant count, `parkingSiteStatus` unknown; closed: opening status"
    " closed and 0 vacant.",
    response_class=XmlResponse,
    responses=_xml_doc("A `d2:payload` of type `prk:ParkingStatusPublication`."),
)
async def datex2_parking_status(live: LiveDep, publisher: PublisherDep) -> XmlResponse:
    now = live.clock()
    return XmlResponse(datex2.parking_status(live.site, live.lots(now), publisher, now), headers=_NO_STORE)


# -- ParkAPI -------------------------------------------------------------------


@router.get(
    "/v1/feeds/parkapi",
    summary="ParkAPI v1 city document",
    description="The classic ParkAPI (ParkenDD) city JSON: `last_updated`, `last_downloaded`, `lots[]` with"
    f" `free` and `state` (open, closed, nodata). {_STALE} Without fresh data `free` is left out and the"
    " state is nodata.",
    response_model=fm.ParkApiCity,
)
async def parkapi_city(live: LiveDep) -> JSONResponse:
    now = live.clock()
    zone_names = {z.id: z.name for z in live.site.zones}
    return JSONResponse(parkapi.city(live.lots(now), now, zone_names), headers=_NO_STORE)


@router.get(
    "/v1/feeds/parkapi/v3/parking-sites",
    summary="ParkAPI v3 parking sites (static and realtime)",
    description="Parking sites as parkapi-sources reads them (`items[]` with `uid`, `capacity`,"
    f" `realtime_free_capacity`, `realtime_opening_status`, ...). {_STALE} Without fresh data"
    " `realtime_free_capacity` is left out and `realtime_opening_status` is UNKNOWN.",
    response_model=fm.ParkApiSites,
)
async def parkapi_sites(live: LiveDep) -> JSONResponse:
    now = live.clock()
    return JSONResponse(parkapi.parking_sites(live.lots(now), now), headers=_NO_STORE)


# -- NGSI-LD -------------------------------------------------------------------

_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
#: An absolute URI: a scheme (RFC 3986 §3.1), a colon, something after it.
_URI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*:.+$"


def _problem(status: int, kind: str, title: str, detail: str) -> JSONResponse:
    body = fm.ProblemDetails(type=_ERRORS + kind, title=title, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=_NO_STORE)


def _key_values(options: str | None) -> bool:
    return options is not None and bool({"keyValues", "simplified"} & {o.strip() for o in options.split(",")})


def _entity_ids(live: LiveState, entity_type: ngsild.EntityType) -> Iterator[tuple[str, ...]]:
    """Local ids of every entity of a type, in site order (a bay: lot id, bay id)."""
    if entity_type == "OffStreetParking":
        yield from ((lot.id,) for lot in live.site.parking)
    elif entity_type == "ParkingSpot":
        for lot in live.site.parking:
            yield from ((lot.id, bay) for bay in lot.bay_ids())
    else:
        yield from ((z.id,) for z in live.site.zones)


class _Entities:
    """Builds entities of one site at one instant, looking each lot and zone up once."""

    def __init__(self, live: LiveState, now: datetime, key_values: bool) -> None:
        self.live, self.now, self.key_values = live, now, key_values
        self.site_id = live.site.site.id
        self.lots = {lot.id: lot for lot in live.lots(now)}
        self._zones: dict[str, ZoneState] | None = None

    def zone(self, zone_id: str) -> ZoneState | None:
        if self._zones is None:
            self._zones = {z.id: z for z in current_zones(self.live)}
        return self._zones.get(zone_id)

    def build(self, entity_type: ngsild.EntityType, local: tuple[str, ...]) -> dict[str, Any] | None:
        kv = self.key_values
        if entity_type == "OffStreetParking":
            lot = self.lots.get(local[0])
            return None if lot is None else ngsild.off_street_parking(self.site_id, lot, key_values=kv)
        if entity_type == "ParkingSpot":
            lot_id, bay_id = local
            lot = self.lots.get(lot_id)
            if lot is None or bay_id not in self.live.site.bays_by_lot[lot_id]:
                return None
            reading = self.live.bay(lot_id, bay_id)
            return ngsild.parking_spot(self.site_id, lot, bay_id, reading, self.now, key_values=kv)
        zone = self.zone(local[0])
        return None if zone is None else ngsild.crowd_flow_observed(self.site_id, zone, key_values=kv)

    def resolve(self, eid: str) -> dict[str, Any] | None:
        split = ngsild.split_entity_id(eid, self.site_id)
        if split is None:
            return None
        entity_type, rest = split
        if entity_type != "ParkingSpot":
            return self.build(entity_type, (rest,))
        # Lot ids may hold ':' too: try each lot whose id prefixes the rest.
        for lot in self.live.site.parking:
            if rest.startswith(lot.id + ":"):
                found = self.build("ParkingSpot", (lot.id, rest[len(lot.id) + 1 :]))
                if found is not None:
                    return found
        return None


_OPTIONS = Query(description="`keyValues` (or `simplified`): bare values instead of the normalized form.")


def _problem_doc(description: str) -> dict[str, Any]:
    # Errors are application/json (NGSI-LD ProblemDetails), whatever the route's entity media type.
    schema = fm.ProblemDetails.model_json_schema()
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: One or more entity types, comma-separated: NGSI-LD terms or type URIs.
_TYPES_PATTERN = r"^[A-Za-z0-9_.:/#-]+(,[A-Za-z0-9_.:/#-]+)*$"


@router.get(
    "/ngsi-ld/v1/entities",
    summary="NGSI-LD entities: OffStreetParking, ParkingSpot, CrowdFlowObserved",
    description="Query by `type` (required; a comma-separated list is accepted), normalized by default,"
    " keyValues with `options=keyValues`; `limit`/`offset` page through them in site order, `count=true`"
    f" adds the total in `NGSILD-Results-Count`. {_STALE} A stale bay is `unknown`; a lot without fresh data"
    " has no `availableSpotNumber` or `status`. An unknown type gives an empty list.",
    response_class=LdJsonResponse,
    response_model=list[fm.Entity],
)
async def ngsi_entities(
    live: LiveDep,
    type: Annotated[str, Query(max_length=256, pattern=_TYPES_PATTERN, description="Entity type(s), comma-separated.")],
    options: Annotated[str | None, _OPTIONS] = None,
    limit: Annotated[int, Query(ge=0, le=1000, description="At most this many entities.")] = 20,
    offset: Annotated[int, Query(ge=0, description="Skip this many entities first.")] = 0,
    count: Annotated[bool, Query(description="Add the number of matching entities in NGSILD-Results-Count.")] = False,
) -> Response:
    wanted = set(type.split(","))
    types = [t for t in ngsild.TYPES if t in wanted]
    entities = _Entities(live, live.clock(), _key_values(options))
    matching = ((t, local) for t in types for local in _entity_ids(live, t))
    out: list[dict[str, Any]] = []
    total = 0
    for t, local in matching:
        if offset <= total < offset + limit:
            entity = entities.build(t, local)
            if entity is not None:
                out.append(entity)
        total += 1
        if total >= offset + limit and not count:
            break
    headers = dict(_NO_STORE)
    if count:
        headers["NGSILD-Results-Count"] = str(total)
    return LdJsonResponse(out, headers=headers)


@router.get(
    "/ngsi-ld/v1/entities/{entity_id}",
    summary="One NGSI-LD entity by id",
    description="`urn:ngsi-ld:<Type>:<site>:<id>` (a bay: `<lot>:<bay>`), normalized by default, keyValues"
    " with `options=keyValues`.",
    response_class=LdJsonResponse,
    response_model=fm.Entity,
    responses={404: _problem_doc("No such entity (NGSI-LD ResourceNotFound).")},
)
async def ngsi_entity(
    live: LiveDep,
    entity_id: Annotated[str, Path(max_length=512, pattern=_URI_PATTERN, description="The entity's id, a URI (URN).")],
    options: Annotated[str | None, _OPTIONS] = None,
) -> Response:
    entity = _Entities(live, live.clock(), _key_values(options)).resolve(entity_id)
    if entity is None:
        return _problem(404, "ResourceNotFound", "Entity not found", entity_id)
    return LdJsonResponse(entity, headers=_NO_STORE)
