"""The service's backup repositories: where they are and creating them on first start.

The control plane never reads or writes backup data; it only makes sure the onsite repository
exists (so that two proxies starting at once do not both try to create it) and hands its
location to proxies with each job.
"""

from __future__ import annotations

import logging

from app.chunkstore import Repository, RepositoryError, RepositoryExists, RepositoryNotFound, open_backend
from app.settings import Settings

log = logging.getLogger(__name__)


def ensure_onsite_repository(settings: Settings) -> None:
    path = settings.resolved_repository_path
    passphrase = settings.repository_passphrase.get_secret_value() if settings.repository_passphrase else None
    backend = open_backend(path)
    try:
        repo = Repository.open(backend, passphrase=passphrase)
    except RepositoryNotFound:
        pass
    else:
        if passphrase is not None and not repo.encrypted:
            raise RepositoryError(
                f"the repository in {path} is not encrypted, but VMR_REPOSITORY_PASSPHRASE is set: a "
                "passphrase only encrypts a new repository. Unset it, or point VMR_REPOSITORY_PATH at a "
                "new location."
            )
        return
    path.mkdir(parents=True, exist_ok=True)
    try:
        Repository.create(backend, passphrase=passphrase)
        log.info("created the %s backup repository in %s", "encrypted" if passphrase else "unencrypted", path)
    except RepositoryExists:
        Repository.open(backend, passphrase=passphrase)
