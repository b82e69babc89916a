"""The city-scale fleet: thousands of simulated devices that publish MQTT directly (``district sim --scale``).

At district scale (:mod:`firmware_sim.fleet`) every lot and locker bank is a
simulated RS-485 bus that a real edge agent polls, so the Modbus path is
covered end to end. At city scale (10,000 bays, 500 locker banks, 50 cameras)
one edge agent and one pseudo-terminal per device would cost more than the
pipeline under test, so here each simulated device is its own MQTT client:
its own broker identity (username = device id, as the ACL demands), its own
outbox (:class:`edge.outbox.Outbox`) and publisher (:class:`edge.mqtt.MqttPublisher`),
so it stamps ``observed_at``, numbers readings (``epoch``/``seq``) and re-sends
until the gateway's ``stored`` confirmation exactly as a real edge does.

* :mod:`.sitegen`: writes a scaled site file (lots, banks, cameras, devices).
* :mod:`.footfall`: Auckland hourly pedestrian counts, split over minutes and lines.
* :mod:`.ledger`: the truth ledger (SQLite): what happened, per bay, compartment and line.
* :mod:`.faults`: fault specifications and device-group selectors.
* :mod:`.device`: one simulated device (outbox, publisher, clock, battery).
* :mod:`.fleet`: the demand loop that drives every device, and fault injection.
* :mod:`.main`: the ``district sim --scale`` command line.
"""
