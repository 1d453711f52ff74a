"""Restore points: the catalog's record of what the repository holds for each VM."""
