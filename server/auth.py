"""Access control: which role each request needs, and the key check (docs/access-control.md).

Roles, lowest first: ``public`` < ``display`` < ``operator`` < ``admin``
(:mod:`server.keys`). A key comes in ``X-API-Key: <key>`` or
``Authorization: Bearer <key>`` (what Prometheus can send).

Which role a request needs comes from two places, and the higher wins:

* the access map (:data:`DEFAULT_ACCESS`, extended or overridden by the
  ``access`` setting): path prefix -> role, matched segment by segment
  (``*`` or any ``{param}`` in a prefix matches one segment), the most
  specific prefix winning; ``/`` is the default for paths nothing else names,
  ``operator``, so a new route is never public by accident. The map is
  enforced by :class:`AccessMiddleware` on the request path, before routing:
  it covers every route, mounts and static files included, whatever the
  router does, and a public request costs one cached lookup;
* a floor the route's code declares by depending on :data:`AdminDep` or
  :data:`OperatorDep` (it needs the caller's name, e.g. for an audit log):
  the map can raise such a route, never open it below that.

OpenAPI documents both schemes and the 401/403 answers on exactly the
operations that need a key (:func:`install` wraps ``app.openapi``).

Answers: 401 without a key, with a malformed one, or with one the server
does not know (never issued, revoked, rotated): the caller must authenticate
again. 403 with a valid key whose role is too low. Keys never reach a log or
an error message; the key's *name* does.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from fastapi import Depends, FastAPI, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from server import models
from server.errors import ApiError
from server.keys import RANK, ROLES, KeyRing, Principal, Role, at_least

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

#: Which role a path prefix needs, by default. Live availability, guidance, the
#: integrators' feeds and the sign states are public; history, devices and alerts
#: need an operator; overrides, the audit log and configuration an admin. A path
#: nothing here names needs an operator key, so a new route is never public by accident.
DEFAULT_ACCESS: dict[str, Role] = {
    "/": "operator",
    # live availability and guidance
    "/v1/parking": "public",
    "/v1/lockers": "public",
    "/v1/zones": "public",
    "/v1/guidance": "public",
    # integrators' feeds (DATEX II, ParkAPI, NGSI-LD)
    "/v1/feeds": "public",
    "/ngsi-ld": "public",
    # sign states and their event streams
    "/v1/displays": "public",
    # service health, metrics (counts only, no secrets: docs/metrics.md), the API's own description
    "/healthz": "public",
    "/metrics": "public",
    "/openapi.json": "public",
    "/docs": "public",
    "/redoc": "public",
    # the operators' console page (its data comes from the API, each under its own role), the site plan
    # it draws (configuration only: names and coordinates) and the live feed of the public summaries
    "/console": "public",
    "/v1/site": "public",
    "/v1/live": "public",
    # the presented key's own name and role (public for none or an unknown one)
    "/v1/whoami": "public",
    # history: per lot, zone, locker bank, and peaks, wherever they live
    "/v1/history": "operator",
    "/v1/parking/lots/*/history": "operator",
    "/v1/parking/lots/*/peaks": "operator",
    "/v1/zones/*/history": "operator",
    "/v1/zones/*/peaks": "operator",
    "/v1/lockers/*/history": "operator",
    "/v1/peaks": "operator",
    # device health and alerts
    "/v1/devices": "operator",
    "/v1/alerts": "operator",
    # overrides, audit, configuration
    "/v1/displays/audit": "admin",
    "/v1/displays/*/override": "admin",
    "/v1/config": "admin",
    "/v1/admin": "admin",
}


class Unauthorized(ApiError):
    status_code = 401
    error = "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": 'Bearer realm="district"'}


class Forbidden(ApiError):
    status_code = 403
    error = "forbidden"


# -- the access map ---------------------------------------------------------------------


#: Entries of :data:`DEFAULT_ACCESS` that no route has yet: namespaces held so that a route added under
#: them is born with their role (history and admin work never public by accident). Every other entry
#: names a route that exists (tests/unit/server/test_access.py checks both).
RESERVED = frozenset({"/v1/history", "/v1/peaks", "/v1/config", "/v1/admin"})


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _is_wild(segment: str) -> bool:
    return segment == "*" or (segment.startswith("{") and segment.endswith("}"))


def prefix_matches(prefix: str, template: str) -> bool:
    """Whether the access map's ``prefix`` covers the route ``template`` (or request path): each of the
    prefix's segments equals the path's, or is a wildcard (``*`` or ``{param}``) for one segment."""
    return _covers(_segments(prefix), _segments(template))


def _covers(prefix: list[str], segs: list[str]) -> bool:
    return len(prefix) <= len(segs) and all(
        p == s or _is_wild(p) for p, s in zip(prefix, segs[: len(prefix)], strict=True)
    )


class AccessPolicy:
    """The access map: the role a route template needs (see the module docstring)."""

    def __init__(self, overrides: Mapping[str, Role] | None = None) -> None:
        merged = {**DEFAULT_ACCESS, **(overrides or {})}
        for prefix, role in merged.items():
            if not prefix.startswith("/"):
                raise ValueError(f"access: {prefix!r} must start with /")
            if role not in RANK:
                raise ValueError(f"access: {prefix!r}: role must be one of {', '.join(ROLES)}")
        self.map = merged
        self._cache: dict[str, Role] = {}
        self._entries = sorted(
            ((_segments(p), role) for p, role in merged.items()),
            # the most specific first: more segments, then more literal ones
            key=lambda e: (len(e[0]), sum(not _is_wild(s) for s in e[0])),
            reverse=True,
        )

    def role_for_path(self, template: str) -> Role:
        """The map's role for a route template such as ``/v1/parking/lots/{lot_id}``."""
        segs = _segments(template)
        for prefix, role in self._entries:
            if _covers(prefix, segs):
                return role
        return "operator"  # unreachable while "/" is in the map; safe if someone maps "/" away

    def role_for_request(self, path: str) -> Role:
        """The map's role for a request path (cached: a public request costs one dict lookup)."""
        role: Role | None = self._cache.get(path)
        if role is None:
            role = self.role_for_path(path)
            if len(self._cache) >= 4096:  # paths carry ids: bound the cache
                self._cache.clear()
            self._cache[path] = role
        return role

    def role_of(self, route: BaseRoute, path: str | None = None) -> Role:
        """The role ``route`` (at ``path``, default its own) needs: the map's, raised to its code's floor."""
        role = self.role_for_path(path or str(getattr(route, "path", "/")))
        floor = declared_floor(route)
        if floor is not None and RANK[floor] > RANK[role]:
            return floor
        return role


