"""Compliance: RPO breach history per protected VM and the SLA clocks of restores."""
