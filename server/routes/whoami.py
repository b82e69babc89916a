"""Who the presented key is: its name and role, so a client (the web console) shows what it may do.

Public, and like every public route it never refuses: without a key, or with
one the server does not know (never issued, revoked, mistyped), the answer is
the ``public`` role (``key_known`` tells the two apart); with a known key, its
name and role. A page thus learns a key's role without asking for something
the key may not have and being refused (a refusal a browser logs as an error).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from server.auth import access_of, presented_key
from server.deps import no_store
from server.keys import Role

router = APIRouter(prefix="/v1", tags=["access"], dependencies=[Depends(no_store)])


class WhoAmI(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role = Field(description="The key's role (display, operator or admin); public without a known key.")
    name: str | None = Field(description="The key's name (what audit logs record); null without a known key.")
    key_presented: bool = Field(description="Whether the request carried a key.")
    key_known: bool = Field(description="Whether the server knows that key (false: unknown, revoked, mistyped).")


@router.get(
    "/whoami",
    summary="The role of the presented key",
    description="The caller's role and key name, from `X-API-Key` or `Authorization: Bearer`: the key's own, or"
    " `public` without a key or with one the server does not know (`key_known: false`). Never a 401 or 403:"
    " the web console asks this to show only what a key may use.",
    response_model=WhoAmI,
)
async def whoami(request: Request) -> WhoAmI:
    presented = presented_key(request.scope)
    who = access_of(request.app).keys.identify(presented) if presented else None
    if who is None:
        return WhoAmI(role="public", name=None, key_presented=bool(presented), key_known=False)
    return WhoAmI(role=who.role, name=who.name, key_presented=True, key_known=True)
