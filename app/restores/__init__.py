"""Restores: requests to bring a VM (or later files, databases) back, with their SLA clocks."""
