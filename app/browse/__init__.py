"""Browsing image restore points file by file, and serving restore archives, from the server."""
