"""Prometheus metrics read from the catalog at scrape time, so every replica reports the same truth."""
