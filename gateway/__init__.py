"""The gateway: MQTT intake, validation, batching, and InfluxDB's 1.x HTTP API."""
