"""Interop feeds for integrators: DATEX II v3 (XML), ParkAPI (JSON), FIWARE NGSI-LD.

Pure serializers, one module per format, over the server's live view
(:class:`server.models.ParkingLot`, bay readings, zone states). Nothing here
knows FastAPI; the routes are in :mod:`server.routes.feeds`, the field
mappings in ``docs/feeds.md``.

One rule runs through every format (:func:`server.feeds.common.availability`):
a count is published only while the lot has fresh readings; a closed lot
publishes 0 free; a lot without fresh data publishes no count at all, in the
way its format says "unknown", never a stale number as if it were live.
"""
