"""Retention: pruning restore points beyond their policy's GFS retention, and repository GC."""
