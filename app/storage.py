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


def ensure_offsite_repository(settings: Settings) -> None:
    """Create the offsite repository as a copy target of the onsite one (same keys, so chunks are
    copied as stored), or check that an existing one is; nothing when none is configured."""
    if settings.offsite_repository is None:
        return
    from app.chunkstore.backends import open_repository_at
    from app.retention.onsite import offsite_access

    access = offsite_access(settings)
    onsite_secret = (
        settings.repository_passphrase.get_secret_value() if settings.repository_passphrase else None
    )
    onsite = Repository.open(open_backend(settings.resolved_repository_path), passphrase=onsite_secret)
    try:
        offsite = open_repository_at(
            access.url,
            passphrase=access.passphrase,
            access_key=access.access_key_id,
            secret_key=access.secret_access_key,
        )
    except RepositoryNotFound:
        credentials = None
        if access.access_key_id and access.secret_access_key:
            from app.chunkstore.s3 import S3Credentials

            credentials = S3Credentials(access_key=access.access_key_id, secret_key=access.secret_access_key)
        backend = open_backend(access.url, credentials=credentials)
        try:
            Repository.create_copy_target(
                backend, onsite, source_passphrase=onsite_secret, passphrase=access.passphrase
            )
            log.info("created the offsite repository at %s", access.url)
        except RepositoryExists:
            pass  # another replica created it meanwhile
        return
    if not offsite.compatible_with(onsite):
        raise RepositoryError(
            f"the offsite repository at {access.url} was not made as a copy of this onsite repository "
            "(other keys): point VMR_OFFSITE_REPOSITORY at an empty location to create one"
        )
