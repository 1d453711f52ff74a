"""Ticketing and monitoring integrations: signed webhooks in (restore requests) and out (status, alerts)."""
