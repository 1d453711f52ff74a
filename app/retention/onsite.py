"""The control plane's handles on the onsite and offsite repositories, for metadata work.

Pruning removes manifests (and their index objects) and garbage collection stats and deletes
unreferenced chunks; neither reads chunk data (file browsing, in app/browse, is the exception).
The repository is opened once, lazily (opening
an encrypted one derives keys with scrypt, deliberately slow), and every call runs in a thread
because the chunkstore is synchronous.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.chunkstore import (
    ExportNotFound,
    GcReport,
    Repository,
    RepositoryError,
    RestorePointNotFound,
    gc,
    open_backend,
)
from app.chunkstore.backends import open_repository_at
from app.contracts.agent import RepositoryAccess
from app.settings import Settings


@dataclass(frozen=True)
class ManifestFacts:
    id: str
    created_at: datetime
    metadata: dict[str, Any]


class OnsiteRepository:
    """The onsite repository (``OffsiteRepository``: the offsite one, same operations)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._repo: Repository | None = None
        self._lock = threading.Lock()

    def _open_repository(self) -> Repository:
        secret = self.settings.repository_passphrase
        return Repository.open(
            open_backend(self.settings.resolved_repository_path),
            passphrase=secret.get_secret_value() if secret else None,
        )

    def open_sync(self) -> Repository:
        """The repository (opened on first use); blocking, for code already in a thread."""
        return self._open()

    def _open(self) -> Repository:
        with self._lock:
            if self._repo is None:
                self._repo = self._open_repository()
            return self._repo

    async def open(self) -> Repository:
        """Open (once); raises the chunkstore's errors when the repository is unusable."""
        return await asyncio.to_thread(self._open)

    async def delete_restore_points(self, ids: list[str]) -> list[str]:
        """Remove these manifests; return those that existed (a missing one is already gone)."""

        def run() -> list[str]:
            repo = self._open()
            removed = []
            for restore_point_id in ids:
                try:
                    repo.delete_restore_point(restore_point_id)
                except RestorePointNotFound:
                    continue
                removed.append(restore_point_id)
            return removed

        return await asyncio.to_thread(run)

    async def list_restore_points(self) -> list[str]:
        return await asyncio.to_thread(lambda: self._open().list_restore_points())

    async def read_facts(self, ids: list[str]) -> list[ManifestFacts]:
        """Creation time and metadata of these manifests (those that vanished meanwhile are left out)."""

        def run() -> list[ManifestFacts]:
            repo = self._open()
            facts = []
            for restore_point_id in ids:
                try:
                    point = repo.read_restore_point(restore_point_id)
                except RestorePointNotFound:
                    continue
                facts.append(ManifestFacts(point.id, point.created_at, dict(point.metadata)))
            return facts

        return await asyncio.to_thread(run)

    async def delete_export(self, export_id: str) -> bool:
        """Remove a restore archive (its chunks go at the next GC); False when it was already gone."""

        def run() -> bool:
            try:
                self._open().delete_export(export_id)
            except ExportNotFound:
                return False
            return True

        return await asyncio.to_thread(run)

    async def gc(self, grace: timedelta, *, dry_run: bool = False) -> GcReport:
        # The cutoff is wall-clock time: it is compared with the backend's modification times.
        return await asyncio.to_thread(lambda: gc(self._open(), grace, dry_run=dry_run))


class OffsiteRepository(OnsiteRepository):
    """The offsite copy repository (``VMR_OFFSITE_REPOSITORY``), for pruning, GC and browsing."""

    def _open_repository(self) -> Repository:
        access = offsite_access(self.settings)
        return open_repository_at(
            access.url,
            passphrase=access.passphrase,
            access_key=access.access_key_id,
            secret_key=access.secret_access_key,
        )

    @property
    def configured(self) -> bool:
        return self.settings.offsite_repository is not None


def offsite_access(settings: Settings) -> RepositoryAccess:
    """What an agent (or the server) needs to open the offsite repository; requires it configured."""
    if settings.offsite_repository is None:
        raise RepositoryError("no offsite repository is configured (VMR_OFFSITE_REPOSITORY)")

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None

    location = settings.offsite_repository
    if "://" not in location:
        location = Path(location).expanduser().resolve().as_uri()
    return RepositoryAccess(
        url=location,
        passphrase=secret(settings.offsite_passphrase),
        access_key_id=secret(settings.offsite_access_key_id),
        secret_access_key=secret(settings.offsite_secret_access_key),
    )
