"""Forecasts of footfall per zone and occupancy per lot (docs/forecast.md)."""
