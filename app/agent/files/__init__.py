"""File restores on the proxy: files out of an image restore point, as an archive or into the VM."""
