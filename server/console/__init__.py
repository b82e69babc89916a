"""The operators' web console, ``/console``: static HTML, JavaScript and CSS inside the package.

Everything the page loads is served from here (``static/``, its npm
dependencies copied into ``static/vendor/`` by ``scripts/console-assets``), so
it works offline on site; the Content-Security-Policy lets the page load and
connect to this server only, never a CDN. The page reads the public API
(``/v1/site``, ``/v1/live/events``, sign feeds) and, with a key the visitor
enters, the operator and admin endpoints. Not part of the OpenAPI schema.
docs/console.md describes it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

#: Only this server: scripts, styles, fetches and event streams (uPlot sets styles through the CSSOM, which
#: style-src does not restrict).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers; revalidated on every load (an upgrade shows at once)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["content-security-policy"] = CSP
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "no-referrer"
        response.headers["cache-control"] = "no-cache"
        return response


def mount_console(app: FastAPI, path: str = "/console") -> None:
    """Serve the console at ``path`` (``/console`` redirects to ``/console/``)."""
    app.mount(path, ConsoleFiles(directory=STATIC, html=True), name="console")
