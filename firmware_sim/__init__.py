"""Simulated devices that speak the same interfaces as real ones (Modbus RTU on a serial line)."""
