"""Helpers shared by the test suites (broker fixtures, MQTT probe, fault proxy)."""
