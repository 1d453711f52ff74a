"""Jobs: units of work (backups, restores, snapshot clean-ups) that proxies claim and run."""
