"""Sensor drivers, one module per sensor kind, registered by ``type``."""
