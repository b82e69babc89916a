"""Live state, one small store per resource, fed by the MQTT stream and filled from history.

``base`` holds what every store shares: a reading's place in its device's
order (:class:`~server.stores.base.Reading`), the clock-offset estimate that
turns device time into ours, and :class:`~server.stores.base.EntityStore`,
the last state of each entity (bay, compartment) of each group (lot, bank).
``bays``, ``lockers``, ``zones`` and ``devices`` are the resources; each one
declares how it loads its last state from InfluxDB
(:class:`~server.stores.base.HistoryFed`), and :mod:`server.dbmonitor` runs
bootstrap, gap-fill and catch-up over all of them the same way. A new resource
is one store module here plus one route module in ``server/routes``.
"""