def declared_floor(route: BaseRoute) -> Role | None:
    """The highest role a :class:`RequireRole` dependency of ``route`` asks for, if any."""
    if not isinstance(route, APIRoute):
        return None
    found: Role | None = None
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RequireRole) and (found is None or RANK[dep.call.role] > RANK[found]):
            found = dep.call.role
        stack.extend(dep.dependencies)
    return found


# -- the check ----------------------------------------------------------------------------

_KEY_DESCRIPTION = "An API key (`district keys add NAME --role ROLE`); docs/access-control.md."
_BEARER_DESCRIPTION = "The same API key as `Authorization: Bearer <key>` (for clients that cannot set X-API-Key)."

_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    auto_error=False,
    description=_KEY_DESCRIPTION,
)
_bearer = HTTPBearer(
    scheme_name="Bearer",
    auto_error=False,
    description=_BEARER_DESCRIPTION,
)

_SCOPE_KEY = "district.principal"


def access_of(app: Any) -> Access:
    access: Access = app.state.access
    return access


def authenticate(scope: Scope, ring: KeyRing, presented: str | None) -> Principal:
    """The caller of this request (cached in its scope); Unauthorized without a known key."""
    cached = scope.get(_SCOPE_KEY)
    if isinstance(cached, Principal):
        return cached
    if not presented:
        raise Unauthorized(f"this needs an API key in the {API_KEY_HEADER} header (or Authorization: Bearer)")
    who = ring.identify(presented)
    if who is None:
        raise Unauthorized("the API key is not valid (unknown, revoked or malformed)")
    scope[_SCOPE_KEY] = who
    return who


def authorize(who: Principal, needed: Role) -> None:
    if not at_least(who.role, needed):
        raise Forbidden(f"the key {who.name!r} has role {who.role}; this needs {needed} or higher")


