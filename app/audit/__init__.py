"""The audit log: who did what, through which key, with what outcome. Append-only."""
