"""Reaching a running rig: the local operator socket, MQTT telemetry, and the checks on remote commands."""
