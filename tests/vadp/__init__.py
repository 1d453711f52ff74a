"""Tests of the vCenter client (app.vadp)."""
