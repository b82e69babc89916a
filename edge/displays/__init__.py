"""The display bridge: guidance-API sign states onto RS-485 Modbus RTU LED count displays.

``district display-bridge`` (:mod:`edge.displays.main`) runs on an edge device
next to the signs: :mod:`~edge.displays.follow` follows each sign's state
(Server-Sent Events, falling back to polling), :mod:`~edge.displays.bridge`
writes it to the display (:mod:`~edge.displays.rtu`, the count-display map in
:mod:`contracts.fieldbus`). docs/display-bridge.md tells the whole story.
"""
