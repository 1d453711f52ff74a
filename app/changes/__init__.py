"""Customers ask for policy changes; operators approve (applied at once) or reject with a reason."""
