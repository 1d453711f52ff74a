"""The control plane's handle on the onsite repository, for metadata work only.

Pruning removes manifests (and their index objects) and garbage collection stats and deletes
unreferenced chunks; neither reads chunk data. The repository is opened once, lazily (opening
an encrypted one derives keys with scrypt, deliberately slow), and every call runs in a thread
because the chunkstore is synchronous.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.chunkstore import ExportNotFound, GcReport, Repository, RestorePointNotFound, gc, open_backend
from app.settings import Settings


@dataclass(frozen=True)
class ManifestFacts:
    id: str
    created_at: datetime
    metadata: dict[str, Any]


class OnsiteRepository:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._repo: Repository | None = None
        self._lock = threading.Lock()

    def open_sync(self) -> Repository:
        """The repository (opened on first use); blocking, for code already in a thread."""
        return self._open()

    def _open(self) -> Repository:
        with self._lock:
            if self._repo is None:
                secret = self.settings.repository_passphrase
                self._repo = Repository.open(
                    open_backend(self.settings.resolved_repository_path),
                    passphrase=secret.get_secret_value() if secret else None,
                )
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
