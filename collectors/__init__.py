"""Collectors: devices in, ``Reading`` out. Modbus polling, MQTT subscription, and the sinks
that carry telemetry on (embedded SQLite store, InfluxDB)."""