class RequireRole:
    """A dependency: the calling key's name, if its role is at least ``role``; else 401/403."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __repr__(self) -> str:
        return f"RequireRole({self.role!r})"

    async def __call__(
        self,
        request: Request,
        key: Annotated[str | None, Security(_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> str:
        presented = key or (bearer.credentials if bearer else None)
        return check(access_of(request.app), request.scope, presented, self.role).name


_REQUIRE: dict[str, RequireRole] = {role: RequireRole(role) for role in ROLES}
require_admin = _REQUIRE["admin"]
require_operator = _REQUIRE["operator"]
require_display = _REQUIRE["display"]

#: The calling admin key's name (display overrides and audit). 401/403 otherwise.
AdminDep = Annotated[str, Depends(require_admin)]
#: The calling key's name, if it is an operator's or an admin's (history, devices, alerts).
OperatorDep = Annotated[str, Depends(require_operator)]


def operator_responses() -> dict[int | str, dict[str, object]]:
    """The 401/403 answers an operator route documents in OpenAPI."""
    from server import models

    return {
        401: {"model": models.ErrorOut, "description": "No X-API-Key header."},
        403: {"model": models.ErrorOut, "description": "The key is not an operator key."},
    }


#: The calling key's name, for a display's key or any higher one.
DisplayDep = Annotated[str, Depends(require_display)]


# -- the whole app: middleware and OpenAPI ---------------------------------------------------


@dataclass
class Access:
    """What the app enforces: the map, the keys, and how often it refused (for metrics)."""

    policy: AccessPolicy
    keys: KeyRing
    #: Refused requests by reason: ``missing_key``, ``invalid_key``, ``role_too_low``.
    refusals: Counter[str] = field(default_factory=Counter)


def presented_key(scope: Scope) -> str | None:
    """The key of ``X-API-Key``, else of ``Authorization: Bearer``."""
    bearer: str | None = None
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1")
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                bearer = credentials.strip()
    return bearer


def check(access: Access, scope: Scope, presented: str | None, needed: Role) -> Principal:
    """Authenticate and authorize, counting refusals; Unauthorized/Forbidden."""
    try:
        who = authenticate(scope, access.keys, presented)
    except Unauthorized:
        access.refusals["invalid_key" if presented else "missing_key"] += 1
        raise
    try:
        authorize(who, needed)
    except Forbidden:
        access.refusals["role_too_low"] += 1
        raise
    return who


class AccessMiddleware:
    """Enforces the access map on every HTTP request, before routing (pure ASGI)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            # A CORS preflight carries no credentials; the API has no OPTIONS operation to protect.
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        role = self.access.policy.role_for_request(path)
        if role != "public":
            try:
                check(self.access, scope, presented_key(scope), role)
            except ApiError as exc:
                await send_error(send, exc)
                return
        await self.app(scope, receive, send)


async def send_error(send: Send, exc: ApiError) -> None:
    """The API's error JSON (:class:`server.models.ErrorOut`), from outside the router."""
    body = models.ErrorOut(error=exc.error, detail=exc.detail).model_dump_json().encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def iter_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[BaseRoute, str]]:
    """Every route of an app with its full path, included routers flattened.

    FastAPI >= 0.16x includes a router lazily (an ``_IncludedRouter`` holding the original
    router and the include's prefix); older versions copy its routes in. Both are handled;
    a mount is yielded itself (the middleware covers everything under it).
    """
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from iter_routes(inner.routes, prefix + str(getattr(context, "prefix", "") or ""))
        else:
            yield route, prefix + str(getattr(route, "path", ""))


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]


def document(schema: dict[str, Any], app: FastAPI, policy: AccessPolicy) -> None:
    """Mark every operation that needs a key: security schemes, 401/403 answers, ``x-required-role``."""
    floors: dict[tuple[str, str], Role] = {}
    for route, path in iter_routes(app.routes):
        floor = declared_floor(route)
        if floor is not None:
            for method in getattr(route, "methods", None) or ():
                floors[(method.lower(), path)] = floor
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.setdefault(
        "ApiKey", {"type": "apiKey", "in": "header", "name": API_KEY_HEADER, "description": _KEY_DESCRIPTION}
    )
    schemes.setdefault("Bearer", {"type": "http", "scheme": "bearer", "description": _BEARER_DESCRIPTION})
    schemas = components.setdefault("schemas", {})
    if "ErrorOut" not in schemas:
        schemas["ErrorOut"] = models.ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            if method not in _HTTP_METHODS:
                continue
            role = policy.role_for_path(path)
            floor = floors.get((method, path))
            if floor is not None and RANK[floor] > RANK[role]:
                role = floor
            if role == "public":
                continue
            op["security"] = _SECURITY
            op["x-required-role"] = role
            responses = op.setdefault("responses", {})
            responses["401"] = {
                "description": "No API key, or one that is not valid (unknown, revoked or malformed).",
                "content": error,
            }
            responses["403"] = {"description": f"The key is valid, but its role is below {role}.", "content": error}


def install(app: FastAPI, access: Access) -> None:
    """Enforce ``access`` on ``app`` and document it in its OpenAPI (call once, in ``create_app``)."""
    app.state.access = access
    app.add_middleware(AccessMiddleware, access=access)
    build = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = build()
        if not done:
            document(schema, app, access.policy)
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
