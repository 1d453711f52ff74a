"""The one place that turns a repository location into a ``Backend``.

Cross-cutting wrappers (retries, metrics) and new backends (S3) are added here, so callers never
construct backends themselves.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from app.chunkstore.backend import Backend
from app.chunkstore.fs import FsBackend


def open_backend(location: str | os.PathLike[str]) -> Backend:
    """``/path``, ``file:///path`` → ``FsBackend``. Other schemes are not implemented yet."""
    text = os.fspath(location)
    if "://" not in text:
        return FsBackend(text)
    url = urlparse(text)
    if url.scheme == "file":
        return FsBackend(unquote(url.path))
    raise ValueError(f"unsupported repository location scheme {url.scheme!r}")
