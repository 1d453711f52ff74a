"""Everything the server's parts share, built once by the composition root."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.audit.writer import AuditWriter
from app.browse.service import FileBrowser
from app.clock import Clock
from app.contracts.agent import RepositoryAccess
from app.crypto import SecretBox
from app.inventory.sync import InventorySyncer
from app.proxies.liveness import ProxyLiveness
from app.retention.onsite import OffsiteRepository, OnsiteRepository, offsite_access
from app.settings import Settings
from app.vcenters.checks import VCenterChecker
from app.vcenters.gateway import VCenterGateway


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    clock: Clock
    box: SecretBox
    gateway: VCenterGateway

    @functools.cached_property
    def onsite(self) -> OnsiteRepository:
        """The onsite repository, opened once per process (scrypt) and shared."""
        return OnsiteRepository(self.settings)

    @functools.cached_property
    def offsite(self) -> OffsiteRepository:
        """The offsite copy repository (check ``configured``)."""
        return OffsiteRepository(self.settings)

    @property
    def offsite_access(self) -> RepositoryAccess | None:
        """What agents get to reach the offsite repository; None when none is configured."""
        return offsite_access(self.settings) if self.settings.offsite_repository else None

    @functools.cached_property
    def audit_writer(self) -> AuditWriter:
        """The process's audit rows go through one group-committing writer."""
        return AuditWriter(self.sessionmaker)

    @functools.cached_property
    def files(self) -> FileBrowser:
        """File-level browsing of image restore points (open disks cached per process)."""
        offsite = self.offsite.open_sync if self.offsite.configured else None
        return FileBrowser(self.onsite.open_sync, open_offsite=offsite)

    @property
    def liveness(self) -> ProxyLiveness:
        return ProxyLiveness(
            self.clock, self.settings.proxy_stale_after_s, self.settings.proxy_offline_after_s
        )

    @property
    def repository_access(self) -> RepositoryAccess:
        passphrase = self.settings.repository_passphrase
        return RepositoryAccess(
            url=self.settings.resolved_repository_path.as_uri(),
            passphrase=passphrase.get_secret_value() if passphrase else None,
        )

    @property
    def syncer(self) -> InventorySyncer:
        return InventorySyncer(
            self.sessionmaker, self.gateway, self.box, self.clock, self.settings.vcenter_timeout_s
        )

    @property
    def checker(self) -> VCenterChecker:
        return VCenterChecker(
            self.sessionmaker, self.gateway, self.box, self.clock, self.settings.vcenter_timeout_s
        )
