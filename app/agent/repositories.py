"""Opening backup repositories by location, once per process.

Opening derives keys from the passphrase (scrypt, deliberately slow), so proxies keep one
open repository per location and share it between jobs; it is thread-safe.
"""

from __future__ import annotations

import threading

from app.chunkstore import Repository, open_backend
from app.contracts.agent import RepositoryAccess


class RepositoryCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Repository] = {}

    def get(self, access: RepositoryAccess) -> Repository:
        with self._lock:
            repo = self._open.get(access.url)
            if repo is None:
                repo = Repository.open(open_backend(access.url), passphrase=access.passphrase)
                self._open[access.url] = repo
            return repo
