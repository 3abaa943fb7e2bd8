"""Telemetry in, profiles out: the OTLP/HTTP receiver, span normaliser, trace assembly and profile store."""
