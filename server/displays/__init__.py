"""Display feeds: one computed state per configured sign, served as JSON, ETags and Server-Sent Events.

:mod:`~server.displays.render` holds the rendering rules (pure),
:mod:`~server.displays.engine` keeps every sign current and its bytes ready,
:mod:`~server.displays.state` persists event ids, overrides and the audit log,
:mod:`~server.displays.sse` streams one sign to one client. The routes are in
:mod:`server.routes.displays`; docs/displays.md describes the behaviour.
"""

from server.displays.engine import DisplayEngine, OverrideRejected, Sign, Subscriber

__all__ = ["DisplayEngine", "OverrideRejected", "Sign", "Subscriber"]
