"""vcenters."""
