"""Sinks for ``telemetry.Telemetry``: Prometheus metrics, OpenTelemetry and MLflow spans, usage per key.

Each module holds one sink; ``wiring`` picks them from the settings. The OpenTelemetry and MLflow sinks
import their (optional) libraries only when built.
"""
