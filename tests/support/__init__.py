"""Helpers shared by the test suite (simulators, fixtures)."""
