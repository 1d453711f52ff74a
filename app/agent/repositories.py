"""Opening backup repositories by location, once per process.

Opening derives keys from the passphrase (scrypt, deliberately slow), so agents keep one open
repository per location and share it between jobs; it is thread-safe. Object-store credentials come
with the job (the service's configuration) and are kept in memory only.
"""

from __future__ import annotations

import threading

from app.chunkstore import Repository
from app.chunkstore.backends import open_repository_at
from app.contracts.agent import RepositoryAccess


def open_repository(access: RepositoryAccess) -> Repository:
    return open_repository_at(
        access.url,
        passphrase=access.passphrase,
        access_key=access.access_key_id,
        secret_key=access.secret_access_key,
    )


class RepositoryCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, Repository] = {}

    def get(self, access: RepositoryAccess) -> Repository:
        with self._lock:
            repo = self._open.get(access.url)
            if repo is None:
                repo = open_repository(access)
                self._open[access.url] = repo
            return repo
