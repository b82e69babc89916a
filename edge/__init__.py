"""The edge agent: reads local sensors and cameras, publishes counts and states over MQTT.

Frames never leave the device; only counts, states and health do.
"""
