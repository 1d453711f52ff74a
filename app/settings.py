"""Service configuration, read once from ``VMR_*`` environment variables.

Every setting has an embedded default so that ``vmrecovery serve`` starts in an empty
directory with nothing installed: the catalog is then a SQLite file under ``VMR_DATA_DIR``
and the secret key is generated into the same directory on first start.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, IPvAnyNetwork, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.pagination import DEFAULT_COUNT_LIMIT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VMR_", extra="ignore")

    data_dir: Path = Field(default=Path("./var"), description="Where embedded state lives.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL of the catalog; unset means SQLite under data_dir.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts vCenter credentials; generated into data_dir when unset.",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="Migrate the catalog on start; defaults to on for SQLite, off for PostgreSQL.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "info"
    inventory_sync_interval_s: float = Field(default=900.0, gt=0)
    inventory_loop_interval_s: float = Field(default=30.0, gt=0)
    vcenter_timeout_s: float = Field(default=30.0, gt=0)
    proxy_stale_after_s: float = Field(default=90.0, gt=0)
    proxy_offline_after_s: float = Field(default=300.0, gt=0)
    job_lease_s: float = Field(default=120.0, gt=5, description="How long a claim lasts without progress.")
    repository_path: Path | None = Field(
        default=None, description="The onsite backup repository; defaults to <data_dir>/repository."
    )
    repository_passphrase: SecretStr | None = Field(
        default=None, description="Encrypts the repository (AES-256-GCM) when set at its creation."
    )
    offsite_repository: str | None = Field(
        default=None,
        description="Where offsite copies go: a path or file:// URL, or "
        "s3://BUCKET/PREFIX?endpoint=URL&region=R. Unset: no offsite copies.",
    )
    offsite_passphrase: SecretStr | None = Field(
        default=None,
        description="The offsite repository's own passphrase (it shares the onsite keys, wrapped "
        "under this); required when the onsite repository is encrypted.",
    )
    offsite_access_key_id: SecretStr | None = Field(
        default=None, description="S3 access key of the offsite repository (else the standard AWS sources)."
    )
    offsite_secret_access_key: SecretStr | None = Field(default=None, description="Its secret key.")
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Private networks outbound webhooks may reach besides public addresses, as a JSON "
        "list of CIDRs ('[\"10.20.0.0/16\"]'): a ticketing system inside the provider's network.",
    )
    embedded_proxy: bool = Field(default=True, description="Run a proxy for all hosts inside serve.")
    proxy_workers: int = Field(default=2, ge=1, le=32, description="Jobs the embedded proxy runs at once.")
    limit_per_host: int = Field(default=2, ge=1, description="Backups running at once on one ESXi host.")
    limit_per_datastore: int = Field(
        default=2,
        ge=1,
        description="Backups running at once on one datastore (snapshots hurt production I/O).",
    )
    limit_global: int = Field(default=100, ge=1, description="Backups running at once in the whole service.")
    list_count_limit: int = Field(
        default=DEFAULT_COUNT_LIMIT,
        ge=1,
        description="Matches a list counts for its total before it stops (a page then says "
        "total_exact: false); callers may ask for the exact count with exact_total=true.",
    )
    guest_freeze_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="How long an application-aware backup waits for the guest agent to freeze its "
        "applications before it takes a crash-consistent snapshot instead.",
    )
    planner_interval_s: float = Field(default=30.0, gt=0, description="How often schedules are checked.")
    reaper_interval_s: float = Field(
        default=5.0, gt=0, description="How often lapsed leases and windows are checked."
    )
    retention_interval_s: float = Field(
        default=60.0, gt=0, description="How often VMs with new restore points are pruned (full pass daily)."
    )
    gc_interval_hours: float = Field(default=24.0, gt=0, description="How often the repository is GC'd.")
    gc_grace_hours: float = Field(
        default=24.0,
        ge=1,
        description=(
            "Unreferenced chunks younger than this survive GC; must exceed the longest backup by "
            "30 minutes (a proxy touches a chunk it found stored again only after 30 minutes)."
        ),
    )
    archive_retention_hours: float = Field(
        default=168.0,
        gt=0,
        description="How long the archive of a file restore stays downloadable (then its space is freed).",
    )
    run_loops: bool = Field(default=True, description="Run the background loops inside serve.")

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_repository_path(self) -> Path:
        return (self.repository_path or self.resolved_data_dir / "repository").expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'catalog.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.is_sqlite
