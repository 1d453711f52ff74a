"""Background loops of the service: small, idempotent, each with its own interval."""
