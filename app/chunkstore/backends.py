"""The one place that turns a repository location into a ``Backend``.

Cross-cutting wrappers (retries, metrics) and new backends are added here, so callers never construct
backends themselves. Locations:

- ``/path`` or ``file:///path``: ``FsBackend``.
- ``s3://BUCKET/PREFIX?endpoint=URL&region=R``: ``S3Backend`` (see ``app.chunkstore.s3.parse_s3_location``
  for every parameter). Credentials are never part of a location, which ends up in configuration,
  catalogs and logs: they are passed as ``credentials=``, or come from the standard AWS sources (the
  environment variables ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the shared credentials file,
  instance roles).

The S3 backend (and boto3 with it) is imported only when an ``s3://`` location is opened, so processes
that only use filesystem repositories do not pay for it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from app.chunkstore.backend import Backend
from app.chunkstore.fs import FsBackend

if TYPE_CHECKING:
    from app.chunkstore.repository import Repository
    from app.chunkstore.s3 import S3Credentials


def open_backend(location: str | os.PathLike[str], *, credentials: S3Credentials | None = None) -> Backend:
    """``/path``, ``file:///path`` → ``FsBackend``; ``s3://bucket/prefix?...`` → ``S3Backend``.

    ``credentials`` (``app.chunkstore.s3.S3Credentials``) are for object stores only: the service hands
    them to an agent per job; without them an S3 backend uses the standard AWS credential sources.
    """
    text = os.fspath(location)
    if "://" not in text:
        _no_credentials(credentials, "a filesystem")
        return FsBackend(text)
    url = urlparse(text)
    if url.scheme == "file":
        _no_credentials(credentials, "a filesystem")
        return FsBackend(unquote(url.path))
    if url.scheme == "s3":
        from app.chunkstore.s3 import S3Backend

        return S3Backend.from_location(text, credentials=credentials)
    raise ValueError(f"unsupported repository location scheme {url.scheme!r}")


def _no_credentials(credentials: S3Credentials | None, kind: str) -> None:
    # Credentials handed to a location that cannot use them mean a mix-up in the caller's configuration.
    if credentials is not None:
        raise ValueError(f"credentials were given for {kind} repository location, which takes none")


def open_repository_at(
    location: str,
    *,
    passphrase: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Repository:
    """Open the repository at ``location`` with plain credentials (as configuration and jobs carry
    them); an access key pair is for object stores only."""
    from app.chunkstore.repository import Repository

    credentials = None
    if access_key and secret_key:
        from app.chunkstore.s3 import S3Credentials

        credentials = S3Credentials(access_key=access_key, secret_key=secret_key)
    return Repository.open(open_backend(location, credentials=credentials), passphrase=passphrase)
